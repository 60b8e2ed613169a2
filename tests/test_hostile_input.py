"""Hostile input (issue 24): inputs that used to come out silently wrong, or stop the batch.

Each case runs ``monai-dpe enhance`` as a user does (the console script in a subprocess, the tiny
bundle) on files built here with pydicom, nibabel or numpy, and reads the exit code, the lines,
the summary and what was written.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage, generate_uid

from helpers import MONAI_DPE, file_hashes, run_cli

# pydicom's own non-image objects, and the SOP class name each must be skipped with
NON_IMAGE_FILES = {
    "rtdose.dcm": "RT Dose Storage",
    "rtplan.dcm": "RT Plan Storage",
    "rtstruct.dcm": "RT Structure Set Storage",  # stored without the 128-byte preamble
    "liver_1frame.dcm": "Segmentation Storage",
    "reportsi.dcm": "Basic Text SR Storage",
}


def _relabelled(template: str, sop_class: str) -> pydicom.Dataset:
    """A readable image whose SOP class says it is something else: enhanced if the class were ignored."""
    ds = pydicom.dcmread(get_testdata_file(template))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    return ds


def _key_object() -> pydicom.Dataset:
    """A minimal Key Object Selection document: no pixels at all."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = KeyObjectSelectionDocumentStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "KO"
    return ds


@pytest.fixture(scope="module")
def non_image_run(tiny_bundle, tmp_path_factory):
    """A folder of non-image DICOM objects beside one MR image: (root, process, summary, hashes before)."""
    root = tmp_path_factory.mktemp("non_image")
    src = root / "in"
    src.mkdir()
    for name in NON_IMAGE_FILES:
        shutil.copy(get_testdata_file(name), src / name)
    # an MR image relabelled as a segmentation and as a presentation state: pixels a reader would take
    seg = _relabelled("MR_small.dcm", "1.2.840.10008.5.1.4.1.1.66.4")
    seg.save_as(src / "seg_pixels.dcm", enforce_file_format=True)
    _relabelled("MR_small.dcm", "1.2.840.10008.5.1.4.1.1.11.1").save_as(src / "pr.dcm", enforce_file_format=True)
    _key_object().save_as(src / "ko.dcm", enforce_file_format=True)
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "mr.dcm")
    before = file_hashes(src)
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--summary", "summary.json",
                   cwd=root)
    return root, proc, json.loads((root / "summary.json").read_text()), before


NON_IMAGE_CLASSES = {**NON_IMAGE_FILES, "seg_pixels.dcm": "Segmentation Storage",
                     "pr.dcm": "Grayscale Softcopy Presentation State Storage",
                     "ko.dcm": "Key Object Selection Document Storage"}


def test_non_image_dicom_is_skipped_not_failed(non_image_run):
    root, proc, summary, before = non_image_run
    assert proc.returncode == 0, proc.stderr
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, len(NON_IMAGE_CLASSES), 0)
    assert sorted(p.name for p in (root / "out").iterdir()) == ["mr.nii.gz"]  # no mask or dose written as a picture
    assert f"enhanced 1 file(s), {len(NON_IMAGE_CLASSES)} skipped (not images), 0 failed" in proc.stdout
    assert file_hashes(root / "in") == before


@pytest.mark.parametrize("name, sop_class", sorted(NON_IMAGE_CLASSES.items()))
def test_each_non_image_object_has_one_line_naming_its_sop_class(non_image_run, name, sop_class):
    _, proc, summary, _ = non_image_run
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"monai-dpe: in/{name}: ")]
    assert len(lines) == 1, proc.stderr
    assert f"SOP class {sop_class} (" in lines[0] and "not image storage" in lines[0]
    assert [n["input"] for n in summary["not_images"]].count(f"in/{name}") == 1


def test_a_non_image_object_in_a_series_folder_does_not_become_a_slice(tiny_bundle, tmp_path):
    """An RT Dose sharing a folder with image slices is skipped by name; the slices all come out."""
    folder = tmp_path / "in" / "study"
    folder.mkdir(parents=True)
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for i in range(2):
        ds = copy.deepcopy(mr)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"slice{i}.dcm", enforce_file_format=True)
    dose = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    dose.SeriesInstanceUID = mr.SeriesInstanceUID  # the same series: it must still not be stacked in
    dose.save_as(folder / "dose.dcm")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--summary", "s.json",
                   cwd=tmp_path)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert proc.returncode == 0, proc.stderr
    assert [n["input"] for n in summary["not_images"]] == ["in/study/dose.dcm"]
    assert summary["done"] == 2 and not (tmp_path / "out" / "study" / "dose.nii.gz").exists()


