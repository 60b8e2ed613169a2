"""Fine-tune the shipped enhancer on your own folder of images or volumes, then enhance with the result.

The shipped bundle is copied to WORK_DIR first, so its weights are never touched. Training
starts from the shipped weights (``init_weights``), makes degraded/clean pairs on the fly
from your clean images, keeps the best validation model as ``WORK_DIR/bundle/models/model.pt``
and can be resumed (``--resume``) if it is interrupted.

    python examples/train_on_your_folder.py MY_IMAGES WORK_DIR [--iterations 2000] [--quick]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "bundle"
MONAI_DPE = str(Path(sys.executable).with_name("monai-dpe"))


def copy_bundle(work_dir: Path) -> Path:
    """A private copy of the bundle's configs, level prior and shipped weights to train in."""
    bundle = work_dir / "bundle"
    if not bundle.exists():
        shutil.copytree(SHIPPED / "configs", bundle / "configs")
        (bundle / "models").mkdir(parents=True)
        shutil.copy(SHIPPED / "models" / "level_prior.json", bundle / "models")  # read beside the weights
        shutil.copy(SHIPPED / "models" / "model.pt", work_dir / "shipped_model.pt")
    return bundle


def training_settings(init_weights: Path, iterations: int, quick: bool = False) -> list[str]:
    """The bundle overrides for ``iterations`` steps from ``init_weights``, validating at least once.

    Validation is what saves ``models/model.pt``, so a run shorter than one validation interval
    validates at its end instead of finishing without weights.
    """
    epoch_length = 2 if quick else 100
    epochs = max(1, -(-iterations // epoch_length))
    settings = [f"init_weights={init_weights}", f"epoch_length={epoch_length}", f"max_epochs={epochs}",
                f"state_interval={epoch_length}", f"val_interval={1 if quick else min(5, epochs)}"]
    return settings + (["patch_size=[64,64]", "num_workers=0"] if quick else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="your clean images and volumes (any MONAI-readable format)")
    parser.add_argument("work_dir", type=Path, help="where the bundle copy, weights, logs and enhanced images go")
    parser.add_argument("--iterations", type=int, default=2000,
                        help="training iterations, rounded up to whole epochs of 100 (validation, which saves the "
                        "best weights, every 500 and at least once)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in WORK_DIR")
    parser.add_argument("--quick", action="store_true", help="a few tiny iterations to check the set-up")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be at least 1, got {args.iterations}")

    bundle = copy_bundle(args.work_dir)
    settings = training_settings(args.work_dir / "shipped_model.pt", args.iterations, args.quick)
    train = [MONAI_DPE, "train", "--bundle", str(bundle), "--folder", str(args.folder), *(["--resume"] * args.resume),
             *settings]
    subprocess.run(train, check=True)

    enhance = [MONAI_DPE, "enhance", str(args.folder), "-o", str(args.work_dir / "enhanced"), "--bundle", str(bundle),
               "--overwrite", "--save-comparison"]
    subprocess.run(enhance, check=True)
    print(f"fine-tuned weights: {bundle / 'models' / 'model.pt'}; enhanced images: {args.work_dir / 'enhanced'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
