"""A missing optional dependency fails with one line naming the extra that installs it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_dpe.extras import MissingExtraError, require

REPO = Path(__file__).resolve().parent.parent


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` does when it is absent
    with pytest.raises(MissingExtraError, match=r"pip install 'monai-dpe\[onnx\]'$"):
        require("onnxruntime", "--backend onnx")


def test_onnx_network_without_onnxruntime_names_the_onnx_extra(monkeypatch):
    from monai_dpe.networks import OnnxNetwork

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"--backend onnx .*onnxruntime.*pip install 'monai-dpe\[onnx\]'"):
        OnnxNetwork(REPO / "bundle" / "models" / "model.onnx")


def test_bm3d_baseline_without_bm3d_names_the_baselines_extra(monkeypatch):
    from monai_dpe.engines.baselines import bm3d_clahe

    monkeypatch.setitem(sys.modules, "bm3d", None)
    with pytest.raises(ImportError, match=r"bm3d_clahe baseline needs .*bm3d.*pip install 'monai-dpe\[baselines\]'"):
        bm3d_clahe(np.zeros((8, 8, 3), np.float32), rgb=True)


def test_enhance_with_backend_onnx_without_onnxruntime_says_which_extra(tmp_path):
    """The console command, with ``import onnxruntime`` failing as it does when the package is absent."""
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from monai_dpe.cli import main\n"
            f"sys.exit(main(['enhance', 'x.png', '-o', 'out', '--backend', 'onnx', '--no-progress', "
            f"'--bundle', {str(REPO / 'bundle')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines == ["monai-dpe: error: --backend onnx (ONNX Runtime) needs the optional package onnxruntime, "
                     "which is not installed: pip install 'monai-dpe[onnx]'"], run.stderr
    assert not (tmp_path / "out" / "x.png").exists()


BLOCK_EXTRAS = "import sys\nfor name in ('matplotlib', 'tensorboard', 'bm3d'):\n    sys.modules[name] = None\n"


def test_core_import_and_enhance_work_without_training_and_report_extras(tmp_path):
    """matplotlib, tensorboard and bm3d absent (extras train, report, baselines): every module imports,
    `monai-dpe enhance` runs, and --save-comparison and `monai-dpe train` refuse in one line naming the extra."""
    shutil.copytree(REPO / "bundle" / "sample_data", tmp_path / "in")
    code = BLOCK_EXTRAS + (
        "import importlib, pkgutil, monai_dpe\n"
        "for m in pkgutil.walk_packages(monai_dpe.__path__, 'monai_dpe.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "from monai_dpe.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    bundle = str(REPO / "bundle")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)

    done = run("enhance", "in", "-o", "out", "--no-progress", "--bundle", bundle)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mr_head.nii.gz", "xray_limb.png"]
    panel = run("enhance", "in", "-o", "out2", "--save-comparison", "--no-progress", "--bundle", bundle)
    assert panel.returncode == 2
    assert panel.stderr.strip() == ("monai-dpe: error: --save-comparison (the before/after panel) needs the optional "
                                    "package matplotlib, which is not installed: pip install 'monai-dpe[report]'")
    assert not (tmp_path / "out2").exists()
    train = run("train", "--bundle", bundle, "--folder", "in")
    assert train.returncode == 2
    assert train.stderr.strip().endswith("needs the optional package tensorboard, which is not installed: "
                                         "pip install 'monai-dpe[train]'"), train.stderr[-2000:]


def test_setup_keeps_training_and_report_packages_in_extras():
    text = (REPO / "setup.py").read_text()
    core = text[text.index("install_requires=["):text.index("],", text.index("install_requires=["))]
    for name in ("matplotlib", "tensorboard", "bm3d"):
        assert f'"{name}' not in core, name
    assert "-e '.[test,onnx,data,baselines,train,report]'" in (REPO / "Makefile").read_text()