FLT_MAX = float(np.finfo(np.float32).max)
FILLS = {"minus_99999": -99999.0, "plus_flt_max": FLT_MAX, "minus_flt_max": -FLT_MAX}
TISSUE = (slice(8, 24), slice(8, 24), slice(2, 6))  # 16 x 16 x 4 of 32 x 32 x 8: 87.5% of the voxels are fill


@pytest.fixture(scope="module")
def fill_run(tiny_bundle, tmp_path_factory):
    """Float NIfTI volumes with no-data backgrounds, and one spanning float32's range: (root, process)."""
    root = tmp_path_factory.mktemp("fill")
    (root / "in").mkdir()
    rng = np.random.default_rng(3)
    tissue = (100 + 500 * rng.random((16, 16, 4))).astype(np.float32)
    for name, fill in FILLS.items():
        volume = np.full((32, 32, 8), fill, np.float32)
        volume[TISSUE] = tissue
        nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "in" / f"{name}.nii.gz")
    span = rng.uniform(-3e38, 3e38, (32, 32, 8)).astype(np.float32)  # finite, but its range is not
    nib.save(nib.Nifti1Image(span, np.eye(4)), root / "in" / "span.nii.gz")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", cwd=root)
    return root, proc


@pytest.mark.parametrize("name", sorted(FILLS))
def test_fill_values_are_kept_and_tissue_is_not_scrambled(fill_run, name):
    root, proc = fill_run
    source = np.asarray(nib.load(root / "in" / f"{name}.nii.gz").dataobj)
    out = np.asarray(nib.load(root / "out" / f"{name}.nii.gz").dataobj)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    background = np.ones(source.shape, bool)
    background[TISSUE] = False
    assert (out[background] == source[background]).all()  # the no-data value, exactly as it was
    tissue_in, tissue_out = source[TISSUE].ravel(), out[TISSUE].ravel()
    assert np.corrcoef(tissue_in, tissue_out)[0, 1] > 0.95  # was 0.14 (-99999) and below 0.01 (±FLT_MAX)
    assert 0 < tissue_out.min() and tissue_out.max() < 1000  # was 1879..8391, and ~1e37 with 7,168 inf voxels


def test_values_beyond_float32s_reach_are_refused_in_one_line(fill_run):
    root, proc = fill_run
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("monai-dpe: in/span.nii.gz: values from "), proc.stderr
    assert "beyond what float32 can carry" in lines[0]
    assert not (root / "out" / "span.nii.gz").exists()  # it was written with 3,552 inf voxels


@pytest.mark.parametrize("background, detached", [(0.0, False), (-1000.0, False), (-99999.0, True)])
def test_only_a_detached_extreme_is_a_fill_value(background, detached):
    """A zero or air background beside tissue 100..600 is data; -99999 is a marker."""
    from monai_dpe.transforms.fill import fill_values

    volume = torch.full((1, 32, 32, 8), background)
    volume[(0, *TISSUE)] = 100 + 500 * torch.rand(16, 16, 4)
    assert fill_values(volume) == ((background if detached else None), None)


@pytest.fixture(scope="module")
def channel_run(tiny_bundle, tmp_path_factory):
    """Two- and four-component images with and without alpha: (root, process, summary)."""
    root = tmp_path_factory.mktemp("channels")
    src = root / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    vector = nib.Nifti1Image(rng.random((24, 20, 6, 1, 2)).astype(np.float32), np.eye(4))
    vector.header.set_intent("vector")
    nib.save(vector, src / "vector2.nii.gz")  # two measurements a voxel, e.g. a 2D displacement field
    sitk.WriteImage(sitk.GetImageFromArray(rng.random((20, 24, 4)).astype(np.float32), isVector=True),
                    str(src / "vector4.mha"))
    packed = np.zeros((24, 20, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    for channel in "RGBA":
        packed[channel] = rng.integers(0, 256, packed.shape)
    nib.save(nib.Nifti1Image(packed, np.eye(4)), src / "rgba32.nii.gz")
    Image.fromarray(rng.integers(0, 256, (20, 24, 2), dtype=np.uint8), mode="LA").save(src / "grey_alpha.png")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--summary", "s.json", cwd=root)
    return root, proc, json.loads((root / "s.json").read_text())


@pytest.mark.parametrize("name, components", [("vector2.nii.gz", 2), ("vector4.mha", 4)])
def test_components_that_are_not_alpha_are_refused_in_one_line(channel_run, name, components):
    root, proc, summary = channel_run
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"monai-dpe: in/{name}: ")]
    assert len(lines) == 1, proc.stderr
    assert f"{components}-component image that is neither grey + alpha nor RGBA" in lines[0]
    assert not (root / "out" / name).exists()  # before: channel 0 enhanced, channel 1 passed through as alpha


