"""Load network weights safely: tensors only (``weights_only``), optional SHA-256 check, clear errors."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from monai_dpe.files import atomic_path

__all__ = [
    "load_weights",
    "load_initial_weights",
    "sha256_of",
    "verify_sha256",
    "recorded_sha256",
    "record_large_files",
    "record_retrained_weights",
    "export_path",
    "WeightsError",
]

LARGE_FILES = "large_files.json"
METADATA = os.path.join("configs", "metadata.json")
MODEL_DIGESTS = "model_digests"  # metadata.json key: {bundle-relative path: {"sha256": hex}}
EXPORT_SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx"}  # `make export` writes models/model.ts and .onnx


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, tampered with, or does not fit the network."""


# monai.apps.utils.check_hash only answers yes or no (and logs every check): recording a digest needs the value
def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, sha256: str | None) -> None:
    """Refuse ``path`` with a :class:`WeightsError` if its SHA-256 is not ``sha256`` (no check when ``None``)."""
    if sha256 and sha256_of(path) != sha256.lower():
        raise WeightsError(f"{path}: SHA-256 does not match the bundle's record (file changed or corrupt)")


def recorded_sha256(bundle_root: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """The SHA-256 that the bundle records for ``path``, or ``None`` if unrecorded.

    The bundle records each digest twice: in ``large_files.json``, MONAI's large-file list
    (``path``, ``url``, ``hash_val``, ``hash_type``; ``python -m monai.bundle download_large_files``
    checks it too), and under ``model_digests`` in ``configs/metadata.json``, which model-zoo
    packaging keeps when it drops ``large_files.json`` from a release. Either record is enough;
    two records that disagree are refused. A weights file the bundle does not list (a user's
    own) is loaded without a digest check.
    """
    return _recorded_digests(bundle_root).get(Path(path).resolve())


def _recorded_digests(bundle_root: str | os.PathLike) -> dict[Path, str]:
    """Resolved path -> SHA-256 from ``large_files.json`` and from ``metadata.json``'s ``model_digests``."""
    root = Path(bundle_root)
    digests: dict[Path, str] = {}
    sources: dict[Path, str] = {}
    large = root / LARGE_FILES
    entries = json.loads(large.read_text())["large_files"] if large.is_file() else []
    pairs = []
    for entry in entries:
        if entry.get("hash_type", "sha256").lower() != "sha256":
            raise WeightsError(f"{large}: {entry['path']} is recorded with {entry['hash_type']}, expected sha256")
        pairs.append((entry["path"], entry["hash_val"], large))
    meta = root / METADATA
    if meta.is_file():
        recorded = json.loads(meta.read_text()).get(MODEL_DIGESTS, {})
        pairs += [(rel, record["sha256"], meta) for rel, record in recorded.items()]
    for rel, digest, source in pairs:
        target, digest = (root / rel).resolve(), str(digest).lower()
        if digests.setdefault(target, digest) != digest:
            raise WeightsError(f"{rel}: {sources[target]} and {source} record different SHA-256 digests; "
                               "record the bundle's files again (make export)")
        sources.setdefault(target, str(source))
    return digests


def _write_records(bundle_root: str | os.PathLike, entries: list[dict]) -> None:
    """Write ``entries`` (large_files.json form) to ``large_files.json`` and, where the bundle has a
    ``configs/metadata.json``, as its ``model_digests`` (its other keys and their order kept)."""
    root = Path(bundle_root)
    with atomic_path(root / LARGE_FILES, suffix=".json") as tmp:
        tmp.write_text(json.dumps({"large_files": entries}, indent=4) + "\n")
    meta = root / METADATA
    if meta.is_file():
        metadata = json.loads(meta.read_text())
        metadata[MODEL_DIGESTS] = {entry["path"]: {"sha256": entry["hash_val"]} for entry in entries}
        with atomic_path(meta, suffix=".json") as tmp:
            tmp.write_text(json.dumps(metadata, indent=4, ensure_ascii=False) + "\n")


def record_large_files(bundle_root: str | os.PathLike, paths: list[str], url: str = "") -> str:
    """Record the SHA-256 of each bundle-relative path (after training or export) in ``large_files.json``
    and in ``configs/metadata.json``'s ``model_digests``; returns the path of ``large_files.json``."""
    entries = [
        {"path": rel, "url": url, "hash_val": sha256_of(Path(bundle_root) / rel), "hash_type": "sha256"}
        for rel in paths
    ]
    _write_records(bundle_root, entries)
    return str(Path(bundle_root) / LARGE_FILES)


def export_path(weights_path: str | os.PathLike, backend: str) -> Path:
    """Where the ``backend`` export of ``weights_path`` lives: beside it, with the export's suffix."""
    return Path(weights_path).with_suffix(EXPORT_SUFFIXES[backend])


def record_retrained_weights(bundle_root: str | os.PathLike, path: str | os.PathLike) -> list[str]:
    """Record the new digest of a weights file training overwrote; retire its exports' records.

    Training into the bundle's own ``models/`` replaces the weights that ``large_files.json``
    records, so the digest check would refuse the bundle's new model. If ``path`` is recorded and
    its digest changed, its record takes the new digest (and loses its download ``url``, which
    serves the old file), and the TorchScript/ONNX exports made from the old weights lose their
    records, so no backend runs them for the new model until ``make export`` re-exports it.
    Returns the bundle-relative paths of the retired exports. A file the bundle does not record
    (training into another folder) is left alone.
    """
    digest = recorded_sha256(bundle_root, path)
    if digest is None or not os.path.isfile(path):
        return []
    new_digest = sha256_of(path)
    if new_digest == digest:
        return []
    target = Path(path).resolve()
    exports = {export_path(target, backend) for backend in EXPORT_SUFFIXES}
    kept, retired = [], []
    for entry in _record_entries(bundle_root):
        resolved = (Path(bundle_root) / entry["path"]).resolve()
        if resolved == target:
            entry = {**entry, "url": "", "hash_val": new_digest}
        elif resolved in exports:
            retired.append(entry["path"])
            continue
        kept.append(entry)
    _write_records(bundle_root, kept)
    return retired


def _record_entries(bundle_root: str | os.PathLike) -> list[dict]:
    """The bundle's records in large_files.json form: that file's entries, or, where a zoo release
    dropped it, entries made from ``metadata.json``'s ``model_digests`` (with no download url)."""
    large = Path(bundle_root) / LARGE_FILES
    if large.is_file():
        return json.loads(large.read_text())["large_files"]
    meta = Path(bundle_root) / METADATA
    recorded = json.loads(meta.read_text()).get(MODEL_DIGESTS, {}) if meta.is_file() else {}
    return [{"path": rel, "url": "", "hash_val": r["sha256"], "hash_type": "sha256"} for rel, r in recorded.items()]


# torch's refusal of a pickle holding more than tensors ends with its unpickler's reason, after advice
# on how to load the file unsafely, which a refusal must not pass on
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n|$)", re.DOTALL)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _refusal(path: str, err: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused: what it is, and that it was not loaded."""
    text = _ANSI.sub("", str(err)).strip()
    if isinstance(err, pickle.UnpicklingError):
        match = _UNPICKLER_REASON.search(text)
        detail = " ".join(match.group(1).split()) if match else "objects other than tensors"
        return (f"{path}: not a plain weights file (it holds more than tensors: {detail}); "
                "it was not loaded and nothing in it ran")
    reason = text.split(". ")[0].splitlines()[0] if text else type(err).__name__
    return f"{path}: not a loadable weights file ({reason.rstrip('.')}); it was not loaded"


