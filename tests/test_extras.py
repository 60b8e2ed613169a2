"""A missing optional dependency fails with one line naming the extra that installs it."""
from __future__ import annotations

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
    from monai_dpe.engines.evaluation import bm3d_clahe

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