def test_alpha_of_photos_and_packed_rgba_still_passes_through(channel_run):
    root, proc, summary = channel_run
    assert proc.returncode == 1 and (summary["done"], summary["failed"]) == (2, 2), proc.stderr
    source = np.asarray(nib.load(root / "in" / "rgba32.nii.gz").dataobj)
    out = np.asarray(nib.load(root / "out" / "rgba32.nii.gz").dataobj)
    assert out.shape == (24, 20, 6, 1, 4) and (out[:, :, :, 0, 3] == source["A"]).all()
    alpha = np.asarray(Image.open(root / "out" / "grey_alpha.png"))[..., 1]
    assert (alpha == np.asarray(Image.open(root / "in" / "grey_alpha.png"))[..., 1]).all()


ODD = {  # name -> what its one line must say
    "loop.png": "cannot be opened: too many levels of symbolic links",
    "dangling.png": "cannot be opened: no such file or directory",
    "fifo.png": "not a regular file (a FIFO)",
    "sock.png": "not a regular file (a socket)",
    "bad\\xff.mha": "file name is not valid UTF-8",
    "bad\\xff.nrrd": "file name is not valid UTF-8",
}


@pytest.fixture(scope="module")
def odd_run(tiny_bundle, tmp_path_factory):
    """Files that are no files (a link loop, a FIFO, a socket, a dangling link) or whose names ITK would
    abort on, beside good images; a stale summary waits to be replaced: (root, process, summary)."""
    root = tmp_path_factory.mktemp("odd")
    src = root / "in"
    src.mkdir()
    rng = np.random.default_rng(8)
    for name in ("good.png", "later.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(src / name)
    (src / "loop.png").symlink_to("loop.png")
    (src / "dangling.png").symlink_to("nowhere.png")
    os.mkfifo(src / "fifo.png")  # opening it for reading would wait for a writer for ever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.png"))
    for suffix in (".mha", ".nrrd"):  # a name that is not UTF-8: ITK's C++ layer aborted the process (exit 134)
        image = sitk.GetImageFromArray(rng.integers(0, 1000, (20, 30)).astype(np.int16))
        sitk.WriteImage(image, str(root / f"t{suffix}"))
        os.rename(root / f"t{suffix}", os.fsencode(src) + b"/bad\xff" + suffix.encode())
    (root / "summary.json").write_text('{"stale": true}')
    proc = subprocess.run([MONAI_DPE, "enhance", "in", "in/loop.png", "-o", "out", "--bundle", str(tiny_bundle),
                           "--no-progress", "--summary", "summary.json"], capture_output=True, text=True,
                          timeout=180, cwd=root)  # a hang on the FIFO fails here, not after pytest's limit
    sock.close()
    return root, proc, json.loads((root / "summary.json").read_text())


def test_odd_files_fail_alone_and_the_rest_completes(odd_run):
    root, proc, summary = odd_run
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (root / "out").rglob("*.png")) == ["good.png", "later.png"]
    assert summary["done"] == 2 and "stale" not in summary
    assert sorted({f["input"] for f in summary["failures"]}) == sorted(f"in/{name}" for name in ODD)


@pytest.mark.parametrize("name, reason", sorted(ODD.items()))
def test_each_odd_file_has_one_line_with_its_reason(odd_run, name, reason):
    lines = [line for line in odd_run[1].stderr.splitlines() if line.startswith(f"monai-dpe: in/{name}: ")]
    assert lines and all(reason in line for line in lines), odd_run[1].stderr