def _read_state(path: str, sha256: str | None, key: str | None) -> dict:
    """The plain state dict in ``path`` (tensors only), digest-checked, taken from under ``key`` if nested."""
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    verify_sha256(path, sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files, foreign pickles and code-carrying pickles all land here
        raise WeightsError(_refusal(path, err)) from err
    if key is not None:
        state = state.get(key, state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def warm_start(network: nn.Module, path: str | os.PathLike, key: str | None = None) -> nn.Module:
    """Start ``network`` from weights of a smaller variant: same-shaped tensors are copied, a weight
    with more input channels gets the old ones first and zeros for the new, and tensors the file
    lacks keep their initialisation.

    For adding inputs or zero-initialised heads (``DPENet``'s ``level_channels``, ``global_tone``) to
    trained weights: the grown network then computes exactly what the old one did, and training
    starts from there. Any other mismatch is refused.
    """
    path = str(path)
    state = _read_state(path, None, key)
    own = network.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise WeightsError(f"{path}: {name} has no place in {type(network).__name__}")
        target = own[name]
        if target.shape == tensor.shape:
            target.copy_(tensor)
        elif target.dim() == tensor.dim() > 1 and target.shape[0] == tensor.shape[0] and target.shape[2:] == tensor.shape[2:] \
                and target.shape[1] > tensor.shape[1]:
            target.zero_()
            target[:, : tensor.shape[1]].copy_(tensor)
        else:
            raise WeightsError(f"{path}: {name} is {list(tensor.shape)}, {type(network).__name__} needs {list(target.shape)}")
    new = sorted(set(own) - set(state))
    if new:
        logging.getLogger(__name__).info("%s: %d tensors start from their initialisation: %s", path, len(new), ", ".join(new))
    network.load_state_dict(own)
    return network


def load_weights(network: nn.Module, path: str | os.PathLike, sha256: str | None = None, key: str | None = None) -> nn.Module:
    """Load a plain state dict from ``path`` into ``network`` and return the network.

    Only tensors are unpickled (``weights_only=True``), so a file carrying code is refused and
    nothing in it runs. With ``sha256`` the file's digest must match first. A state dict nested
    under ``key`` (e.g. ``"network"`` in a training state) is taken from there.
    """
    path = str(path)
    state = _read_state(path, sha256, key)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = [line.strip() for line in str(err).splitlines() if line.strip()][1:2] or ["shapes differ"]
        raise WeightsError(f"{path}: weights do not fit {type(network).__name__} ({first[0]})") from err
    return network


def load_initial_weights(
    network: nn.Module, path: str | os.PathLike | None, warm: bool = False, key: str | None = "network"
) -> nn.Module | None:
    """Start training ``network`` from ``path``: loaded as it is (:func:`load_weights`), or grown into a
    network with more inputs (:func:`warm_start`) with ``warm``; without a path, nothing (from scratch).

    ``key``: where a training state keeps the network (a plain state dict is taken as it is).
    """
    if not path:
        return None
    return (warm_start if warm else load_weights)(network, path, key=key)
