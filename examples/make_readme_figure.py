"""Draw the README's before/after figure from `make demo`'s outputs: degraded, DPE, clean, with PSNR.

    make demo && python examples/make_readme_figure.py      # writes docs/figures/demo.png
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from make_sample_data import clean_fundus, clean_mr, clean_xray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _unit(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) / 255.0


def _mr_unit(volume: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Middle slice scaled by the clean volume's range, so all three panels share one window."""
    low, high = np.percentile(reference, [0.5, 99.5])
    return np.clip((volume[:, :, volume.shape[2] // 2].astype(np.float64) - low) / (high - low), 0, 1)


def rows(data: Path, demo: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(title, degraded, enhanced, clean) in [0, 1] for each sample."""
    out = []
    for name, clean in (("xray_limb.png", clean_xray()), ("fundus_retina.png", clean_fundus())):
        clean = np.moveaxis(clean, 0, -1) if clean.ndim == 3 and clean.shape[0] in (1, 3) else clean
        clean = clean[..., 0] if clean.ndim == 3 and clean.shape[-1] == 1 else clean
        out.append((name, _unit(np.array(Image.open(data / name))), _unit(np.array(Image.open(demo / name))), clean))
    clean01, scale, _ = clean_mr()
    clean_units = clean01 * scale  # the samples are written in scanner units
    degraded = nib.load(data / "mr_head.nii.gz").get_fdata()
    enhanced = nib.load(demo / "mr_head.nii.gz").get_fdata()
    out.append(("mr_head.nii.gz (middle slice)", _mr_unit(degraded, clean_units), _mr_unit(enhanced, clean_units),
                _mr_unit(clean_units, clean_units)))
    return out


def main(data: Path = ROOT / "examples" / "data", demo: Path = ROOT / "demo_output",
         output: Path = ROOT / "docs" / "figures" / "demo.png") -> None:
    samples = rows(data, demo)
    fig, axes = plt.subplots(len(samples), 3, figsize=(10, 3.4 * len(samples)))
    for row, (title, degraded, enhanced, clean) in zip(axes, samples):
        for ax, image, label in zip(row, (degraded, enhanced, clean), ("input", "DPE (monai-dpe)", "clean")):
            psnr = "" if label == "clean" else f"  {peak_signal_noise_ratio(clean, image, data_range=1.0):.1f} dB"
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(f"{label}{psnr}", fontsize=9)
            ax.axis("off")
        row[0].set_ylabel(title)
        row[0].text(-0.05, 0.5, title, transform=row[0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=80)
    print(output)


if __name__ == "__main__":
    main()
