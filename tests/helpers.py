"""Shared test helpers: paths, tiny networks and weights, small real-looking inputs, and the commands
users run. Fixtures built on them live in conftest.py; test modules import nothing from each other."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from skimage import data as skdata, transform

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"
PYTHON = sys.executable
MONAI_DPE = str(Path(sys.executable).with_name("monai-dpe"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TINY_CHANNELS = (8, 16)
AFFINE = np.array([[0.8, 0.0, 0.0, -10.0], [0.0, 0.9, 0.0, 5.0], [0.0, 0.0, 2.5, 3.0], [0.0, 0.0, 0.0, 1.0]])
SUMMARY = re.compile(r"^enhanced (\d+) file\(s\), (\d+) failed in [\d.]+ s -> (.+)$", re.MULTILINE)


# ------------------------------------------------------------------------------------------- networks
def shipped_network(**overrides) -> torch.nn.Module:
    """The bundle's ``network_def`` (inference.json), as the bundle builds it, with config ``overrides`` (``channels``)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    for key, value in overrides.items():
        parser[key] = list(value) if isinstance(value, tuple) else value
    return parser.get_parsed_content("network_def")


def tiny_weights(path: Path, channels=TINY_CHANNELS) -> Path:
    """A random-init state dict of the bundle's network at ``channels``: results must not depend on training."""
    torch.manual_seed(0)
    torch.save(shipped_network(channels=channels).state_dict(), path)
    return path


# --------------------------------------------------------------------------------------------- inputs
def smooth(shape, rng: np.random.Generator) -> np.ndarray:
    """A ramp plus noise in [0, 1]: structure for the network, never constant."""
    ramp = np.indices(shape).sum(0).astype(np.float64)
    return (ramp / ramp.max() * 0.8 + 0.2 * rng.random(shape)).clip(0, 1)


