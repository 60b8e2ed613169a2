"""ModalityRouter: one network per imaging modality behind a single module.

A network trained on every modality has to guess, from a patch, how dark the clean image's
darkest pixels were, and the guess that suits a pale brightfield slide (lift the darks) is wrong
for a fundus photograph (keep its black surround). A specialist trained on one modality learns
that modality's prior instead. The router sends each image of a batch to the specialist for its
``modality`` (the datalist field) and every other image to the default network, so an evaluator
or inferer scores the set of shipped models the way a user would run them.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from monai_dpe.networks.weights import load_weights, recorded_sha256

__all__ = ["ModalityRouter", "experts_for", "load_router"]


class ModalityRouter(nn.Module):
    """Run each image through the network for its modality, or through ``default``.

    Args:
        default: the network for modalities without a specialist.
        experts: modality name -> specialist network (for example ``{"histology": net}``).

    ``forward(x, modality)`` takes ``modality`` as one string for the whole batch, a sequence of
    strings (one per image, as a collated datalist field arrives) or ``None`` (the default network).
    MONAI engines pass it with ``PrepareBatchExtraInput``-style preparation, see
    :class:`monai_dpe.engines.PrepareImageTarget` ``extra_keys``.
    """

    def __init__(self, default: nn.Module, experts: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.default = default
        self.experts = nn.ModuleDict(dict(experts or {}))

    def network_for(self, modality: str | None) -> nn.Module:
        """The specialist for ``modality``, or the default network."""
        return self.experts[modality] if modality in self.experts else self.default

    def forward(self, x: torch.Tensor, modality: str | Sequence[str] | None = None, **kwargs) -> torch.Tensor:
        """Route ``x``; other keyword arguments (a per-image ``level``) go to the networks, split with the batch."""
        if modality is None or isinstance(modality, str):
            return self.network_for(modality)(x, **kwargs)
        names = list(modality)
        if len(names) != x.shape[0]:
            raise ValueError(f"got {len(names)} modality names for a batch of {x.shape[0]} images.")
        if len(set(names)) == 1:
            return self.network_for(names[0])(x, **kwargs)
        out = [self.network_for(name)(x[i : i + 1], **_item(kwargs, i, x.shape[0])) for i, name in enumerate(names)]
        return torch.cat(out, dim=0)


def _item(kwargs: dict, index: int, batch: int) -> dict:
    """Keyword arguments for image ``index``: per-image tensors (first dimension ``batch``) are sliced."""
    return {k: v[index : index + 1] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == batch else v
            for k, v in kwargs.items()}


def load_router(
    network: nn.Module,
    weights_path: str | os.PathLike,
    expert_weights: Mapping[str, str | os.PathLike] | None = None,
    bundle_root: str | os.PathLike | None = None,
) -> ModalityRouter:
    """A :class:`ModalityRouter` of ``network`` loaded from ``weights_path`` and one copy per expert file.

    Each file is checked against the digest ``bundle_root`` records (``recorded_sha256``) for it
    (files it does not record are loaded unchecked, as :func:`load_weights` does without a digest).
    """

    def digest(path: str | os.PathLike) -> str | None:
        return recorded_sha256(bundle_root, path) if bundle_root is not None else None

    experts = {name: load_weights(copy.deepcopy(network), path, digest(path)) for name, path in (expert_weights or {}).items()}
    return ModalityRouter(load_weights(network, weights_path, digest(weights_path)), experts)


def experts_for(
    weights_path: str | os.PathLike,
    shipped_experts: Mapping[str, str | os.PathLike],
    bundle_root: str | os.PathLike,
) -> Mapping[str, str | os.PathLike]:
    """The expert weights that go with ``weights_path``: the shipped experts with the bundle's own
    ``models/model.pt``, none with any other weights (a user's own model is scored alone)."""
    shipped = os.path.abspath(os.path.join(bundle_root, "models", "model.pt"))
    return shipped_experts if os.path.abspath(weights_path) == shipped else {}
