"""Batch runs under faults: corrupt files in a big folder, ``--resume``, summaries, and SIGKILL at random moments.

The console script runs in subprocesses on real files with a tiny random-init copy of the
bundle (see ``test_cli.tiny_bundle``); results do not depend on training.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai_dpe.files import PARTIAL_MARK
from helpers import AFFINE, MONAI_DPE, file_hashes, smooth

pytestmark = pytest.mark.slow


def write_mixed_folder(root: Path, n_files: int, corrupt_every: int | None, rng: np.random.Generator) -> set[str]:
    """``n_files`` small images and volumes in sub-folders; every ``corrupt_every``-th is broken. Returns the bad names."""
    bad = set()
    for i in range(n_files):
        folder = root / f"batch{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        kind = i % 4
        name = folder / (f"img{i:04d}" + (".nii.gz" if kind == 3 else ".tif" if kind == 2 else ".png"))
        if corrupt_every and i % corrupt_every == corrupt_every - 1:
            damage = i // corrupt_every % 3
            payload = b"" if damage == 0 else rng.bytes(200) if damage == 1 else b"\x89PNG\r\n\x1a\n" + rng.bytes(40)
            name.write_bytes(payload)
            bad.add(str(name.relative_to(root)))
        elif kind == 3:
            nib.save(nib.Nifti1Image((smooth((24, 20, 4), rng) * 900).astype(np.int16), AFFINE), name)
        elif kind == 1:
            Image.fromarray((np.stack([smooth((28, 30), rng) for _ in range(3)], -1) * 255).astype(np.uint8)).save(name)
        else:
            Image.fromarray((smooth((26, 34), rng) * 200).astype(np.uint8)).save(name)
    return bad


def enhance(root: Path, *args: str, bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MONAI_DPE, "enhance", "in", "-o", "out", "--bundle", str(bundle), "--no-progress", *args],
                          capture_output=True, text=True, timeout=1200, cwd=root)


def decoded(path: Path) -> tuple:
    """What a reader sees in an output: voxel data and geometry (gzip headers carry a time stamp, so not bytes)."""
    if path.name.endswith(".nii.gz"):
        img = nib.load(path)
        return np.asarray(img.dataobj).tobytes(), img.affine.tobytes(), str(img.get_data_dtype())
    with Image.open(path) as img:
        return img.mode, img.size, img.tobytes()


def outputs(root: Path) -> dict[str, tuple]:
    files = [p for p in (root / "out").rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {str(p.relative_to(root / "out")): decoded(p) for p in sorted(files)}


def test_500_files_with_5_percent_corrupt_then_resume(tiny_bundle, tmp_path):  # noqa: F811
    bad = write_mixed_folder(tmp_path / "in", 500, corrupt_every=20, rng=np.random.default_rng(0))
    assert len(bad) == 25
    first = enhance(tmp_path, "--summary", "summary.json", bundle=tiny_bundle)
    assert first.returncode == 1, first.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["skipped"]) == (475, 25, 0)
    reported = sorted(f["input"] for f in summary["failures"])
    assert reported == sorted(str(Path("in") / b) for b in bad)
    assert all(f["reason"] for f in summary["failures"])
    for name in bad:  # each bad file named once on stderr, on one line with its reason
        lines = [line for line in first.stderr.splitlines() if str(Path("in") / name) + ":" in line]
        assert len(lines) == 1, (name, lines)
    good = outputs(tmp_path)
    assert len(good) == 475

    hashes = file_hashes(tmp_path / "out")
    again = enhance(tmp_path, "--resume", "--summary", "summary2.json", bundle=tiny_bundle)
    assert again.returncode == 1  # the corrupt files still fail
    summary = json.loads((tmp_path / "summary2.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 475, 25)
    assert file_hashes(tmp_path / "out") == hashes  # skipped outputs are not touched

    removed = sorted((tmp_path / "out").rglob("img00[0-4]*"))[:40]
    for path in removed:
        path.unlink()
    redo = enhance(tmp_path, "--resume", "--summary", "summary3.json", bundle=tiny_bundle)
    summary = json.loads((tmp_path / "summary3.json").read_text())
    assert (summary["done"], summary["skipped"]) == (len(removed), 475 - len(removed)), redo.stderr[-2000:]
    assert outputs(tmp_path) == good  # recomputed outputs are identical to the first run's


def test_clean_folder_exits_zero_with_summary(tiny_bundle, tmp_path):  # noqa: F811
    write_mixed_folder(tmp_path / "in", 12, corrupt_every=None, rng=np.random.default_rng(1))
    proc = enhance(tmp_path, "--summary", "s.json", bundle=tiny_bundle)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "s.json").read_text())["done"] == 12


def test_sigkill_twenty_times_leaves_only_complete_outputs(tiny_bundle, tmp_path):  # noqa: F811
    """Kill ``monai-dpe enhance --resume`` with SIGKILL at 20 random moments: every output present is complete."""
    rng = np.random.default_rng(7)
    write_mixed_folder(tmp_path / "in", 24, corrupt_every=None, rng=rng)
    reference_root = tmp_path / "reference"
    reference_root.mkdir()
    os.symlink(tmp_path / "in", reference_root / "in")
    start = time.monotonic()
    clean = enhance(reference_root, bundle=tiny_bundle)
    duration = time.monotonic() - start
    assert clean.returncode == 0, clean.stderr
    reference = outputs(reference_root)

    for _ in range(20):
        proc = subprocess.Popen([MONAI_DPE, "enhance", "in", "-o", "out", "--bundle", str(tiny_bundle),
                                 "--no-progress", "--resume"], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.2, duration)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        present = outputs(tmp_path)  # every visible output loads and equals the clean run's
        assert all(present[name] == reference[name] for name in present)
    final = enhance(tmp_path, "--resume", bundle=tiny_bundle)
    assert final.returncode == 0, final.stderr
    assert outputs(tmp_path) == reference
    assert not list((tmp_path / "out").rglob(f"*{PARTIAL_MARK}*"))  # the resume removed what the kills left
