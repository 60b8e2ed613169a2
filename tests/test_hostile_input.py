"""Hostile input (issue 24): inputs that used to come out silently wrong, or stop the batch.

Each case runs ``monai-dpe enhance`` as a user does (the console script in a subprocess, the tiny
bundle) on files built here with pydicom, nibabel or numpy, and reads the exit code, the lines,
the summary and what was written.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage, generate_uid

from test_cli import SUMMARY, run_cli, tiny_bundle  # noqa: F401  (tiny_bundle is a fixture)
from test_inference_bundle import file_hashes

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
    _relabelled("MR_small.dcm", "1.2.840.10008.5.1.4.1.1.66.4").save_as(src / "seg_pixels.dcm", enforce_file_format=True)
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
