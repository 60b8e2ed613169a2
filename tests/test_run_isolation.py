"""Runs that share an output folder cannot harm each other: ``--resume`` removes only the temporary
files of writers that are gone (their names carry the owner's process id and host), and empty
files are refused with a one-line reason."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_dpe.files import HOST_TAG, PARTIAL_MARK, atomic_path, partial_owner_alive, remove_partials, replace_files
from helpers import AFFINE, MONAI_DPE, smooth

HOLD = "import sys, time; from monai_dpe.files import atomic_path\n" \
       "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_text('half'); print(tmp, flush=True); time.sleep(600)\n"


def test_resume_cleanup_keeps_live_writers_files_and_removes_dead_ones(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "live.png")], stdout=subprocess.PIPE, text=True)
    try:
        live = Path(writer.stdout.readline().strip())
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead = tmp_path / f".dead.png{PARTIAL_MARK}{int(gone.stdout)}-{HOST_TAG}-abc123"
        legacy = tmp_path / "sub" / f".old.png{PARTIAL_MARK}k2j4h1x9"  # named before owners were recorded
        foreign = tmp_path / f".nfs.png{PARTIAL_MARK}{os.getpid()}-{'0' * 8 if HOST_TAG != '0' * 8 else '1' * 8}-zz"
        legacy.parent.mkdir()
        for path in (dead, legacy, foreign):
            path.write_text("x")
        assert partial_owner_alive(live) and partial_owner_alive(foreign) and not partial_owner_alive(dead)
        removed = remove_partials(tmp_path)
        assert sorted(removed) == sorted([dead, legacy])
        assert live.exists() and foreign.exists() and not dead.exists() and not legacy.exists()
    finally:
        writer.kill()
        writer.wait()
    assert remove_partials(tmp_path) == [live]  # its owner is gone now
    assert not (tmp_path / "live.png").exists()


def test_replace_files_writes_all_or_none(tmp_path, monkeypatch):
    from helpers import failing_replace
    from monai_dpe.files import FilesNotRestoredError

    files = {tmp_path / name: name.encode() for name in ("a.json", "b.json", "c.json")}
    for path, data in files.items():
        path.write_bytes(data)
    (tmp_path / "a.json").chmod(0o600)
    replace_files({path: b"new " + data for path, data in files.items()})
    assert [path.read_bytes() for path in files] == [b"new a.json", b"new b.json", b"new c.json"]
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600  # its mode kept
    with monkeypatch.context() as patch:
        failing_replace(patch, "c.json")
        with pytest.raises(PermissionError):
            replace_files({path: b"newer" for path in files})
    assert [path.read_bytes() for path in files] == [b"new a.json", b"new b.json", b"new c.json"]  # as they were
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "c.json"]  # no partial left
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600
    calls = []  # now c fails, and so does putting a back: the error names what was not put back

    def fail_c_then_a(source, target):
        name = Path(target).name
        calls.append(name)
        if name == "c.json" or (name == "a.json" and calls.count(name) > 1):
            raise PermissionError(1, "Operation not permitted", str(source))
        real_replace(source, target)

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", fail_c_then_a)
    with pytest.raises(FilesNotRestoredError) as raised:
        replace_files({path: b"newest" for path in files})
    assert raised.value.paths == [str((tmp_path / "a.json").resolve())]
    assert isinstance(raised.value.__cause__, PermissionError)
    assert (tmp_path / "b.json").read_bytes() == b"new b.json"  # b was put back though a was not


def test_own_temporary_names_carry_pid_and_host(tmp_path):
    with atomic_path(tmp_path / "a.png") as tmp:
        assert tmp.name.startswith(f".a.png{PARTIAL_MARK}{os.getpid()}-{HOST_TAG}-")
        assert remove_partials(tmp_path) == [] and tmp.exists()


@pytest.mark.slow
def test_second_resume_run_leaves_the_first_runs_file_being_written(tiny_bundle, tmp_path):  # noqa: F811
    """A real first run is frozen (SIGSTOP to its process group: the run and the child writing its file)
    while its output is a temporary file; a second ``--resume``
    run on the same output folder completes; the first then resumes and finishes its file intact."""
    rng = np.random.default_rng(0)
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    volume = (smooth((192, 192, 48), rng) * 900).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "big" / "vol.nii.gz")
    nib.save(nib.Nifti1Image(volume[:32, :32, :3], AFFINE), tmp_path / "small" / "other.nii.gz")
    command = [MONAI_DPE, "enhance", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--backend", "eager"]
    # one compute thread leaves a core spare on a machine of two or more, so the file is written behind
    # by a child, whose temporary name the second run must keep
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([*command, "big/vol.nii.gz"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=one_thread)
    out = tmp_path / "out"
    deadline, partials = time.monotonic() + 600, []
    try:
        while not partials and first.poll() is None and time.monotonic() < deadline:
            partials = [p for p in out.glob(f".*{PARTIAL_MARK}*")] if out.is_dir() else []
            time.sleep(0.002)
        assert partials, "the first run never showed a temporary file"
        os.killpg(first.pid, signal.SIGSTOP)
        partials = list(out.glob(f".*{PARTIAL_MARK}*"))  # still there: it was stopped while writing
        assert partials
        second = subprocess.run([*command, "--resume", "small/other.nii.gz"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-2000:]
        assert all(p.exists() for p in partials), "the second run removed the first run's temporary file"
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors[-2000:]
    assert nib.load(out / "vol.nii.gz").shape == volume.shape
    assert (out / "other.nii.gz").is_file()
    assert not list(out.rglob(f".*{PARTIAL_MARK}*"))


@pytest.mark.parametrize("name", ["empty.dcm", "empty.mha", "empty.png", "empty.nii.gz"])
def test_an_empty_file_is_refused_with_its_reason(tiny_bundle, tmp_path, name):  # noqa: F811
    from monai_dpe.transforms.checks import CheckHeaderd, ImageRefused

    (tmp_path / name).write_bytes(b"")
    with pytest.raises(ImageRefused, match=r"^empty file \(0 bytes\)"):
        CheckHeaderd("image")({"image": str(tmp_path / name)})


def test_empty_dcm_and_mha_get_one_line_each_on_the_command_line(tiny_bundle, tmp_path):  # noqa: F811
    (tmp_path / "in").mkdir()
    for name in ("empty.dcm", "empty.mha"):
        (tmp_path / "in" / name).write_bytes(b"")
    run = subprocess.run([MONAI_DPE, "enhance", "in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1
    for name in ("empty.dcm", "empty.mha"):
        lines = [line for line in run.stderr.splitlines() if f"in/{name}:" in line]
        assert lines == [f"monai-dpe: in/{name}: empty file (0 bytes): there is no image to read"], run.stderr
