"""TorchScript and ONNX Runtime run through the bundle's own inference and match eager to 1e-4."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle_copies import copy_configs
from monai_dpe.networks import (
    DPENet,
    WeightsError,
    backend_autocast,
    export_onnx,
    load_backend,
    record_large_files,
    record_retrained_weights,
    recorded_sha256,
    resolve_backend,
    sha256_of,
)
from monai_dpe.processor import has_fast_bf16
from helpers import shipped_network

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = [8, 16, 24]

NO_BF16 = frozenset({"avx2", "avx512f"})  # a CPU without native bf16: auto keeps fp32


@pytest.fixture
def bundle(tmp_path):
    """A copy of the bundle configs with small random weights and their two exports."""
    root = tmp_path / "bundle"
    copy_configs(root / "configs", ROOT / "bundle" / "configs")
    (root / "models").mkdir(exist_ok=True)
    torch.manual_seed(0)
    net = shipped_network(channels=CHANNELS)  # the bundle's network at small widths
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    torch.jit.script(net.eval()).save(str(root / "models" / "model.ts"))
    export_onnx(net, root / "models" / "model.onnx")
    return root


def _enhance(bundle: Path, inputs: Path, out: Path, backend: str) -> subprocess.CompletedProcess:
    args = ["-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
            "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
            "--dataset_dir", str(inputs), "--output_dir", str(out), "--channels", str(CHANNELS),
            "--backend", backend, "--progress", "False"]
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_torchscript_and_onnx_match_eager_through_the_bundle(bundle, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    volume = rng.normal(100.0, 20.0, (40, 36, 5)).astype(np.float32)  # float: quantitative, exact units back
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), inputs / "vol.nii.gz")
    outputs = {}
    for backend in ("eager", "torchscript", "onnx"):
        result = _enhance(bundle, inputs, tmp_path / backend, backend)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[backend] = nib.load(tmp_path / backend / "vol.nii.gz").get_fdata(dtype=np.float32)
    span = np.percentile(volume, 99.5) - np.percentile(volume, 0.5)  # the window the network saw
    assert np.abs(outputs["eager"] - volume).max() > 1e-2 * span, "random weights should change the volume"
    for backend in ("torchscript", "onnx"):
        np.testing.assert_allclose(outputs[backend] / span, outputs["eager"] / span, atol=1e-4, rtol=0)


def test_missing_export_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="make export"):
        load_backend(DPENet(channels=CHANNELS), tmp_path / "model.pt", "onnx", onnx_path=tmp_path / "model.onnx")


def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        load_backend(DPENet(channels=CHANNELS), tmp_path / "model.pt", "tensorrt")


def test_auto_backend_is_onnx_only_when_the_record_ties_export_and_weights(bundle, tmp_path, monkeypatch):
    models = bundle / "models"
    own, onnx = models / "model.pt", models / "model.onnx"
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=NO_BF16) == "eager", "no large_files.json record"
    record_large_files(bundle, ["models/model.pt", "models/model.ts", "models/model.onnx"])
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=NO_BF16) == "onnx"
    assert resolve_backend("auto", "cuda:0", own, onnx, bundle_root=bundle, features=NO_BF16) == "eager", "GPUs run eager PyTorch"
    assert resolve_backend("auto", "cpu", own, onnx, "bfloat16", bundle, features=NO_BF16) == "eager", "autocast needs eager"
    other = tmp_path / "finetuned.pt"
    shutil.copy(own, other)
    assert resolve_backend("auto", "cpu", other, onnx, bundle_root=bundle, features=NO_BF16) == "eager", "unrecorded weights"
    assert resolve_backend("auto", "cpu", own, tmp_path / "missing.onnx", bundle_root=bundle, features=NO_BF16) == "eager"
    assert resolve_backend("torchscript", "cpu", own, onnx, bundle_root=bundle) == "torchscript", "explicit stays"
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=NO_BF16) == "eager", "without onnxruntime"
    monkeypatch.undo()
    state = torch.load(own, weights_only=True)  # a fine-tune overwrote model.pt but nobody re-exported
    torch.save({k: v + 1e-3 for k, v in state.items()}, own)
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=NO_BF16) == "eager", "a stale export must not run"


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_training_into_the_bundle_retires_the_exports_of_the_old_weights(bundle, backend):
    """After training overwrote models/model.pt the record follows it and no backend runs the old exports."""
    models = bundle / "models"
    own, onnx = models / "model.pt", models / "model.onnx"
    record_large_files(bundle, ["models/model.pt", "models/model.ts", "models/model.onnx"])
    assert record_retrained_weights(bundle, own) == [], "unchanged weights keep every record"
    assert resolve_backend(backend, "cpu", own, onnx, bundle_root=bundle) == backend
    state = torch.load(own, weights_only=True)
    torch.save({k: v * 0.5 for k, v in state.items()}, own)  # what CheckpointSaver does to a recorded model.pt
    assert record_retrained_weights(bundle, own) == ["models/model.ts", "models/model.onnx"]
    assert recorded_sha256(bundle, own) == sha256_of(own)
    assert load_backend(shipped_network(channels=CHANNELS), own, "eager", recorded_sha256(bundle, own)) is not None
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=NO_BF16) == "eager", "the old ONNX must not run"
    with pytest.raises(WeightsError, match="not made from these weights.*make export"):
        resolve_backend(backend, "cpu", own, onnx, bundle_root=bundle)
    elsewhere = bundle.parent / "elsewhere.pt"
    torch.save(state, elsewhere)
    assert record_retrained_weights(bundle, elsewhere) == [], "weights the bundle does not record are left alone"


@pytest.mark.parametrize("backend", ["onnx", "torchscript"])
def test_explicit_export_backend_refuses_weights_it_was_not_made_from(bundle, tmp_path, backend):
    """--weights with --backend onnx/torchscript would otherwise run the bundle's export, not the weights."""
    models = bundle / "models"
    own, onnx = models / "model.pt", models / "model.onnx"
    assert resolve_backend(backend, "cpu", own, onnx, bundle_root=bundle) == backend, "unrecorded: the bundle's own"
    record_large_files(bundle, ["models/model.pt", "models/model.ts", "models/model.onnx"])
    assert resolve_backend(backend, "cpu", own, onnx, bundle_root=bundle) == backend
    other = tmp_path / "finetuned.pt"
    torch.save({k: v * 0.5 for k, v in torch.load(own, weights_only=True).items()}, other)
    with pytest.raises(WeightsError, match=f"finetuned.pt: the {backend} export .* was not made from these weights.*--backend eager"):
        resolve_backend(backend, "cpu", other, onnx, bundle_root=bundle)
    shutil.copy(other, own)  # a fine-tune overwrote model.pt and nobody re-exported
    with pytest.raises(WeightsError, match="not made from these weights"):
        resolve_backend(backend, "cpu", own, onnx, bundle_root=bundle)