def write_dicom_series(folder: Path, n_slices: int = 4) -> Path:
    """A CT series of ``n_slices`` slices made from pydicom's CT_small, 2.5 mm apart, one SeriesInstanceUID."""
    folder.mkdir(parents=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid, base = generate_uid(), template.pixel_array.astype(np.int16)
    x0, y0, z0 = (float(v) for v in template.ImagePositionPatient)
    for i in range(n_slices):
        ds = copy.deepcopy(template)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber, ds.SliceThickness = i + 1, 2.5
        ds.ImagePositionPatient = [x0, y0, z0 + 2.5 * i]
        ds.SliceLocation = z0 + 2.5 * i
        ds.PixelData = np.roll(base, 3 * i, axis=1).tobytes()
        ds.save_as(folder / f"slice_{i:03d}.dcm", enforce_file_format=True)
    return folder


def reference_wiener(noisy: np.ndarray, pilot: np.ndarray, sigma: float, block: int = 8, stride: int = 2) -> np.ndarray:
    """Sliding-DCT Wiener filtering written patch by patch with scipy, to check ``dct_wiener`` against.

    Every ``block`` patch of the reflect-padded ``(C, H, W)`` images at every ``stride``-th position:
    DCT of both, the noisy coefficients scaled by ``pilot^2 / (pilot^2 + sigma^2)`` (the mean kept),
    inverse DCT, and a weighted mean of the patches over each pixel, weights ``1 / sum(gains^2)``.
    """
    from scipy.fft import dctn, idctn

    pad = block - 1
    widths = ((0, 0), (pad, pad), (pad, pad))
    noisy_p, pilot_p = np.pad(noisy, widths, mode="reflect"), np.pad(pilot, widths, mode="reflect")
    total, weights = np.zeros(noisy_p.shape), np.zeros(noisy_p.shape)
    for c in range(noisy.shape[0]):
        for top in range(0, noisy_p.shape[1] - block + 1, stride):
            for left in range(0, noisy_p.shape[2] - block + 1, stride):
                window = (c, slice(top, top + block), slice(left, left + block))
                coefficients, guide = dctn(noisy_p[window], norm="ortho"), dctn(pilot_p[window], norm="ortho")
                gain = guide ** 2 / (guide ** 2 + sigma ** 2)
                gain[0, 0] = 1.0
                weight = 1.0 / np.sum(gain ** 2)
                total[window] += weight * idctn(gain * coefficients, norm="ortho")
                weights[window] += weight
    with np.errstate(invalid="ignore"):  # padding that no patch reaches (cut off) is 0 / 0
        return (total / weights)[:, pad:-pad, pad:-pad]


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ------------------------------------------------------------------------------------------- commands
def bundle_command(dataset_dir: Path, output_dir: Path, weights: Path, *extra: str) -> list[str]:
    """``python -m monai.bundle run`` of the shipped inference.json at the tiny widths."""
    return [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(BUNDLE / "configs" / "inference.json"),
        "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
        "--logging_file", str(BUNDLE / "configs" / "logging.conf"),
        "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir),
        "--weights_path", str(weights), "--channels", str(list(TINY_CHANNELS)), "--progress", "False", *extra,
    ]


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``monai-dpe enhance ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([MONAI_DPE, "enhance", *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, **(env or {})})


def run_in_own_group(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    """Run cmd in a new process group so a hung run's workers can be killed with it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


# ------------------------------------------------------------------------------------------- training
TINY = {
    "channels": [8, 16],
    "disc_channels": [8, 8, 16, 16],
    "patch_size": [32, 32],
    "epoch_length": 2,
    "max_epochs": 1,
    "val_interval": 1,
    "state_interval": 1,
    "num_workers": 0,
    "images_per_batch": 1,
    "patches_per_image": 2,
}
TRAIN_ITEMS = [("ct_small.nii.gz", "ct", 1), ("cell.png", "microscopy", 1)]
VAL_ITEMS = [("mr_small.nii.gz", "mr", 1), ("astronaut.png", "histology", 3)]


def datalist_item(name: str, modality: str, channels: int) -> dict:
    return {"image": name, "modality": modality, "source": name.split(".")[0], "channels": channels, "spatial_dims": 2}


def write_tiny_data(folder: Path) -> Path:
    """Two training and two validation images (CT, microscopy; MR, RGB photo) and their datalist."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("CT_small", "MR_small"):
        arr = pydicom.dcmread(get_testdata_file(f"{name}.dcm")).pixel_array.astype(np.int16).T
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(folder / f"{name.lower()}.nii.gz"))
    cell = transform.resize(skdata.cell(), (60, 72), anti_aliasing=True)
    Image.fromarray((cell * 255).astype(np.uint8)).save(folder / "cell.png")
    astronaut = transform.resize(skdata.astronaut(), (64, 64), anti_aliasing=True)
    Image.fromarray((astronaut * 255).astype(np.uint8)).save(folder / "astronaut.png")
    datalist = {"training": [datalist_item(*i) for i in TRAIN_ITEMS], "validation": [datalist_item(*i) for i in VAL_ITEMS]}
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return folder


def bundle_run(bundle: Path, data: Path, *extra: str) -> list[str]:
    """The documented training command line, with tiny settings."""
    configs = bundle / "configs"
    cmd = [PYTHON, "-m", "monai.bundle", "run", "--config_file", str(configs / "train.json"),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(bundle), "--dataset_dir", str(data), "--datalist", str(data / "datalist.json")]
    for key, value in TINY.items():
        cmd += [f"--{key}", json.dumps(value)]
    return cmd + list(extra)


def state_path(bundle: Path) -> Path:
    return bundle / "models" / "training_state.pt"


def failing_replace(monkeypatch, name_end: str) -> None:
    """Make ``os.replace`` fail onto any file whose name ends with ``name_end`` (a full disk, an immutable file)."""
    import os

    real_replace = os.replace

    def replace(source, target):
        if str(target).endswith(name_end):
            raise PermissionError(1, "Operation not permitted", str(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
