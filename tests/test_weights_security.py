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
from helpers import shipped_network

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"


class _Payload:
    """A pickle that runs code when unpickled: it creates ``marker`` (the attack being tested)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bundle_records_sha256_of_every_shipped_model_file():
    record = json.loads((BUNDLE / "large_files.json").read_text())["large_files"]
    assert {e["path"] for e in record} == {"models/model.pt", "models/model.ts", "models/model.onnx"}
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
    load_backend(shipped_network(), bundle / "models" / "model.pt", backend, recorded,
                 bundle / "models" / "model.ts", bundle / "models" / "model.onnx")  # intact: loads
    with open(path, "r+b") as handle:  # flip one byte near the end (inside the tensor data)
        handle.seek(-64, 2)
        byte = handle.read(1)
        handle.seek(-64, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match="SHA-256 does not match"):
        load_backend(shipped_network(), bundle / "models" / "model.pt", backend, recorded,
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


def test_metadata_records_the_same_digests_as_large_files():
    """``configs/metadata.json`` carries every digest of ``large_files.json`` (a zoo release keeps only the former)."""
    large = {e["path"]: e["hash_val"] for e in json.loads((BUNDLE / "large_files.json").read_text())["large_files"]}
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["model_digests"]
    assert {path: record["sha256"] for path, record in meta.items()} == large


def _zoo_release(tmp_path: Path) -> Path:
    """The shipped bundle as a model-zoo release ships it: no large_files.json, no exports."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("model.ts", "model.onnx", "model_histology.pt",
                                                                  "training_state.pt", "large_files.json"))
    assert not (bundle / "large_files.json").exists()
    return bundle


def _tamper(weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3  # a plausible-looking but different file
    torch.save(state, weights)


def test_without_large_files_json_a_tampered_model_is_still_refused(tmp_path):
    from monai.bundle import ConfigParser

    bundle = _zoo_release(tmp_path)
    weights = bundle / "models" / "model.pt"
    assert recorded_sha256(bundle, weights) == sha256_of(BUNDLE / "models" / "model.pt")
    _tamper(weights)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    assert parser.get_parsed_content("resolved_backend") in ("eager", "bf16"), "both load models/model.pt"
    with pytest.raises(Exception) as caught:
        parser.get_parsed_content("network")
    chain, err = [], caught.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__ or err.__context__
    assert any(f"{weights}: SHA-256 does not match" in text for text in chain), chain


def test_record_large_files_writes_both_records_and_retraining_updates_both(tmp_path):
    from monai_dpe.networks import record_retrained_weights

    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    shutil.copy(BUNDLE / "configs" / "metadata.json", bundle / "configs" / "metadata.json")
    weights = bundle / "models" / "model.pt"
    torch.save(DPENet(channels=(4, 8)).state_dict(), weights)
    (bundle / "models" / "model.onnx").write_bytes(b"export")
    record_large_files(bundle, ["models/model.pt", "models/model.onnx"])
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    shipped = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert {k: v for k, v in meta.items() if k != "model_digests"} == {k: v for k, v in shipped.items()
                                                                       if k != "model_digests"}
    assert meta["model_digests"] == {"models/model.pt": {"sha256": sha256_of(weights)},
                                     "models/model.onnx": {"sha256": sha256_of(bundle / "models" / "model.onnx")}}
    (bundle / "large_files.json").unlink()  # a zoo release, then fine-tuned in place
    torch.save(DPENet(channels=(4, 8), output_act=None).state_dict(), weights)
    assert record_retrained_weights(bundle, weights) == ["models/model.onnx"]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())["model_digests"]
    assert meta == {"models/model.pt": {"sha256": sha256_of(weights)}}
    assert recorded_sha256(bundle, weights) == sha256_of(weights)


def test_records_that_disagree_are_refused(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0"}))
    weights = bundle / "models" / "model.pt"
    weights.write_bytes(b"a")
    record_large_files(bundle, ["models/model.pt"])
    weights.write_bytes(b"b")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    meta["model_digests"]["models/model.pt"]["sha256"] = sha256_of(weights)  # one record stale
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="record different SHA-256 digests"):
        recorded_sha256(bundle, weights)