@pytest.mark.slow
def test_auto_backend_runs_this_processors_choice_through_the_bundle(bundle, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    volume = np.random.default_rng(1).normal(100.0, 20.0, (24, 20, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), inputs / "vol.nii.gz")
    outputs = {}
    record_large_files(bundle, ["models/model.pt", "models/model.onnx"])
    chosen = "bf16" if has_fast_bf16() else "onnx"  # resolve_backend's choice on this machine
    for backend in ("auto", chosen):
        result = _enhance(bundle, inputs, tmp_path / backend, backend)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[backend] = nib.load(tmp_path / backend / "vol.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(outputs["auto"], outputs[chosen])


@pytest.fixture(scope="module", params=[[8, 16, 24, 32, 40], [8, 16, 24]], ids=["multiple16", "multiple4"])
def eager_and_onnx(request, tmp_path_factory):
    """A random DPENet (the shipped model's input multiple, 16, or a shallower one's, 4) and its
    ONNX Runtime session, loaded the way the bundle loads it."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = DPENet(channels=request.param, output_act=None).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("onnx")
    torch.save(net.state_dict(), root / "model.pt")
    export_onnx(net, root / "model.onnx")
    onnx = load_backend(DPENet(channels=request.param, output_act=None), root / "model.pt", "onnx",
                        onnx_path=root / "model.onnx")
    return net, onnx


@pytest.mark.parametrize("shape", [(6, 20), (2, 9), (3, 3), (8, 40), (9, 15), (4, 300)])
def test_onnx_serves_sides_of_eight_or_less_like_eager(eager_and_onnx, shape):
    """The exported graph pads to the network's multiple by reflection, which ONNX Runtime refuses once
    a pad reaches its side; OnnxNetwork replicates the edge first, as eager DPENet does for such sides."""
    net, onnx = eager_and_onnx
    x = torch.rand(1, 3, *shape)
    with torch.no_grad():
        expected = net(x)
    np.testing.assert_allclose(onnx(x).numpy(), expected.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_backend_is_bf16_where_the_processor_computes_bf16(bundle, flag):
    models = bundle / "models"
    own, onnx = models / "model.pt", models / "model.onnx"
    features = frozenset({"avx2", "avx512f", flag})
    assert resolve_backend("auto", "cpu", own, onnx, bundle_root=bundle, features=features) == "bf16"
    assert resolve_backend("auto", "cuda:0", own, onnx, bundle_root=bundle, features=features) == "eager"
    assert resolve_backend("onnx", "cpu", own, onnx, features=features) == "onnx", "--backend still forces a path"
    assert resolve_backend("eager", "cpu", own, onnx, features=features) == "eager"
    assert backend_autocast("bf16") == "bfloat16" and backend_autocast("eager") is None


@pytest.mark.parametrize("backend", ["bf16", "eager"])
def test_bundle_inferer_holds_weights_in_the_layout_of_its_slices_wherever_the_network_was_built(backend):
    """bf16 feeds channels-last slices, so the weights must be channels-last too (else each call reorders
    them); the inferer does it, so MONAI Label, which builds ``network_def`` and loads the state dict
    itself, runs what ``monai.bundle run`` runs, to the bit. Eager keeps PyTorch's default layout."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundle" / "configs" / "inference.json"))
    parser.update({"bundle_root": str(ROOT / "bundle"), "backend": backend, "device": "$torch.device('cpu')",
                   "progress": False})
    bundle_net, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    label_net = parser.get_parsed_content("network_def", lazy=False)  # a new instance, as MONAI Label builds it
    assert label_net is not bundle_net
    label_net.load_state_dict(torch.load(ROOT / "bundle" / "models" / "model.pt", map_location="cpu"))
    label_net.eval()
    volume = torch.rand(1, 1, 24, 20, 3)
    with torch.inference_mode():
        outputs = [inferer(volume, net) for net in (bundle_net, label_net)]
    assert torch.equal(outputs[0], outputs[1])
    layout = torch.channels_last if backend == "bf16" else torch.contiguous_format
    for net in (bundle_net, label_net):
        kernels = [p for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        assert kernels and all(p.is_contiguous(memory_format=layout) for p in kernels)


@pytest.mark.slow
def test_bf16_backend_stays_50_db_from_fp32_on_the_shipped_samples(tmp_path):
    """The shipped weights on the bundle's samples: what ``auto`` runs on a bf16 CPU is fp32's output within 50 dB."""
    from monai.bundle import ConfigParser
    from skimage.metrics import peak_signal_noise_ratio

    outputs = {}
    for backend in ("eager", "bf16"):
        parser = ConfigParser()
        parser.read_config(str(ROOT / "bundle" / "configs" / "inference.json"))
        parser.update({"bundle_root": str(ROOT / "bundle"), "dataset_dir": str(ROOT / "bundle" / "sample_data"),
                       "output_dir": str(tmp_path / backend), "backend": backend, "progress": False,
                       "device": "$torch.device('cpu')"})
        parser.get_parsed_content("evaluator").run()
        outputs[backend] = tmp_path / backend
    for name in ("xray_limb.png", "mr_head.nii.gz"):
        fp32, bf16 = (_read(outputs[b] / name) for b in ("eager", "bf16"))
        assert peak_signal_noise_ratio(fp32, bf16, data_range=float(fp32.max() - fp32.min())) >= 50.0, name


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path), dtype=np.float64)
    return nib.load(path).get_fdata()
