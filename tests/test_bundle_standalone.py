"""The bundle stands on its own: ``python -m monai.bundle run`` from inside the bundle folder with its
defaults enhances the bundle's small sample, and with no data says in one line what to pass."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"


def bundle_run(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file configs/inference.json`` in ``bundle``, as the model card says."""
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", *args],
                          cwd=bundle, capture_output=True, text=True, timeout=600)


def test_sample_data_is_small_and_real():
    files = sorted(p.name for p in (BUNDLE / "sample_data").iterdir())
    assert files == ["mr_head.nii.gz", "xray_limb.png"]
    assert sum(p.stat().st_size for p in (BUNDLE / "sample_data").iterdir()) < 300_000
    with Image.open(BUNDLE / "sample_data" / "xray_limb.png") as img:
        assert img.size == (256, 256) and img.mode == "L"
    assert nib.load(BUNDLE / "sample_data" / "mr_head.nii.gz").shape == (64, 64, 10)


def test_bundle_runs_from_its_own_folder_with_its_defaults(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("eval", "runs", "baselines", "__pycache__"))
    run = bundle_run(bundle)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (bundle / "eval").iterdir()) == ["mr_head.nii.gz", "xray_limb.png"]
    source, output = nib.load(bundle / "sample_data" / "mr_head.nii.gz"), nib.load(bundle / "eval" / "mr_head.nii.gz")
    assert output.shape == source.shape and np.allclose(output.affine, source.affine)
    assert output.get_data_dtype() == source.get_data_dtype()
    with Image.open(bundle / "eval" / "xray_limb.png") as img:
        assert img.size == (256, 256)


def test_bundle_run_without_data_says_what_to_pass_in_one_line(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", bundle / "configs")
    (bundle / "empty").mkdir()
    for args, reason in (((), "./sample_data: no such folder or file"), (("--dataset_dir", "empty"), "no images in empty")):
        run = bundle_run(bundle, *args)
        assert run.returncode == 1
        last = run.stderr.strip().splitlines()[-1]
        assert last == (f"{reason}; pass --dataset_dir IN (a folder of images, or a list of image files) "
                        "and --output_dir OUT (defaults: sample_data/ and eval/ in the bundle folder)"), run.stderr[-2000:]
        assert "Traceback" not in run.stderr
        assert not (bundle / "eval").exists()
