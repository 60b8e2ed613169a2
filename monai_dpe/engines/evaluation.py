"""Scoring a trained enhancer: per-image PSNR, SSIM and DeltaE against classical baselines, written as one JSON.

``bundle/configs/evaluate.json`` runs MONAI's ``SupervisedEvaluator`` over the validation
datalist (each image under each degradation preset, and clean) and attaches
:class:`EnhancementReport`, which scores every output and writes ``metrics.json``.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.metrics import PSNRMetric, SSIMMetric
from monai.transforms import MapTransform

from monai_dpe.engines.baselines import (  # noqa: F401  (re-exported: the classical methods' earlier home)
    BASELINES,
    CLASSICAL,
    apply_baseline,
    auto_gamma,
    bm3d_clahe,
    clahe,
    clahe_nlm,
    histogram_equalisation,
    noise_sigma,
)
from monai_dpe.files import write_json
from monai_dpe.metrics import DeltaEMetric, structure_psnr
from monai_dpe.transforms import SeededPerceptualDegradationd

__all__ = [
    "CLEAN_PRESET",
    "BASELINES",
    "CLASSICAL",
    "apply_baseline",
    "EvaluationDegradationd",
    "EnhancementReport",
    "histogram_equalisation",
    "clahe",
    "clahe_nlm",
    "auto_gamma",
    "bm3d_clahe",
    "noise_sigma",
    "structure_margin",
    "summarise",
    "write_json",
]

logger = logging.getLogger(__name__)

#: The preset name of the fidelity check: no degradation, the target is the input itself.
CLEAN_PRESET = "clean"


class EvaluationDegradationd(MapTransform):
    """Deterministic validation degradation by each item's preset; preset ``"clean"`` leaves the image as it is.

    Other presets go to :class:`monai_dpe.transforms.SeededPerceptualDegradationd`, so degraded
    pairs are exactly those that training validates on.

    Args:
        keys: images to degrade; their clean copies go to ``target_keys``.
        target_keys: where the clean copies go.
        preset_key: item key naming the preset.
        params_key: where the draw's parameters go (``{"family": "clean"}`` for clean items).
        kwargs: other ``SeededPerceptualDegradationd`` arguments (``seed``, ``id_key``, ranges...).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_keys: KeysCollection = "target",
        preset_key: str = "preset",
        params_key: str = "degradation",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.target_keys = [target_keys] if isinstance(target_keys, str) else list(target_keys)
        self.preset_key, self.params_key = preset_key, params_key
        self.degrade = SeededPerceptualDegradationd(
            keys, target_keys, preset_key=preset_key, params_key=params_key, allow_missing_keys=allow_missing_keys,
            **kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if data.get(self.preset_key) != CLEAN_PRESET:
            return self.degrade(data)
        d = dict(data)
        for key, target_key in self.key_iterator(d, self.target_keys):
            d[target_key] = d[key].clone() if isinstance(d[key], torch.Tensor) else np.copy(d[key])
        d[self.params_key] = {"family": CLEAN_PRESET}
        return d


class EnhancementReport:
    """Score every evaluator output against its target and write per-image scores and means as JSON.

    Per image: source, modality, preset, channels, PSNR, SSIM and CIEDE2000 DeltaE of the output
    (and of each baseline on the same degraded input, for degraded presets), and the network input's
    ``level`` where the item has one (display flag, robust black and white: what the blend's own-level
    rule reads, so a report says which images kept their own level). DeltaE is reported
    for every image, but only colour images (``rgb: true``) make it meaningful: grey images are
    replicated to RGB, so their DeltaE is a lightness difference only; the ``delta_e_rgb`` means
    average colour images alone. Means are given overall and per modality (over degraded presets),
    per preset (the clean preset is the fidelity check: PSNR of output against input), and per
    preset and modality, with the margin of the model over the best classical method.

    Args:
        output_path: the JSON file (written atomically when the run completes).
        baselines: names from :data:`BASELINES` to score too; ``()`` for none.
        info: extra fields for the report header (checkpoint path, configuration).
        data_range: the value of white in outputs and targets.
        input_key: batch key of the untouched degraded input (as its file holds it, before the
            network's stretch); scored as the baseline ``"input"`` when present.
        reuse_baselines: an earlier report of the same split, seed and presets: its baseline scores
            are taken for the same (image, preset) instead of recomputed. Baselines do not depend on
            the network and the degradations are seeded, so the scores are the same; BM3D takes most
            of an evaluation's time. An image whose untouched input or stretch (the baselines' own input)
            scores otherwise than there has its baselines computed again, with a warning naming it: that
            report saw another input or target.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        baselines: Sequence[str] = tuple(BASELINES),
        info: Mapping[str, Any] | None = None,
        data_range: float = 1.0,
        input_key: str = "degraded",
        reuse_baselines: str | os.PathLike | None = None,
    ) -> None:
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {list(BASELINES)}.")
        self.output_path, self.baselines, self.info = str(output_path), tuple(baselines), dict(info or {})
        self.metrics = {
            "psnr": PSNRMetric(max_val=data_range),
            "ssim": SSIMMetric(spatial_dims=2, data_range=data_range),
            "delta_e": DeltaEMetric(data_range=data_range),
        }
        self.data_range, self.input_key = float(data_range), input_key
        self.known_baselines = _known_baselines(reuse_baselines, self.info) if reuse_baselines else {}
        self.records: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.records.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.score)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _scores(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        pred, target = pred[None].float().cpu(), target[None].float().cpu()
        scores = {name: float(metric(y_pred=pred, y=target).item()) for name, metric in self.metrics.items()}
        scores["structure_psnr"] = structure_psnr(pred, target, self.data_range)
        # signed brightness error: PSNR says how far, this says which way (too dark < 0 < too bright)
        scores["mean_error"] = float((pred - target).mean())
        return {name: (value if np.isfinite(value) else None) for name, value in scores.items()}  # identical: inf dB

    def score(self, engine: Engine) -> None:
        """Score each item of the current batch (decollated or not)."""
        for item, out in zip(_items(engine.state.batch), _items(engine.state.output)):
            channels = int(_scalar(item.get("channels", out["pred"].shape[0])))
            preset = str(_scalar(item.get("preset", "")))
            record = {
                "source": str(_scalar(item.get("source", item.get("image_id", "")))),
                "name": str(_scalar(item.get("image_id", item.get("source", "")))),
                "modality": str(_scalar(item.get("modality", "unknown"))),
                "preset": preset,
                "channels": channels,
                "rgb": channels == 3,
                **self._scores(out["pred"].clamp(0, self.data_range), out["label"]),
                "degradation": _plain(item.get("degradation", {})),
            }
            if item.get("level") is not None:
                record["level"] = [round(float(v), 6) for v in torch.as_tensor(item["level"]).reshape(-1)]
            if preset != CLEAN_PRESET and self.baselines:
                scored = {}
                if self.input_key in item:  # the untouched degraded file, before the network's stretch
                    untouched = torch.as_tensor(item[self.input_key]).float().cpu()
                    untouched = untouched.expand_as(out["label"]) if untouched.shape[0] == 1 else untouched
                    scored["input"] = self._scores(untouched.clamp(0, self.data_range), out["label"])
                if "stretch" in self.baselines:  # free, and it scores the input every other baseline works on
                    scored["stretch"] = self._scores(out["image"].clamp(0, self.data_range), out["label"])
                known = self._known(record["name"], preset, scored)
                record["baselines"] = {
                    name: scored.get(name) or known.get(name) or self._scores(
                        apply_baseline(name, out["image"], channels == 3, self.data_range), out["label"])
                    for name in self.baselines
                }
                record["baselines"].update(scored)
            self.records.append(record)

    def _known(self, name: str, preset: str, scored: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
        """The earlier report's baseline scores of this image and preset; none (so they are computed again)
        where its untouched input, or its stretch (the input of every baseline), scored otherwise: that report
        saw another input or target (another loader or frame), and its scores do not apply."""
        known = self.known_baselines.get((name, preset), {})
        if not known:
            return known
        for method, scores in scored.items():
            if method == "stretch" and "stretch" not in known:
                continue  # an earlier report without the stretch: its untouched input alone vouches for it
            # a PSNR of None: identical to the target (infinite); "missing": the earlier record has no untouched input
            before, now = (known.get(method) or {}).get("psnr", "missing"), scores.get("psnr")
            numbers = all(isinstance(v, (int, float)) for v in (before, now))
            if before != now and not (numbers and abs(before - now) <= 1e-3):
                logger.warning("%s (%s): the reused report's %s scored %s dB, this evaluation's %s dB; its "
                               "baselines are computed again", name, preset, method, before, now)
                return {}
        return known

    def write(self, engine: Engine | None = None) -> dict:
        """Write the report JSON and log the headline means; returns the report."""
        report = {**self.info, **summarise(self.records), "images": self.records}
        write_json(report, self.output_path)
        for preset, methods in report["per_preset"].items():
            model = methods["model"]
            margin = f", margin over best classical {methods['margin_db']:+.2f} dB" if "margin_db" in methods else ""
            identical = model["count"] - model["psnr_count"]
            exact = f" ({identical} identical to their targets, infinite PSNR, left out of its mean)" if identical else ""
            logger.info("%s: PSNR %s dB, SSIM %s, DeltaE(RGB) %s over %d images%s%s", preset, _fmt(model["psnr"]),
                        _fmt(model["ssim"], 4), _fmt(model["delta_e_rgb"]), model["count"], exact, margin)
        logger.info("wrote %s", self.output_path)
        return report


def _known_baselines(path: str | os.PathLike, info: Mapping[str, Any]) -> dict[tuple[str, str], dict]:
    """Baseline scores by (image name, preset) from an earlier report; refused if it scored other inputs."""
    with open(path) as handle:
        earlier = json.load(handle)
    for key in ("seed", "split", "datalist"):
        if key in info and key in earlier and str(earlier[key]) != str(info[key]):
            raise ValueError(f"{path}: its {key} is {earlier[key]!r}, this evaluation's {info[key]!r}; "
                             "its baseline scores do not apply")
    return {(r.get("name", r["source"]), r["preset"]): r.get("baselines", {}) for r in earlier.get("images", [])}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _items(data: Any) -> list[dict]:
    """A list of per-item dictionaries from a decollated list or a collated batch dictionary."""
    if isinstance(data, Mapping):
        size = next(len(v) for v in data.values() if isinstance(v, (torch.Tensor, list)))
        return [{k: (v[i] if isinstance(v, (torch.Tensor, list)) else v) for k, v in data.items()} for i in range(size)]
    return list(data)


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


def _plain(value: Any) -> Any:
    """JSON-ready copy of a collated/decollated value (tensors and arrays to numbers and lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        value = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        return value.item() if value.size == 1 else value.tolist()
    return value


def _means(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    records = list(records)
    out: dict[str, Any] = {"count": len(records)}
    for key in ("psnr", "structure_psnr", "ssim", "delta_e", "mean_error"):
        values = [r[key] for r in records if r.get(key) is not None]  # mean_error: absent in older reports
        out[key] = float(np.mean(values)) if values else None
    colour = [r["delta_e"] for r in records if r.get("rgb") and r["delta_e"] is not None]
    out["delta_e_rgb"] = float(np.mean(colour)) if colour else None
    out["rgb_count"] = len(colour)
    # an output identical to its target has infinite PSNR, recorded as None: its mean covers the others
    out["psnr_count"] = sum(r.get("psnr") is not None for r in records)
    return out


def _methods(records: list[dict]) -> dict[str, Any]:
    """Means of the model and of each baseline over ``records``, and the model's margin over the best classical."""
    out: dict[str, Any] = {"model": _means(records)}
    names = sorted({name for r in records for name in r.get("baselines", {})})
    for name in names:
        out[name] = _means({**r["baselines"][name], "rgb": r["rgb"]} for r in records if name in r.get("baselines", {}))
    classical = [out[name]["psnr"] for name in names if name in CLASSICAL and out[name]["psnr"] is not None]
    if classical and out["model"]["psnr"] is not None:
        out["best_classical_psnr"] = max(classical)
        out["margin_db"] = out["model"]["psnr"] - max(classical)
    out.update(_structure_margins(records))
    return out


def structure_margin(record: Mapping[str, Any]) -> float | None:
    """Structure PSNR of an image's output minus its untouched input's (the floor target's measure); ``None``
    where the record lacks either."""
    untouched = ((record.get("baselines") or {}).get("input") or {}).get("structure_psnr")
    if record.get("structure_psnr") is None or untouched is None:
        return None
    return float(record["structure_psnr"] - untouched)


def _structure_margins(records: list[dict]) -> dict[str, Any]:
    """Structure PSNR of the model minus that of the untouched input: mean, and the worst image (by name)."""
    margins = [(r, structure_margin(r)) for r in records]
    pairs = [(r.get("name", r["source"]), m) for r, m in margins if m is not None]
    if not pairs:
        return {}
    worst = min(pairs, key=lambda p: p[1])
    return {"structure_margin_db": float(np.mean([m for _, m in pairs])), "worst_structure_margin_db": float(worst[1]),
            "worst_structure_image": worst[0]}


def _group(records: list[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r[key], []).append(r)
    return dict(sorted(groups.items()))


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means (model and baselines) overall, per modality, per preset and per preset and modality.

    ``overall`` and ``per_modality`` average the degraded presets only; the clean preset (output
    against an undegraded input) is a different question and appears under ``per_preset``.
    """
    records = [dict(r) for r in records]
    degraded = [r for r in records if r["preset"] != CLEAN_PRESET]
    return {
        "overall": _methods(degraded) if degraded else {},
        "per_modality": {m: _methods(rs) for m, rs in _group(degraded, "modality").items()},
        "per_preset": {p: _methods(rs) for p, rs in _group(records, "preset").items()},
        "per_preset_modality": {
            p: {m: _methods(ms) for m, ms in _group(rs, "modality").items()} for p, rs in _group(records, "preset").items()
        },
    }
