"""The examples run as a user would run them, on the shipped sample data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_degrade_for_training_reports_each_draw():
    result = _run(["examples/degrade_for_training.py"])
    assert result.returncode == 0, result.stderr
    assert "array transform: {'family': 'paper'" in result.stdout
    assert result.stdout.count("dictionary transform:") == 2


@pytest.mark.slow
def test_enhance_python_api_matches_the_bundle_cli(tmp_path):
    """The Python-API example writes the same files as the bundle's own inference on the same backend: the
    example runs the weights in fp32 eager PyTorch, so the bundle runs ``--backend eager`` (its ``auto`` choice,
    bf16 or ONNX by processor, is held to fp32 by test_backends)."""
    if not (ROOT / "bundle" / "models" / "model.pt").exists():
        pytest.skip("no shipped weights")
    out_api, out_bundle = tmp_path / "api", tmp_path / "bundle"
    result = _run(["examples/enhance_python_api.py", "examples/data", str(out_api)])
    assert result.returncode == 0, result.stderr
    bundle = _run(
        ["-m", "monai.bundle", "run", "--config_file", "bundle/configs/inference.json",
         "--meta_file", "bundle/configs/metadata.json", "--logging_file", "bundle/configs/logging.conf",
         "--bundle_root", "bundle", "--dataset_dir", "examples/data", "--output_dir", str(out_bundle), "--progress", "False", "--backend", "eager"]
    )
    assert bundle.returncode == 0, bundle.stderr[-2000:]
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True, dtype=None)
    written = sorted(p.relative_to(out_api) for p in out_api.rglob("*") if p.is_file())
    assert written and written == sorted(p.relative_to(out_bundle) for p in out_bundle.rglob("*") if p.is_file() and "_comparison" not in p.name)
    for rel in written:
        a, b = load(str(out_api / rel)), load(str(out_bundle / rel))
        assert a.dtype == b.dtype
        np.testing.assert_allclose(torch.as_tensor(a).double().numpy(), torch.as_tensor(b).double().numpy(), atol=1)


@pytest.mark.slow
def test_train_on_your_folder_fine_tunes_then_enhances(tmp_path):
    result = _run(["examples/train_on_your_folder.py", "examples/data", str(tmp_path / "work"), "--quick",
                   "--iterations", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "work"
    state = torch.load(work / "bundle" / "models" / "training_state.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4
    shipped = torch.load(ROOT / "bundle" / "models" / "model.pt", weights_only=True)
    tuned = state["network"]
    assert tuned.keys() == shipped.keys()
    assert any(not torch.equal(tuned[k], shipped[k]) for k in shipped)  # it trained...
    assert max(float((tuned[k] - shipped[k]).abs().max()) for k in shipped) < 0.01  # ...starting from the shipped weights
    assert sorted(p.name for p in (work / "enhanced").glob("*") if "comparison" not in p.name) == sorted(
        p.name for p in (ROOT / "examples" / "data").iterdir() if p.suffix in (".png", ".gz"))


@pytest.mark.parametrize("iterations, epochs, val_interval", [(2000, 20, 5), (300, 3, 3), (50, 1, 1), (501, 6, 5)])
def test_train_on_your_folder_validates_at_least_once(iterations, epochs, val_interval):
    """Validation saves the fine-tuned weights; --iterations 300 used to train without ever validating."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_on_your_folder", ROOT / "examples" / "train_on_your_folder.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    settings = dict(s.split("=", 1) for s in example.training_settings(Path("w.pt"), iterations))
    assert (int(settings["max_epochs"]), int(settings["val_interval"])) == (epochs, val_interval)
    assert int(settings["max_epochs"]) * int(settings["epoch_length"]) >= iterations