def test_ctrl_c_leaves_this_runs_summary(tiny_bundle, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(9)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (128, 128), dtype=np.uint8)).save(src / f"{i:02d}.png")
    (tmp_path / "summary.json").write_text('{"stale": true}')
    # Ctrl-C as a terminal delivers it: a test run started in the background inherits SIGINT ignored
    run = subprocess.Popen([MONAI_DPE, "enhance", "in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress",
                            "--summary", "summary.json"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((tmp_path / "out").glob("*.png"))) < 2:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    summary = json.loads((tmp_path / "summary.json").read_text())
    written = sorted(str(p) for p in (tmp_path / "out").glob("*.png"))
    assert run.returncode == 130 and "interrupted" in err, err
    assert summary["stopped"] == "interrupted (Ctrl-C)" and "stale" not in summary
    assert 2 <= len(written) < 40 and set(summary["outputs"]) <= set(written)
    assert len(written) - summary["done"] <= 1  # at most the file renamed into place as Ctrl-C came


def test_a_run_stopped_before_its_first_file_replaces_a_stale_summary(tiny_bundle, tmp_path):
    Image.fromarray(np.random.default_rng(10).integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "summary.json").write_text('{"stale": true}')
    proc = run_cli("a.png", "-o", "out", "--bundle", str(tiny_bundle), "--weights", str(tmp_path / "missing.pt"),
                   "--summary", "summary.json", cwd=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert summary["done"] == 0 and summary["stopped"].startswith("error: ") and "missing.pt" in summary["stopped"]


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in: a read-only one for a user, sysfs for root (whom modes do not stop)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir(mode=0o555)
        return folder
    return Path("/sys/kernel")


@pytest.mark.parametrize("target", ["output", "missing_output", "summary"])
def test_an_unwritable_output_or_summary_fails_at_once(tiny_bundle, tmp_path, target):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(11)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(src / f"{i:02d}.png")
    locked = _unwritable_folder(tmp_path)
    out = {"output": locked, "missing_output": locked / "enhanced"}.get(target, tmp_path / "out")
    summary = locked / "summary.json" if target == "summary" else tmp_path / "summary.json"
    start = time.monotonic()
    proc = run_cli("in", "-o", str(out), "--bundle", str(tiny_bundle), "--no-progress", "--summary", str(summary),
                   cwd=tmp_path)
    elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    what = f"--summary {summary}" if target == "summary" else f"output folder {out}"
    assert lines[0].startswith(f"monai-dpe: error: {what} is not writable")
    assert "enhanced" not in proc.stdout and not (tmp_path / "out").exists()
    assert elapsed < 15, elapsed  # before: 24 identical [Errno 30] lines after every file was computed (13.7 s)


def test_dicom_beside_a_nifti_of_the_same_name_is_named_apart(tiny_bundle, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), src / "scan.dcm")
    volume = (np.random.default_rng(12).random((20, 22, 4)) * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), src / "scan.nii.gz")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # before: exit 1, "also the output of in/scan.dcm (same name)"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan.dcm.nii.gz", "scan.nii.gz"]
    assert nib.load(tmp_path / "out" / "scan.nii.gz").shape == volume.shape  # the NIfTI keeps its own name
    assert nib.load(tmp_path / "out" / "scan.dcm.nii.gz").shape[:2] == (64, 64)  # MR_small's slice


@pytest.mark.parametrize("inputs", [("in/a.png", "in/a.png"), ("in", "in/a.png"), ("in/a.png", "other/link.png")])
def test_a_file_passed_twice_is_processed_once(tiny_bundle, tmp_path, inputs):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.random.default_rng(13).integers(0, 256, (32, 32), dtype=np.uint8)).save(src / "a.png")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "link.png").symlink_to(src / "a.png")  # the same file by another name
    proc = run_cli(*inputs, "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--summary", "s.json",
                   cwd=tmp_path)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert proc.returncode == 0, proc.stderr  # before: exit 1 for the second copy
    assert (summary["done"], summary["failed"]) == (1, 0)
    assert [p.name for p in (tmp_path / "out").rglob("*.png")] == ["a.png"]


def test_library_chatter_shows_only_with_verbose(tiny_bundle, tmp_path):
    """GDCM prints "Unsupported JPEG data precision 12" for 12-bit JPEG DICOM straight to stderr."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(get_testdata_file("JPGExtended.dcm"), src / "jpeg12.dcm")
    quiet = run_cli("in", "-o", "quiet", "--bundle", str(tiny_bundle), "--no-progress", cwd=tmp_path)
    verbose = run_cli("in", "-o", "verbose", "--bundle", str(tiny_bundle), "--no-progress", "--verbose", cwd=tmp_path)
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # before: six "Unsupported JPEG data precision 12" lines
    chatter = [line for line in verbose.stderr.splitlines() if "Unsupported JPEG data precision 12" in line]
    assert chatter and all(line.startswith("monai_dpe.native: in/jpeg12.dcm: ") for line in chatter), verbose.stderr
