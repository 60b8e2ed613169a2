"""LevelPrior: a display image's true level, estimated from its input's global statistics.

The paper's degradation darkens an image and blends it toward its mean grey, the same for every
channel: an affine change of level and contrast. The network's input is the degraded image stretched
by its robust range, so the truth is ``black + (white - black) * stretched`` for two numbers per
image, the truth's values where the stretch put 0 and 1. The stretch alone takes them as 0 and 1;
the network guesses them from what it sees. A gradient-boosted regressor, fitted on the training
split (:mod:`monai_dpe.engines.level_prior_fit`), estimates them from the whole input: its robust
range in absolute terms, the stretched histogram's quantiles, colour cast, clipping and noise
(:func:`level_features`). :class:`~monai_dpe.transforms.BlendInputFit` gives a display image this
line in place of the one fitted to the network's output; the network's detail stays.

The fitted trees are stored as JSON and walked here: scikit-learn's models persist only as pickles,
which run code when loaded and are bound to the version that wrote them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from monai_dpe.transforms.input_fit import input_noise, is_colour
from monai_dpe.transforms.preparation import LimitSize

__all__ = ["FEATURE_NAMES", "LEVEL_PRIOR_FORMAT", "WORKING_SIZE", "LevelPrior", "level_features", "load_level_prior"]

LEVEL_PRIOR_FORMAT = "monai-dpe level prior 1"
_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
_MAX_SAMPLES = 200_000  # quantiles from a strided subsample: bounded time on big images and volumes
#: the longest side at which the prior reads a 2D image: train.json's validate#preprocessing shrinks every fit image
#: to it (LimitSized), so an image enhanced at full size is read at the same scale (its extremes and noise depend on it)
WORKING_SIZE = 384
FEATURE_NAMES = (
    "black", "white", "span", "mean_absolute", "mean", "std", *(f"quantile_{q:g}" for q in _QUANTILES),
    "colour", "chroma", "cast_red", "cast_green", "cast_blue", "share_at_black", "share_at_white",
    "noise", "noise_absolute", "minimum", "maximum",
)


def level_features(image: torch.Tensor, level: Sequence[float] | torch.Tensor) -> np.ndarray:
    """The statistics of a stretched, channel-first image (2D or a volume) that the prior reads.

    ``image`` is the network's input (stretched by its robust range to about [0, 1]) and ``level`` its
    level vector ``(display, black, white)`` (:func:`~monai_dpe.transforms.input_level`): where the
    stretch put 0 and 1, in absolute terms. A 2D image larger than :data:`WORKING_SIZE` is read shrunk
    to it, as the fit read its images. Colour statistics are those of an image whose channels differ
    (:func:`~monai_dpe.transforms.is_colour`), the cast per channel of a three-channel one; any other
    image reads as grey (0). Returns ``len(FEATURE_NAMES)`` float64 values, computed on the CPU.
    """
    values = torch.as_tensor(level, dtype=torch.float64).reshape(-1)
    black, white = float(values[1]), float(values[2])
    pixels = image.detach().as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    pixels = LimitSize(WORKING_SIZE)(pixels.float()).as_subclass(torch.Tensor).cpu()
    flat = pixels.reshape(-1)
    sample = flat[:: max(1, flat.numel() // _MAX_SAMPLES)].double()
    quantiles = torch.quantile(sample, torch.tensor(_QUANTILES, dtype=torch.float64)).tolist()
    mean, std = float(sample.mean()), float(sample.std()) if sample.numel() > 1 else 0.0
    colour = is_colour(pixels)
    chroma, cast = 0.0, [0.0, 0.0, 0.0]
    if colour:
        planes = pixels.reshape(pixels.shape[0], -1)[:, :: max(1, pixels[0].numel() // _MAX_SAMPLES)].double()
        chroma = float((planes.max(0).values - planes.min(0).values).mean())
        if pixels.shape[0] == 3:
            means = planes.mean(1)
            cast = (means - means.mean()).tolist()
    noise = input_noise(pixels)
    span = white - black
    return np.array([black, white, span, black + span * mean, mean, std, *quantiles, float(colour), chroma, *cast,
                     float((sample <= 0.0).double().mean()), float((sample >= 1.0).double().mean()), noise,
                     noise * span, float(sample.min()), float(sample.max())], dtype=np.float64)


class _Trees:
    """One boosted ensemble: ``baseline`` plus the leaf value each tree sends ``x`` to."""

    def __init__(self, baseline: float, trees: Sequence[dict]) -> None:
        self.baseline = float(baseline)
        self.trees = [{key: np.asarray(tree[key]) for key in ("feature", "threshold", "left", "right", "value",
                                                             "leaf", "missing_left")} for tree in trees]

    def __call__(self, x: np.ndarray) -> float:
        total = self.baseline
        for tree in self.trees:
            node = 0
            while not tree["leaf"][node]:
                value = x[tree["feature"][node]]
                go_left = bool(tree["missing_left"][node]) if np.isnan(value) else value <= tree["threshold"][node]
                node = int(tree["left"][node] if go_left else tree["right"][node])
            total += float(tree["value"][node])
        return total


class LevelPrior:
    """The line ``(gain, offset)`` that gives a display image's stretched input its estimated true level.

    Args:
        spec: the prior as :mod:`monai_dpe.engines.level_prior_fit` writes it: ``format``, ``features``
            (must be :data:`FEATURE_NAMES`), and ``models``, one boosted ensemble per target (the
            truth's value at stretched 0, ``black``, and at stretched 1, ``white``).

    Example::

        prior = load_level_prior("bundle/models/level_prior.json")
        gain, offset = prior.line(stretched, level)  # the truth ~ offset + gain * stretched
    """

    def __init__(self, spec: dict) -> None:
        if spec.get("format") != LEVEL_PRIOR_FORMAT:
            raise ValueError(f"not a level prior of format {LEVEL_PRIOR_FORMAT!r}: format {spec.get('format')!r}.")
        if tuple(spec.get("features", ())) != FEATURE_NAMES:
            raise ValueError("the level prior was fitted on other features than this version computes.")
        models = spec.get("models", {})
        if set(models) != {"black", "white"}:
            raise ValueError(f"a level prior has models 'black' and 'white', got {sorted(models)}.")
        self.black, self.white = (_Trees(models[k]["baseline"], models[k]["trees"]) for k in ("black", "white"))
        self.info = spec.get("training", {})

    def predict(self, features: np.ndarray) -> tuple[float, float]:
        """``(black, white)``: the truth's values where the stretch put 0 and 1."""
        x = np.asarray(features, dtype=np.float64)
        return self.black(x), self.white(x)

    def line(self, image: torch.Tensor, level: Sequence[float] | torch.Tensor) -> tuple[float, float]:
        """``(gain, offset)`` of the estimated truth ``offset + gain * image`` of stretched ``image``."""
        black, white = self.predict(level_features(image, level))
        return white - black, black


def load_level_prior(path: str | os.PathLike | None) -> LevelPrior | None:
    """The :class:`LevelPrior` in JSON file ``path``; ``None`` for no path (the network's level stays)."""
    if path is None or str(path) == "":
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            spec = json.load(stream)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the level prior ({error}).") from error
    try:
        return LevelPrior(spec)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error
