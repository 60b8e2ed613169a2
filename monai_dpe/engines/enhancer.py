"""EnhancementEvaluator: run the bundle's inference over many files, one failure never stopping the rest."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import Dataset, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.transforms import MapTransform
from ignite.engine import Events

from monai_dpe.data.discovery import image_suffix

__all__ = ["SafeDataset", "EnhancementEvaluator", "CheckImaged", "one_line", "raise_on_failures"]

logger = logging.getLogger(__name__)


def one_line(err: BaseException) -> str:
    """A single-line reason for an exception: its root cause (MONAI wraps transform errors), or its type."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip().splitlines()
    return text[0] if text and text[0] else type(err).__name__


class CheckImaged(MapTransform):
    """Refuse images the enhancer cannot serve, with a reason: wrong dimensionality, too small,
    constant, non-finite values, or too many voxels for comfortable memory.

    Args:
        keys: images to check (channel first).
        max_voxels: refuse images larger than this many voxels (all channels).
        min_size: smallest accepted spatial side.
    """

    def __init__(self, keys="image", max_voxels: int = 400_000_000, min_size: int = 2, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.max_voxels, self.min_size = int(max_voxels), int(min_size)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key])
        return d

    def check(self, img: torch.Tensor) -> None:
        spatial = tuple(img.shape[1:])
        if len(spatial) not in (2, 3) or img.shape[0] > 4:
            raise ValueError(f"unsupported image shape {tuple(img.shape)}: expected 2D or 3D with 1-4 channels")
        extents = sorted(s for s in spatial if s > 1)  # a single slice read as (H, W, 1) is still 2D
        if len(extents) < 2 or extents[0] < self.min_size or (len(spatial) == 3 and extents[-2] < self.min_size):
            raise ValueError(f"image too small to enhance: spatial shape {spatial}")
        if img.numel() > self.max_voxels:
            raise ValueError(f"image too large: {img.numel():,} voxels exceeds the limit of {self.max_voxels:,}")
        t = torch.as_tensor(img)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError("image contains NaN or infinite values")
        if bool((t == t.reshape(-1)[0]).all()):
            raise ValueError("image is constant: nothing to enhance")


class SafeDataset(Dataset):
    """A MONAI ``Dataset`` that turns a failure to load or preprocess one item into an error record.

    The record ``{"error": reason, "image": path, "relpath": ...}`` flows through the data loader
    to the evaluator, which reports it and moves on to the next file.
    """

    def _transform(self, index: int) -> dict:
        item = self.data[index]
        path = item.get("image", "")
        if not os.path.isdir(path) and not image_suffix(path):
            return {**item, "error": f"unsupported file type '{os.path.splitext(path)[1] or path}'"}
        try:
            return super()._transform(index)
        except Exception as err:  # any reader or transform failure is one file's problem, not the run's
            return {**item, "error": one_line(err)}


class EnhancementEvaluator(SupervisedEvaluator):
    """Enhance every item of a data loader (batch size 1), post-process and save each one in isolation.

    Postprocessing (inversion of the intensity policy, writing) runs inside the iteration, so an
    error while writing one file is reported for that file only. ``state.enhanced`` lists the
    outputs written and ``state.failed`` the ``(input, reason)`` pairs; each failure is logged
    once as ``"<input>: <reason>"``.

    Args:
        item_postprocessing: transform applied to each decollated item (e.g. ``Invertd`` then ``SaveEnhancedd``).
        summary_path: if given, a JSON summary (done, failed, reasons) is written there at the end.
        others: as MONAI's ``SupervisedEvaluator``.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader,
        network: torch.nn.Module,
        inferer=None,
        item_postprocessing: Callable | None = None,
        summary_path: str | None = None,
        val_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device, val_data_loader=val_data_loader, network=network, inferer=inferer,
            val_handlers=val_handlers, decollate=False, **kwargs,
        )
        self.item_postprocessing = item_postprocessing
        self.summary_path = summary_path
        self.add_event_handler(Events.STARTED, self._reset_records)
        self.add_event_handler(Events.COMPLETED, self._summarise)

    def _reset_records(self, engine) -> None:
        engine.state.enhanced, engine.state.failed = [], []

    def _fail(self, path: str, reason: str) -> None:
        self.state.failed.append((path, reason))
        logger.error("%s: %s", path, reason)

    def _iteration(self, engine, batchdata: dict) -> dict:
        path = _first(batchdata.get("image_path", batchdata.get("relpath", "")))
        if "error" in batchdata:
            self._fail(_first(batchdata.get("source_path", path)), _first(batchdata["error"]))
            return {}
        source = _first(batchdata.get("source_path", path))
        try:
            inputs = batchdata["image"].to(engine.state.device)
            engine.network.eval()
            with torch.inference_mode():
                pred = engine.inferer(inputs, engine.network)
            items = decollate_batch({**batchdata, "pred": pred.cpu()})
            for item in items:
                out = self.item_postprocessing(item) if self.item_postprocessing is not None else item
                engine.state.enhanced.append(out.get("output_path", source) if isinstance(out, dict) else source)
        except Exception as err:  # a failure while enhancing or writing one file must not stop the run
            self._fail(source, one_line(err))
        return {}

    def _summarise(self, engine) -> None:
        done, failed = len(engine.state.enhanced), len(engine.state.failed)
        logger.info("enhanced %d file(s), %d failed", done, failed)
        if self.summary_path:
            summary = {"done": done, "failed": failed, "outputs": engine.state.enhanced,
                       "failures": [{"input": p, "reason": r} for p, r in engine.state.failed]}
            with open(self.summary_path, "w") as handle:
                json.dump(summary, handle, indent=2)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) and value else value


def raise_on_failures(evaluator: EnhancementEvaluator) -> None:
    """End a bundle run with an error (non-zero exit) if any file failed."""
    failed = getattr(evaluator.state, "failed", [])
    if failed:
        raise SystemExit(f"{len(failed)} file(s) failed: " + "; ".join(f"{p}: {r}" for p, r in failed))
