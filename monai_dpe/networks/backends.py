"""Run the enhancer through eager PyTorch, TorchScript or ONNX Runtime behind one callable.

The bundle's ``backend`` option picks one (``"auto"``: :func:`resolve_backend`); ``"bf16"`` is eager
PyTorch under bf16 autocast with channels-last tensors. All take and return (B, C, H, W) float
tensors, so the slice inferer, the channel adapter and the rest of the pipeline are the same for each.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from monai_dpe.extras import require
from monai_dpe.networks.weights import (
    WeightsError,
    export_path,
    load_weights,
    recorded_sha256,
    sha256_of,
    verify_sha256,
)
from monai_dpe.networks.timing import cpu_model, fastest_backend
from monai_dpe.processor import cpu_features, has_fast_bf16

__all__ = [
    "BACKENDS", "OnnxNetwork", "backend_autocast", "backend_file", "export_onnx", "load_backend", "resolve_backend",
]

BACKENDS = ("eager", "bf16", "torchscript", "onnx")
AUTO = "auto"


def resolve_backend(
    backend: str,
    device: torch.device | str,
    weights_path: str | os.PathLike,
    onnx_path: str | os.PathLike | None,
    amp_dtype: object = None,
    bundle_root: str | os.PathLike | None = None,
    features: frozenset[str] | None = None,
    network_def: nn.Module | None = None,
    timing_cache: str | os.PathLike | None = None,
) -> str:
    """The concrete backend for ``backend``; ``"auto"`` picks the fastest one this processor has.

    On a CPU that computes bf16 natively (AVX512-BF16 or AMX, from ``features``, default
    ``/proc/cpuinfo``) that is ``"bf16"``: eager bf16 autocast, channels-last (its output stays
    above 50 dB PSNR from fp32 on the shipped samples; tests/test_backends.py). On other CPUs ONNX
    Runtime (outputs within 1e-4 of eager) and eager PyTorch are timed once on a 256x256 slice with
    ``network_def`` and the faster is cached (:func:`~monai_dpe.networks.timing.fastest_backend`,
    in ``timing_cache``); without ``network_def`` ONNX Runtime is taken, as measured fastest on an
    AVX2 processor (docs/benchmarks/speed.md). ONNX Runtime is a candidate only when onnxruntime is
    installed, no autocast is asked for, and the export provably belongs to the weights: both are recorded in ``bundle_root``'s
    ``large_files.json`` and ``weights_path`` has the digest recorded for ``models/model.pt``, the
    file every export is made from (after a fine-tune overwrote ``model.pt`` without ``make
    export``, a stale export would silently run the old model; another recorded weights file, such
    as the histology model, has no export). Otherwise eager PyTorch.
    """
    if backend != AUTO:
        if backend in ("onnx", "torchscript") and bundle_root is not None:
            _check_export_matches(backend, weights_path, bundle_root)
        return backend
    if torch.device(device).type != "cpu" or amp_dtype is not None:
        return "eager"
    if has_fast_bf16(features):
        return "bf16"
    if onnx_path is None:
        return "eager"
    if importlib.util.find_spec("onnxruntime") is None or not os.path.isfile(onnx_path) or bundle_root is None:
        return "eager"
    weights_digest = recorded_sha256(bundle_root, weights_path)
    exported_digest = recorded_sha256(bundle_root, Path(bundle_root) / "models" / "model.pt")  # exports come from it
    if weights_digest is None or weights_digest != exported_digest or recorded_sha256(bundle_root, onnx_path) is None \
            or not os.path.isfile(weights_path) or sha256_of(weights_path) != weights_digest:
        return "eager"
    if network_def is None:
        return "onnx"
    candidates = {
        "onnx": lambda: OnnxNetwork(onnx_path, multiple=getattr(network_def, "multiple", 16),
                                    default_level=getattr(network_def, "default_level", None)),
        "eager": lambda: load_weights(network_def, weights_path).eval(),
    }
    key = {"cpu": cpu_model(), "features": sorted(cpu_features() if features is None else features),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "weights": weights_digest,
           "onnxruntime": importlib.import_module("onnxruntime").__version__}  # any distribution (-gpu, -openvino)
    return fastest_backend(candidates, key, timing_cache)


def backend_autocast(backend: str) -> str | None:
    """The autocast dtype a backend runs under (``"bfloat16"`` for ``"bf16"``), else ``None``."""
    return "bfloat16" if backend == "bf16" else None


def _check_export_matches(backend: str, weights_path: str | os.PathLike, bundle_root: str | os.PathLike) -> None:
    """Refuse an export that was not made from ``weights_path``: it would silently run other weights.

    Exports are made from the bundle's ``models/model.pt``; they belong to ``weights_path`` when it
    has the digest that ``large_files.json`` records for that file and the export is recorded
    beside it (training into the bundle retires the export's record), or, with nothing recorded,
    when ``weights_path`` is that file.
    """
    shipped = Path(bundle_root) / "models" / "model.pt"
    digest = recorded_sha256(bundle_root, shipped)
    if digest is None:
        tied = Path(weights_path).resolve() == shipped.resolve()
    else:
        tied = (
            os.path.isfile(weights_path)
            and sha256_of(weights_path) == digest
            and recorded_sha256(bundle_root, export_path(shipped, backend)) is not None
        )
    if not tied:
        raise WeightsError(
            f"{weights_path}: the {backend} export {export_path(shipped, backend)} was not made from these weights; "
            "run them with --backend eager (or auto), or export them first (make export)"
        )


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session that behaves like a network: torch tensor in, torch tensor out."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, multiple: int = 16,
                 default_level: torch.Tensor | list[float] | None = None) -> None:
        super().__init__()
        # the level used when a call gives none, as DPENet's default_level (an ONNX input cannot be optional)
        self.default_level = None if default_level is None else torch.as_tensor(default_level, dtype=torch.float32)
        self.multiple = int(multiple)  # DPENet's input multiple: 2 ** number of downsamplings
        ort = require("onnxruntime", "--backend onnx (ONNX Runtime)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]  # "image", then "level" if it takes one

    def forward(self, x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        array = x.detach().float().cpu().numpy()
        spatial = array.shape[2:]
        # the exported graph pads to the network's multiple by reflection, which ONNX Runtime refuses
        # when a pad reaches its side; eager DPENet then replicates the edge on every side instead, so
        # do the same before the graph and crop after it
        small = any((-s) % self.multiple >= s for s in spatial)  # eager _safe_pad's own test
        pad = [(0, 0), (0, 0)] + [(0, (-s) % self.multiple if small else 0) for s in spatial]
        padded = np.ascontiguousarray(np.pad(array, pad, mode="edge"))
        feed = {self.input_names[0]: padded}
        if len(self.input_names) > 1:
            level = self.default_level if level is None else level
            if level is None:
                raise ValueError("this ONNX network takes each image's level as `level`; none was given.")
            rows = torch.as_tensor(level, dtype=torch.float32).reshape(-1, level.shape[-1]).cpu().numpy()
            feed[self.input_names[1]] = np.ascontiguousarray(np.broadcast_to(rows, (array.shape[0], rows.shape[-1])))
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(np.ascontiguousarray(out[(..., *map(slice, spatial))])).to(x.device)


def export_onnx(network: nn.Module, path: str | os.PathLike, in_channels: int = 3, opset: int = 17) -> str:
    """Export ``network`` to ONNX with dynamic batch and spatial size (legacy exporter, tested with onnxruntime).

    A network that takes a per-image level (``DPENet.level_channels``) gets a second input, ``level``.
    """
    network = network.eval()
    example = torch.rand(1, in_channels, 64, 64)
    axes = {0: "batch", 2: "height", 3: "width"}
    level_channels = int(getattr(network, "level_channels", 0))
    inputs, names, dynamic = (example,), ["image"], {"image": axes, "pred": axes}
    if level_channels:
        inputs, names = (example, torch.rand(1, level_channels)), ["image", "level"]
        dynamic["level"] = {0: "batch"}
    torch.onnx.export(network, inputs, str(path), input_names=names, output_names=["pred"],
                      dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    return str(path)


def backend_file(
    backend: str,
    weights_path: str | os.PathLike,
    torchscript_path: str | os.PathLike | None = None,
    onnx_path: str | os.PathLike | None = None,
) -> str | os.PathLike | None:
    """The file ``backend`` loads, whose recorded digest is checked: the weights for eager and bf16, else the export."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend in ("eager", "bf16"):
        return weights_path
    return torchscript_path if backend == "torchscript" else onnx_path


def load_backend(
    network_def: nn.Module,
    weights_path: str | os.PathLike,
    backend: str = "eager",
    sha256: str | None = None,
    torchscript_path: str | os.PathLike | None = None,
    onnx_path: str | os.PathLike | None = None,
) -> nn.Module:
    """The network to run: ``network_def`` with ``weights_path`` (eager), or its TorchScript / ONNX export.

    ``sha256`` is checked against whichever file is loaded. A missing export fails with one line
    that says how to make it (``make export``).
    """
    path = backend_file(backend, weights_path, torchscript_path, onnx_path)
    if backend in ("eager", "bf16"):
        return load_weights(network_def, path, sha256)
    if path is None or not os.path.isfile(path):
        raise WeightsError(f"{path}: {backend} export not found (create it with `make export`)")
    verify_sha256(path, sha256)
    if backend == "torchscript":
        return torch.jit.load(str(path), map_location="cpu").eval()
    return OnnxNetwork(path, multiple=getattr(network_def, "multiple", 16),
                       default_level=getattr(network_def, "default_level", None))
