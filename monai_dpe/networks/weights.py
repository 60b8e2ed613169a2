"""Load network weights safely: tensors only (``weights_only``), optional SHA-256 check, clear errors."""
from __future__ import annotations

import hashlib
import os

import torch
import torch.nn as nn

__all__ = ["load_weights", "sha256_of", "WeightsError"]


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, tampered with, or does not fit the network."""


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(network: nn.Module, path: str | os.PathLike, sha256: str | None = None, key: str | None = None) -> nn.Module:
    """Load a plain state dict from ``path`` into ``network`` and return the network.

    Only tensors are unpickled (``weights_only=True``), so a file carrying code is refused and
    nothing in it runs. With ``sha256`` the file's digest must match first. A state dict nested
    under ``key`` (e.g. ``"network"`` in a training state) is taken from there.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{path}: weights file not found")
    if sha256 and sha256_of(path) != sha256.lower():
        raise WeightsError(f"{path}: SHA-256 does not match the bundle's record (file changed or corrupt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files, foreign pickles and code-carrying pickles all land here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: not a loadable weights file ({reason})") from err
    if key is not None:
        state = state.get(key, state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = [line.strip() for line in str(err).splitlines() if line.strip()][1:2] or ["shapes differ"]
        raise WeightsError(f"{path}: weights do not fit {type(network).__name__} ({first[0]})") from err
    return network
