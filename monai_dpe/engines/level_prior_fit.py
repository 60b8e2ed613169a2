"""Fit the bundle's level prior (:class:`~monai_dpe.transforms.LevelPrior`) on the training split.

Each training image is loaded, degraded and stretched exactly as validation does it (the bundle's
``validate#preprocessing``: the file's bit depth, 8- or 16-bit rounding, the intensity policy), under
the presets and seeds asked for. Its row is :func:`~monai_dpe.transforms.level_features` of the
stretched input, and its targets are the truth's values at stretched 0 and 1 (the least-squares line
from the stretched input to the clean image, :func:`~monai_dpe.transforms.input_fit`). A clean draw
teaches the prior that an undegraded input keeps its level. Sources count by the square root of their
size, so four large collections do not decide every leaf. Only display images (8-bit photos, slides,
DICOM) take part: a quantitative image keeps its units' level.

Usage::

    python -m monai_dpe.engines.level_prior_fit --bundle_root bundle --dataset_dir corpus \\
        --output bundle/models/level_prior.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from monai_dpe.errors import UsageError, one_line, require_extra
from monai_dpe.files import atomic_path
from monai_dpe.transforms.input_fit import input_fit
from monai_dpe.transforms.level_prior import FEATURE_NAMES, LEVEL_PRIOR_FORMAT, LevelPrior, level_features

__all__ = ["BOOSTING", "collect_rows", "fit_level_prior", "main"]

logger = logging.getLogger(__name__)

#: scikit-learn ``HistGradientBoostingRegressor`` settings, chosen on the validation split (CHANGELOG 0.22.0)
BOOSTING = {"max_iter": 150, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 80,
            "l2_regularization": 1.0, "early_stopping": False, "random_state": 0}


def _validation_pipeline(bundle_root: str, dataset_dir: str, datalist: str | None, split: str, preset: str, seed: int):
    """The datalist and preprocessing that ``train.json``'s validation uses for ``split`` under ``preset``
    (``datalist``: a datalist file in place of the bundle's)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_root, "configs", "train.json"))
    parser.update({"bundle_root": bundle_root, "dataset_dir": dataset_dir, "seed": seed,
                   "validate#split": split, "validate#presets": [preset]})
    if datalist is not None:
        parser["datalist"] = datalist
    return parser.get_parsed_content("validate#datalist"), parser.get_parsed_content("validate#preprocessing")


def collect_rows(bundle_root: str, dataset_dir: str, draws: Sequence[tuple[str, int]], split: str = "training",
                 datalist: str | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, targets ``(black, white)`` and sources of the display images of ``split``, one row per
    image and ``(preset, seed)`` draw (``datalist``: a datalist file in place of the bundle's)."""
    from monai.data import Dataset
    from tqdm import tqdm

    features, targets, sources = [], [], []
    for preset, seed in draws:
        items, preprocessing = _validation_pipeline(bundle_root, dataset_dir, datalist, split, preset, seed)
        dataset = Dataset(items, preprocessing)
        for index in tqdm(range(len(dataset)), desc=f"{preset} seed {seed}", disable=not progress):
            item = dataset[index]
            image, level = item["image"], torch.as_tensor(item["level"], dtype=torch.float64).reshape(-1)
            if level[0] < 0.5:  # a quantitative image keeps its units' level: nothing to learn
                continue
            gain, offset = input_fit(image, item["target"])
            features.append(level_features(image, level))
            targets.append((offset, offset + gain))
            sources.append(str(item.get("source", "")))
    return np.array(features), np.array(targets), sources


def _tree_spec(predictor) -> dict:
    """One fitted tree as JSON-ready arrays (scikit-learn's ``TreePredictor.nodes``)."""
    nodes = predictor.nodes
    return {"feature": nodes["feature_idx"].tolist(), "threshold": nodes["num_threshold"].tolist(),
            "left": nodes["left"].tolist(), "right": nodes["right"].tolist(), "value": nodes["value"].tolist(),
            "leaf": nodes["is_leaf"].astype(bool).tolist(), "missing_left": nodes["missing_go_to_left"].astype(bool).tolist()}


def fit_level_prior(features: np.ndarray, targets: np.ndarray, sources: Sequence[str],
                    training: dict | None = None) -> dict:
    """The level prior's JSON spec, fitted to ``targets`` (columns ``black``, ``white``) from ``features``."""
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import HistGradientBoostingRegressor

    counts = Counter(sources)
    weights = np.array([1.0 / np.sqrt(counts[s]) for s in sources])
    fitted = {name: HistGradientBoostingRegressor(**BOOSTING).fit(features, targets[:, column], sample_weight=weights)
              for column, name in enumerate(("black", "white"))}
    models = {}
    for name, model in fitted.items():
        if any(len(trees) != 1 for trees in model._predictors):  # a regressor grows one tree per iteration
            raise RuntimeError("expected one tree per boosting iteration.")
        models[name] = {"baseline": float(np.ravel(model._baseline_prediction)[0]),
                        "trees": [_tree_spec(trees[0]) for trees in model._predictors]}
    info = {"rows": len(features), "sources": dict(sorted(counts.items())), "boosting": BOOSTING,
            "scikit_learn": sklearn_version, **(training or {})}
    spec = {"format": LEVEL_PRIOR_FORMAT, "features": list(FEATURE_NAMES), "models": models, "training": info}
    check = features[np.random.default_rng(0).permutation(len(features))[:500]]  # rows from everywhere
    prior = LevelPrior(spec)
    walked = np.array([prior.predict(x) for x in check])
    if not np.allclose(walked, np.stack([fitted[k].predict(check) for k in ("black", "white")], 1), atol=1e-9):
        raise RuntimeError("the exported trees do not reproduce scikit-learn's predictions.")
    return spec


def _draws(texts: Sequence[str]) -> list[tuple[str, int]]:
    """``PRESET:SEED`` texts as ``(preset, seed)``; a preset the validation degradation does not know is refused."""
    from monai_dpe.engines.evaluation import CLEAN_PRESET
    from monai_dpe.transforms.perceptual import PRESETS

    draws = []
    for text in texts:
        parts = text.split(":")
        if len(parts) != 2 or parts[0] not in (*PRESETS, CLEAN_PRESET) or not parts[1].lstrip("-").isdigit():
            raise UsageError(f"--draws {text}: a draw is PRESET:SEED with PRESET one of "
                             f"{', '.join((*PRESETS, CLEAN_PRESET))} and SEED an integer")
        draws.append((parts[0], int(parts[1])))
    return draws


def _fit(args: argparse.Namespace) -> int:
    """Check everything that can be checked before ten minutes of reading, then read, fit and write."""
    require_extra("sklearn", "make level-prior (the prior's gradient boosting)")
    draws = _draws(args.draws)
    if not os.path.isfile(os.path.join(args.bundle_root, "configs", "train.json")):
        raise UsageError(f"{args.bundle_root}: not a monai-dpe bundle (no configs/train.json)")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UsageError(f"--output {args.output}: its folder {folder} is not a writable folder")
    features, targets, sources = collect_rows(args.bundle_root, args.dataset_dir, draws, datalist=args.datalist,
                                              progress=not args.no_progress)
    if len(features) == 0:
        raise UsageError(f"no display images in the training split of {args.dataset_dir}")
    spec = fit_level_prior(features, targets, sources, {"split": "training", "draws": list(args.draws)})
    with atomic_path(args.output, suffix=".partial") as partial, open(partial, "w", encoding="utf-8") as stream:
        json.dump(spec, stream)  # compact: files.write_json indents, which would triple the trees' size
    logger.info("level prior: %d rows from %d sources -> %s", len(features), len(set(sources)), args.output)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle_root", default="bundle")
    parser.add_argument("--dataset_dir", default="corpus")
    parser.add_argument("--datalist", default=None, help="a datalist in place of the bundle's configs/datalist.json")
    parser.add_argument("--output", default=os.path.join("bundle", "models", "level_prior.json"))
    parser.add_argument("--draws", nargs="+", default=["paper:0", "paper:1", "clean:0"],
                        help="PRESET:SEED degradation draws of the training split (default: paper 0 and 1, clean)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("level_prior_fit: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _fit(args)
    except UsageError as error:
        logger.error("error: %s", error)
        return 2
    except (OSError, ValueError, RuntimeError) as error:  # an unreadable corpus file, a datalist, the bundle's config
        logger.error("error: %s", one_line(error))
        return 1
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
