"""Use monai-dpe's degradations to make (degraded, clean) pairs for any MONAI training pipeline.

Shows the array transform on one image and the dictionary transform inside a MONAI
``Compose`` + ``Dataset``, and prints what each draw did (the parameters are recorded).

    python examples/degrade_for_training.py
"""
from __future__ import annotations

import numpy as np
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, ScaleIntensityd
from skimage import data as skdata

from monai_dpe.transforms import RandPerceptualDegradation, RandPerceptualDegradationd


def main() -> None:
    clean = skdata.cell().astype(np.float32)[None] / 255.0  # (1, H, W) in [0, 1]

    degrade = RandPerceptualDegradation(preset="paper")
    degrade.set_random_state(0)
    dark = degrade(clean)
    print("array transform:", degrade.last_params, f"mean {clean.mean():.3f} -> {dark.mean():.3f}")

    pipeline = Compose(
        [
            EnsureChannelFirstd("image", channel_dim="no_channel"),
            ScaleIntensityd("image"),
            RandPerceptualDegradationd("image", target_keys="target", preset="mixed", params_key="degradation"),
        ]
    )
    pipeline.set_random_state(1)
    images = [{"image": skdata.camera().astype(np.float32)}, {"image": skdata.moon().astype(np.float32)}]
    for batch in DataLoader(Dataset(images, pipeline), batch_size=1):
        print("dictionary transform:", batch["degradation"]["family"], tuple(batch["image"].shape), tuple(batch["target"].shape))


if __name__ == "__main__":
    main()
