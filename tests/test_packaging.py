"""``pip install monai-dpe`` just works: the wheel and sdist carry the bundle, the installed command finds it
with no flags from any folder, and ``monai-dpe bundle export DIR`` writes a standalone bundle."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from monai_dpe import __version__
from monai_dpe.cli import BUNDLE_ENV, default_bundle, main

REPO = Path(__file__).resolve().parent.parent
BUNDLE_FILES = ["LICENSE", "large_files.json", "configs/inference.json", "configs/metadata.json", "configs/logging.conf",
                "models/model.pt", "models/model.onnx", "models/model.ts", "models/level_prior.json", "docs/README.md",
                "sample_data/xray_limb.png", "sample_data/mr_head.nii.gz"]


def test_default_bundle_is_the_clone_bundle_or_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(BUNDLE_ENV, raising=False)
    assert default_bundle() == REPO / "bundle"
    monkeypatch.setenv(BUNDLE_ENV, str(tmp_path))
    assert default_bundle() == tmp_path


def test_bundle_export_writes_a_standalone_bundle_and_refuses_a_used_folder(tmp_path, capsys):
    target = tmp_path / "exported"
    assert main(["bundle", "export", str(target)]) == 0
    for name in BUNDLE_FILES:
        assert (target / name).read_bytes() == (REPO / "bundle" / name).read_bytes(), name
    assert sorted(p.name for p in (target / "models").iterdir()) == ["level_prior.json", "model.onnx", "model.pt",
                                                                     "model.ts"]  # no training state
    assert not (target / "eval").exists() and not (target / "runs").exists()
    assert main(["bundle", "export", str(target)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_quality_and_benchmark_find_files_through_the_bundle_not_the_clone():
    for module in ("quality.py", "benchmark.py"):
        assert "__file__" not in (REPO / "monai_dpe" / "reports" / module).read_text(), module


def _source_tree(target: Path) -> Path:
    """The files a fresh clone has (tracked and new, not ignored), copied to ``target``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def _scratch_venv(path: Path) -> Path:
    """A new virtualenv that sees this interpreter's installed packages as its dependencies (a ``.pth``
    line; no network here), but not its monai_dpe: an editable install's finder is not run from there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    return python


@pytest.mark.slow
def test_wheel_from_the_sdist_installs_and_enhances_from_any_folder(tmp_path):
    source = _source_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", BUNDLE_ENV)}
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=source, env=env, check=True,
                   capture_output=True)
    sdist = dist / f"monai_dpe-{__version__}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    assert all(f"monai_dpe-{__version__}/bundle/{name}" in names for name in BUNDLE_FILES)
    assert not any("training_state" in name or "/bundle/eval/" in name for name in names)

    # the wheel is built from the sdist, so the sdist alone carries everything the wheel needs
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(dist), str(sdist)], cwd=tmp_path, env=env, check=True, capture_output=True)
    wheel = dist / f"monai_dpe-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
    assert all(f"monai_dpe/bundle/{name}" in members for name in BUNDLE_FILES)

    python = _scratch_venv(tmp_path / "venv")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                              str(wheel), "-c", str(REPO / "constraints.txt")], env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    command = tmp_path / "venv" / "bin" / "monai-dpe"
    where = subprocess.run([str(python), "-c", "import monai_dpe.cli as c; print(c.__file__); print(c.default_bundle())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(tmp_path / "venv")) and where[1].startswith(str(tmp_path / "venv"))

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(REPO / "bundle" / "sample_data" / "xray_limb.png", outside / "file.png")
    run = subprocess.run([str(command), "enhance", "file.png", "-o", "out", "--no-progress"], cwd=outside, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (outside / "out" / "file.png").is_file()

    export = subprocess.run([str(command), "bundle", "export", "exported"], cwd=outside, env=env, capture_output=True,
                            text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    bundle = outside / "exported"
    assert all((bundle / name).is_file() for name in BUNDLE_FILES)
    served = subprocess.run([str(python), "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"],
                            cwd=bundle, env=env, capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-3000:]
    assert sorted(p.name for p in (bundle / "eval").iterdir()) == ["mr_head.nii.gz", "xray_limb.png"]
