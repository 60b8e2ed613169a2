"""The auto backend where the processor's features do not decide: timed once on one slice, then read from a cache."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from bundle_copies import copy_configs
from helpers import shipped_network
from monai_dpe.networks import export_onnx, record_large_files, resolve_backend
from monai_dpe.networks.timing import backend_cache_file, cpu_model, fastest_backend

ROOT = Path(__file__).resolve().parents[1]
NO_BF16 = frozenset({"avx2", "avx512f"})


class _Takes(nn.Module):
    """A network that makes a fake clock advance by ``seconds`` per call."""

    def __init__(self, clock: list[float], seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def forward(self, x):
        self.clock[0] += self.seconds
        return x


def _fake(clock):
    return lambda: clock[0]


def test_the_faster_backend_is_chosen_and_cached(tmp_path):
    clock, built = [0.0], []

    def build(name, seconds):
        def make():
            built.append(name)
            return _Takes(clock, seconds)
        return make

    cache = tmp_path / "timings.json"
    candidates = {"onnx": build("onnx", 0.3), "eager": build("eager", 0.2)}
    assert fastest_backend(candidates, {"cpu": "x"}, cache, clock=_fake(clock)) == "eager"
    assert built == ["onnx", "eager"]
    record = next(iter(json.loads(cache.read_text()).values()))
    assert record["backend"] == "eager" and record["seconds"] == pytest.approx({"onnx": 0.3, "eager": 0.2})
    # the next run reads the cache and builds nothing
    assert fastest_backend(candidates, {"cpu": "x"}, cache, clock=_fake(clock)) == "eager" and len(built) == 2
    # another processor, thread count or weights is measured again
    candidates["eager"] = build("eager", 0.5)
    assert fastest_backend(candidates, {"cpu": "y"}, cache, clock=_fake(clock)) == "onnx" and len(built) == 4
    assert len(json.loads(cache.read_text())) == 2


def test_a_damaged_or_unwritable_cache_only_means_timing_again(tmp_path):
    clock = [0.0]
    candidates = {"onnx": lambda: _Takes(clock, 0.1), "eager": lambda: _Takes(clock, 0.2)}
    damaged = tmp_path / "timings.json"
    damaged.write_text("{not json")
    assert fastest_backend(candidates, {"cpu": "x"}, damaged, clock=_fake(clock)) == "onnx"
    blocked = tmp_path / "file" / "timings.json"
    (tmp_path / "file").write_text("a file where the cache folder should be")
    assert fastest_backend(candidates, {"cpu": "x"}, blocked, clock=_fake(clock)) == "onnx"


def test_the_cache_follows_monai_dpe_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_DPE_CACHE", str(tmp_path))
    assert backend_cache_file() == tmp_path / "backend_timings.json"
    assert cpu_model(str(tmp_path / "missing")), "a processor name even without /proc/cpuinfo"


def test_auto_times_onnx_and_eager_without_native_bf16_and_keeps_the_choice(tmp_path):
    """With faked CPU features (no AVX512-BF16/AMX) and the bundle's network, auto measures both paths."""
    bundle = tmp_path / "bundle"
    copy_configs(bundle / "configs", ROOT / "bundle" / "configs")
    (bundle / "models").mkdir(exist_ok=True)
    net = shipped_network(channels=[8, 16, 24])
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    export_onnx(net, bundle / "models" / "model.onnx")
    record_large_files(bundle, ["models/model.pt", "models/model.onnx"])
    own, onnx, cache = bundle / "models" / "model.pt", bundle / "models" / "model.onnx", tmp_path / "t.json"
    choice = resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=NO_BF16,
                             network_def=shipped_network(channels=[8, 16, 24]), timing_cache=cache)
    [record] = json.loads(cache.read_text()).values()
    assert choice in ("onnx", "eager") and record["backend"] == choice and set(record["seconds"]) == {"onnx", "eager"}
    assert record["key"]["features"] == str(sorted(NO_BF16))
    # features that decide need no timing, and a forced backend is still forced
    features = frozenset({"avx2", "avx512f", "avx512_bf16"})
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=features,
                           network_def=shipped_network(channels=[8, 16, 24]), timing_cache=tmp_path / "none.json") == "bf16"
    assert not (tmp_path / "none.json").exists()
    assert resolve_backend("eager", "cpu", own, onnx, features=NO_BF16, network_def=net, timing_cache=cache) == "eager"
    shutil.rmtree(bundle)


def test_a_cache_of_the_wrong_shape_or_with_nan_is_timed_again_not_fatal(tmp_path):
    clock = [0.0]
    candidates = {"onnx": lambda: _Takes(clock, 0.1), "eager": lambda: _Takes(clock, 0.2)}
    cache = tmp_path / "timings.json"
    entry = __import__("hashlib").sha256(json.dumps({"cpu": "x", "candidates": ["eager", "onnx"]}, sort_keys=True).encode())
    cache.write_text(json.dumps({entry.hexdigest(): "eager", "other": {"backend": "onnx", "seconds": {"onnx": float("nan")}}}))
    assert fastest_backend(candidates, {"cpu": "x"}, cache, clock=_fake(clock)) == "onnx"
    assert json.loads(cache.read_text())[entry.hexdigest()]["backend"] == "onnx", "rewritten, the bad entries dropped"
