"""Weights are data, never code: tensors-only loading, the bundle's SHA-256 record, and refusal of tampered files."""
from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_dpe.networks import (
    DPENet,
    WeightsError,
    load_backend,
    load_weights,
    record_large_files,
    recorded_sha256,
    sha256_of,
)

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"
SHIPPED = (32, 48, 64, 80, 96)


class _Payload:
    """A pickle that runs code when unpickled: it creates ``marker`` (the attack being tested)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bundle_records_sha256_of_every_shipped_model_file():
    record = json.loads((BUNDLE / "large_files.json").read_text())["large_files"]
    assert {e["path"] for e in record} == {"models/model.pt", "models/model.ts", "models/model.onnx", "models/model_histology.pt"}
    for entry in record:
        assert entry["hash_type"] == "sha256"
        assert sha256_of(BUNDLE / entry["path"]) == entry["hash_val"], f"{entry['path']} changed without a new record"


def test_recorded_sha256_matches_bundle_paths_only(tmp_path):
    assert recorded_sha256(BUNDLE, BUNDLE / "models" / "model.pt") == sha256_of(BUNDLE / "models" / "model.pt")
    assert recorded_sha256(BUNDLE, tmp_path / "mine.pt") is None  # a user's own weights: no record, no check
    assert recorded_sha256(tmp_path, BUNDLE / "models" / "model.pt") is None  # a bundle without large_files.json


def test_code_carrying_pickle_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"weight": _Payload(marker)}, handle)
    with pytest.raises(WeightsError, match="not a plain weights file .*; it was not loaded and nothing in it ran$"):
        load_weights(DPENet(channels=(4, 8)), evil)
    assert not marker.exists()


def test_code_carrying_torch_save_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"conv.weight": _Payload(marker)}, evil)
    with pytest.raises(WeightsError, match=str(evil)) as refused:
        load_weights(DPENet(channels=(4, 8)), evil)
    assert not marker.exists()
    # the whole reason, and none of torch's advice on loading the file unsafely (it was cut mid-sentence)
    assert str(refused.value).endswith("not loaded and nothing in it ran") and "weights_only" not in str(refused.value)
    assert "Unsupported global" in str(refused.value)


@pytest.mark.parametrize("backend", ["eager", "torchscript", "onnx"])
def test_digest_mismatch_is_refused_for_every_backend(tmp_path, backend):
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "models", bundle / "models")
    record_large_files(bundle, ["models/model.pt", "models/model.ts", "models/model.onnx"])
    name = {"eager": "model.pt", "torchscript": "model.ts", "onnx": "model.onnx"}[backend]
    path = bundle / "models" / name
    recorded = recorded_sha256(bundle, path)
    load_backend(DPENet(channels=SHIPPED, output_act=None), bundle / "models" / "model.pt", backend, recorded,
                 bundle / "models" / "model.ts", bundle / "models" / "model.onnx")  # intact: loads
    with open(path, "r+b") as handle:  # flip one byte near the end (inside the tensor data)
        handle.seek(-64, 2)
        byte = handle.read(1)
        handle.seek(-64, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match="SHA-256 does not match"):
        load_backend(DPENet(channels=SHIPPED, output_act=None), bundle / "models" / "model.pt", backend, recorded,
                     bundle / "models" / "model.ts", bundle / "models" / "model.onnx")


@pytest.mark.slow
def test_bundle_run_refuses_tampered_shipped_weights(tmp_path):
    """``python -m monai.bundle run`` on a bundle whose model.pt changed: one line naming the file, no output."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("model.ts", "model.onnx", "training_state.pt"))
    weights = bundle / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3  # a plausible-looking but different file
    torch.save(state, weights)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
         "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
         "--dataset_dir", str(REPO / "examples" / "data"), "--output_dir", str(out), "--progress", "False"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert f"{weights}: SHA-256 does not match" in proc.stderr
    assert not out.exists() or not any(out.rglob("*.*"))
