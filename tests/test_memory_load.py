"""Load: the enhance path holds memory flat over a 1,000-file run (resident set growth under 50 MB)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from ignite.engine import Events
from monai.bundle import ConfigParser
from PIL import Image

from helpers import AFFINE, BUNDLE, TINY_CHANNELS, smooth, tiny_weights

pytestmark = pytest.mark.slow

N_FILES = 1000
WARM_UP = 100  # allocator pools, caches and lazy imports settle over the first files
LIMIT_MB = 50.0


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_files(root: Path) -> None:
    """1,000 small inputs: grey and RGB PNGs and int16 NIfTI volumes, in ten folders."""
    rng = np.random.default_rng(0)
    base_grey, base_rgb = smooth((40, 48), rng), np.stack([smooth((36, 36), rng) for _ in range(3)], -1)
    base_volume = (smooth((24, 24, 3), rng) * 800).astype(np.int16)
    for i in range(N_FILES):
        folder = root / f"part{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        shift = int(rng.integers(0, 40))
        if i % 10 == 9:
            nib.save(nib.Nifti1Image(base_volume + shift, AFFINE), folder / f"vol{i:04d}.nii.gz")
        elif i % 2:
            Image.fromarray((np.roll(base_rgb, shift, 0) * 255).astype(np.uint8)).save(folder / f"rgb{i:04d}.png")
        else:
            Image.fromarray((np.roll(base_grey, shift, 1) * 230).astype(np.uint8)).save(folder / f"grey{i:04d}.png")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc")
def test_rss_stays_flat_over_1000_files(tmp_path):
    write_files(tmp_path / "in")
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({
        "bundle_root": str(BUNDLE), "dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out"),
        "weights_path": str(tiny_weights(tmp_path / "tiny.pt")), "channels": list(TINY_CHANNELS), "progress": False,
        "summary_path": str(tmp_path / "summary.json"),
    })
    parser.get_parsed_content("initialize")
    evaluator = parser.get_parsed_content("evaluator")
    samples: dict[int, float] = {}
    evaluator.add_event_handler(Events.ITERATION_COMPLETED(every=50), lambda e: samples.update({e.state.iteration: rss_mb()}))
    evaluator.run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (N_FILES, 0)
    growth = samples[N_FILES] - samples[WARM_UP]
    print(f"RSS at file {WARM_UP}: {samples[WARM_UP]:.1f} MB, at file {N_FILES}: {samples[N_FILES]:.1f} MB")  # -s shows it
    assert growth < LIMIT_MB, f"RSS grew {growth:.1f} MB from file {WARM_UP} to {N_FILES}: {samples}"
