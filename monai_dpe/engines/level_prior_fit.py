"""Fit the bundle's level prior (:class:`~monai_dpe.transforms.LevelPrior`) on the training split.

Each training image is loaded, degraded and stretched exactly as validation does it (the bundle's
``validate#preprocessing``: the file's bit depth, 8- or 16-bit rounding, the intensity policy), under
the presets and seeds asked for. Its row is :func:`~monai_dpe.transforms.level_features` of the
stretched input, and its targets are the truth's values at stretched 0 and 1 (the least-squares line
from the stretched input to the clean image, :func:`~monai_dpe.transforms.input_fit`). A clean draw
teaches the prior that an undegraded input keeps its level. Sources count by the square root of their
size, so four large collections do not decide every leaf. Only display images (8-bit photos, slides,
DICOM) take part: a quantitative image keeps its units' level.

``calibrate_source`` (``monai-dpe bundle calibrate``) fits a prior to one user's source instead: its
clean images, degraded as validation degrades them, give the prior's mean error on that source, and a
constant tree that removes it is added to each ensemble. The level of a source the training split does
not hold is what the prior gets most wrong (a dim smear and a darkened bright one read alike), and a
few clean images of it say which.

``--score`` measures priors instead of fitting one: each prior's line alone (no network), beside the
stretch's, the source mean's and the best line's, on a split's display images, as PSNR and DeltaE per
source. It tells whether a refit carries to sources the training split does not hold, before a full
evaluation, and how much of the remaining error no estimate of a source's level could take away.

Usage::

    python -m monai_dpe.engines.level_prior_fit --bundle_root bundle --dataset_dir corpus \\
        --output bundle/models/level_prior.json
    python -m monai_dpe.engines.level_prior_fit --score bundle/models/level_prior.json new_prior.json \\
        --split validation --draws paper:0 paper:1 paper:2 paper:3 paper:4 clean:0
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from monai_dpe.errors import UsageError, one_line, require_extra
from monai_dpe.files import atomic_path
from monai_dpe.transforms.input_fit import input_fit, is_colour
from monai_dpe.transforms.level_prior import (FEATURE_NAMES, LEVEL_PRIOR_FORMAT, LevelPrior, level_features,
                                              load_level_prior)

__all__ = ["BOOSTING", "CALIBRATED_PRIOR_WEIGHT", "CALIBRATION_DRAWS", "MIN_CALIBRATION_IMAGES", "MIN_CALIBRATION_SPAN",
           "PRIOR_WEIGHT_CONFIGS", "calibrate_level_prior", "calibrate_source", "collect_rows", "fit_level_prior",
           "line_scores", "main", "set_prior_weight"]

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


def _display_items(bundle_root: str, dataset_dir: str, draws: Sequence[tuple[str, int]], split: str,
                   datalist: str | None, progress: bool) -> Iterator[tuple[str, int, dict, torch.Tensor]]:
    """``(preset, seed, item, level)`` for each display image of ``split`` and draw, loaded, degraded and
    stretched as validation does it; a quantitative image keeps its units' level, so no prior applies to it."""
    from monai.data import Dataset
    from tqdm import tqdm

    for preset, seed in draws:
        items, preprocessing = _validation_pipeline(bundle_root, dataset_dir, datalist, split, preset, seed)
        dataset = Dataset(items, preprocessing)
        for index in tqdm(range(len(dataset)), desc=f"{preset} seed {seed}", disable=not progress):
            item = dataset[index]
            level = torch.as_tensor(item["level"], dtype=torch.float64).reshape(-1)
            if level[0] >= 0.5:
                yield preset, seed, item, level


def collect_rows(bundle_root: str, dataset_dir: str, draws: Sequence[tuple[str, int]], split: str = "training",
                 datalist: str | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, targets ``(black, white)`` and sources of the display images of ``split``, one row per
    image and ``(preset, seed)`` draw (``datalist``: a datalist file in place of the bundle's)."""
    features, targets, sources = [], [], []
    for _, _, item, level in _display_items(bundle_root, dataset_dir, draws, split, datalist, progress):
        gain, offset = input_fit(item["image"], item["target"])
        features.append(level_features(item["image"], level))
        targets.append((offset, offset + gain))
        sources.append(str(item.get("source", "")))
    return np.array(features), np.array(targets), sources


def _line_score(image: torch.Tensor, target: torch.Tensor, gain: float, offset: float) -> tuple[float, float]:
    """PSNR and DeltaE (NaN for a grey image) of ``offset + gain * image``, clipped to [0, 1], against ``target``."""
    from monai.metrics import PSNRMetric

    from monai_dpe.metrics import DeltaEMetric

    estimate = (image.float() * gain + offset).clamp(0.0, 1.0)[None]
    truth = target.float()[None]
    psnr = float(PSNRMetric(max_val=1.0)(estimate, truth).item())
    colour = image.shape[0] == 3 and is_colour(image)
    return psnr, float(DeltaEMetric()(estimate, truth).item()) if colour else float("nan")


def line_scores(bundle_root: str, dataset_dir: str, priors: Mapping[str, LevelPrior], draws: Sequence[tuple[str, int]],
                split: str = "validation", datalist: str | None = None, progress: bool = True) -> list[dict]:
    """One row per display image of ``split`` and draw: its source, preset, and the PSNR and DeltaE of the
    line alone of the stretch (the input as stretched), each of ``priors`` (name to prior), the source
    mean (each source's mean true line under the preset, over these rows: a level that knows the source
    exactly and nothing of the image) and the best line (the least-squares fit to each image's truth,
    the most a level can give).

    The source mean needs every row's true line first, so the split is read twice (the draws are seeded).
    """
    rows, truths = [], {}
    for preset, seed, item, level in _display_items(bundle_root, dataset_dir, draws, split, datalist, progress):
        image, target = _image_and_target(item)
        best = input_fit(image, target)
        lines = {"stretch": (1.0, 0.0), **{name: prior.line(image, level) for name, prior in priors.items()}}
        scores = {name: _line_score(image, target, *line) for name, line in lines.items()}
        rows.append({"source": str(item.get("source", "")), "preset": preset, "seed": seed, "scores": scores,
                     "best": _line_score(image, target, *best)})
        truths.setdefault((rows[-1]["source"], preset), []).append((best[1], best[1] + best[0]))  # (black, white)
    means = {key: np.mean(values, axis=0) for key, values in truths.items()}
    changed = RuntimeError("the split read differently the second time; its files changed while it was scored.")
    count = 0
    for count, (preset, seed, item, _) in enumerate(_display_items(bundle_root, dataset_dir, draws, split, datalist,
                                                                   progress), start=1):
        row = rows[count - 1] if count <= len(rows) else {}
        if (row.get("source"), row.get("preset"), row.get("seed")) != (str(item.get("source", "")), preset, seed):
            raise changed
        black, white = means[row["source"], preset]
        row["scores"]["source mean"] = _line_score(*_image_and_target(item), float(white - black), float(black))
        row["scores"]["best line"] = row.pop("best")
    if count != len(rows):
        raise changed
    return rows


def _image_and_target(item: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The stretched input and the truth of a validation item, as plain tensors."""
    return item["image"].as_subclass(torch.Tensor), torch.as_tensor(item["target"]).as_subclass(torch.Tensor)


def score_table(rows: Sequence[dict]) -> str:
    """``rows`` of :func:`line_scores` as a Markdown table: mean PSNR / DeltaE per preset and source, then overall."""
    names = list(rows[0]["scores"]) if rows else []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["preset"], row["source"]), []).append(row)
        groups.setdefault((row["preset"], "all display images"), []).append(row)

    def cell(members: list[dict], name: str) -> str:
        psnr = np.mean([m["scores"][name][0] for m in members])
        delta_e = [m["scores"][name][1] for m in members if not np.isnan(m["scores"][name][1])]
        return f"{psnr:.2f} / {np.mean(delta_e):.2f}" if delta_e else f"{psnr:.2f}"

    lines = ["| preset | source | n | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    order = sorted(groups, key=lambda group: (group[0], group[1] == "all display images", group[1]))  # "all" last
    for preset, source in order:
        members = groups[preset, source]
        lines.append(f"| {preset} | {source} | {len(members)} | " + " | ".join(cell(members, n) for n in names) + " |")
    return "\n".join(lines)


#: the degradation draws of each calibration image: the paper preset, whose affine level the prior undoes
CALIBRATION_DRAWS = tuple(("paper", seed) for seed in range(5))
#: a calibrated bundle's ``level_prior_weight``: its prior knows the source, so it gives the whole level
#: (RULE10 in the changelog: +1.07 dB on validation halves against the shipped 0.5, DeltaE lower, no floor failure)
CALIBRATED_PRIOR_WEIGHT = 1.0
#: the bundle configs that set ``level_prior_weight`` (inference, and the trainer's validation)
PRIOR_WEIGHT_CONFIGS = ("inference.json", "train.json")
MIN_CALIBRATION_IMAGES = 3  # fewer display images give a mean error that is mostly the images' own
#: the least span of a calibration image's truth line (13 grey levels): a flat image has no level to learn from
MIN_CALIBRATION_SPAN = 0.05


def calibrate_level_prior(spec: dict, features: np.ndarray, targets: np.ndarray, info: dict | None = None) -> dict:
    """``spec`` with its mean error on the rows ``features``, ``targets`` (one source's) removed.

    The correction is one more tree per ensemble, a single leaf holding the mean of ``target -
    prediction``: the file stays a prior of the same format that any reader walks, and calibrating
    again corrects what the last calibration left. ``info`` is recorded under ``training.calibrations``.
    """
    prior = LevelPrior(spec)
    error = (np.asarray(targets, dtype=np.float64) - np.array([prior.predict(x) for x in features])).mean(0)
    models = {}
    for column, name in enumerate(("black", "white")):
        model = spec["models"][name]
        leaf = {"feature": [0], "threshold": [0.0], "left": [0], "right": [0], "value": [float(error[column])],
                "leaf": [True], "missing_left": [False]}  # a tree of one leaf: the same shift for every image
        models[name] = {**model, "trees": [*model["trees"], leaf]}
    training = dict(spec.get("training", {}))
    record = {"rows": len(features), "black_shift": float(error[0]), "white_shift": float(error[1]), **(info or {})}
    training["calibrations"] = [*training.get("calibrations", []), record]
    return {**spec, "models": models, "training": training}


def calibrate_source(bundle_root: str, folder: str, progress: bool = True) -> dict:
    """The bundle's prior (``models/level_prior.json``) calibrated on the clean images under ``folder``.

    Every image or volume ``folder`` holds is one clean example of the source; each is degraded by
    :data:`CALIBRATION_DRAWS` through the bundle's validation preprocessing, as the prior's own rows
    were. Quantitative images (which keep their units' level) do not count, and a copy of a file counts
    once. A file that cannot be read, or whose truth spans less than :data:`MIN_CALIBRATION_SPAN` (a
    flat image, whose "level" would drag the source's to it), is refused by name, as are fewer than
    :data:`MIN_CALIBRATION_IMAGES` display images.
    """
    import tempfile

    prior_path = os.path.join(bundle_root, "models", "level_prior.json")
    spec = _read_spec(prior_path)
    items = _calibration_items(folder)
    with tempfile.TemporaryDirectory() as scratch:
        datalist_path = os.path.join(scratch, "datalist.json")
        with open(datalist_path, "w", encoding="utf-8") as stream:
            json.dump({"training": items}, stream)
        features, targets, names = collect_rows(bundle_root, folder, CALIBRATION_DRAWS, datalist=datalist_path,
                                                progress=progress)
    spans = targets[:, 1] - targets[:, 0]
    for name in dict.fromkeys(names):
        span = float(np.mean(spans[np.asarray(names) == name]))
        if span < MIN_CALIBRATION_SPAN:
            raise UsageError(f"{os.path.join(folder, name)}: no contrast to calibrate on (its levels span {span:.3f} "
                             f"of full scale, under {MIN_CALIBRATION_SPAN}); leave flat images out")
    images = len(features) // len(CALIBRATION_DRAWS)  # one row per image and draw
    if images < MIN_CALIBRATION_IMAGES:
        raise UsageError(f"{folder}: {images} display image(s) to calibrate on; at least {MIN_CALIBRATION_IMAGES} "
                         f"clean images of the source are needed (quantitative images keep their own level)")
    return calibrate_level_prior(spec, features, targets, {"images": images, "folder": os.path.abspath(folder),
                                                           "draws": [f"{p}:{s}" for p, s in CALIBRATION_DRAWS]})


def _calibration_items(folder: str) -> list[dict]:
    """Datalist items of every image under ``folder``, each file once; an unusable file or none is refused."""
    from monai_dpe.data.datalist import datalist_from_folder
    from monai_dpe.networks.weights import sha256_of

    try:
        found = datalist_from_folder(folder, validation_fraction=0.0, skip_bad=False)
    except ValueError as err:  # a file LoadImage cannot use: every file counts, so none is left out quietly
        raise UsageError(one_line(err)) from err
    items, seen = [], {}
    for item in [*found.get("training", []), *found.get("validation", [])]:  # it always keeps one file apart
        digest = sha256_of(os.path.join(folder, item["image"]))
        if digest in seen:
            logger.warning("%s is a copy of %s; counted once", item["image"], seen[digest])
            continue
        seen[digest] = item["image"]
        items.append({**item, "source": item["image"]})  # rows name their image: a flat one is refused by name
    if not items:
        raise UsageError(f"{folder}: no images to calibrate on")
    return items


def set_prior_weight(config_text: str, weight: float) -> str:
    """``config_text`` (a bundle config's JSON) with its ``level_prior_weight`` set to ``weight``.

    The one definition is replaced in the text, so the file keeps its layout for the people who read
    it (``json.dump`` would re-indent every list); a config without exactly one is refused.
    """
    import re

    pattern = re.compile(r'("level_prior_weight"\s*:\s*)(-?[0-9][0-9.eE+-]*)')
    if len(pattern.findall(config_text)) != 1:
        raise ValueError("expected one numeric \"level_prior_weight\" in the config")
    text = pattern.sub(lambda match: f"{match.group(1)}{weight!r}", config_text)
    if json.loads(text).get("level_prior_weight") != weight:
        raise ValueError("\"level_prior_weight\" is not a top-level setting of the config")
    return text


def _read_spec(path: str) -> dict:
    """The JSON spec of the prior at ``path``, checked as :class:`LevelPrior` checks it."""
    load_level_prior(path)  # one line naming the file if it is missing or not a prior
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


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


def _score(args: argparse.Namespace) -> int:
    """Score the line alone of each prior in ``args.score`` on ``args.split`` and write the table to stdout."""
    draws = _draws(args.draws)
    if not os.path.isfile(os.path.join(args.bundle_root, "configs", "train.json")):
        raise UsageError(f"{args.bundle_root}: not a monai-dpe bundle (no configs/train.json)")
    priors = {path: load_level_prior(path) for path in args.score}  # an unreadable prior: one line, before reading
    rows = line_scores(args.bundle_root, args.dataset_dir, priors, draws, args.split, args.datalist,
                       progress=not args.no_progress)
    if not rows:
        raise UsageError(f"no display images in the {args.split} split of {args.dataset_dir}")
    sys.stdout.write(f"Line alone, PSNR / DeltaE (RGB images), {args.split} split, draws {' '.join(args.draws)}\n\n")
    sys.stdout.write(score_table(rows) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle_root", default="bundle")
    parser.add_argument("--dataset_dir", default="corpus")
    parser.add_argument("--datalist", default=None, help="a datalist in place of the bundle's configs/datalist.json")
    parser.add_argument("--output", default=os.path.join("bundle", "models", "level_prior.json"))
    parser.add_argument("--draws", nargs="+", default=["paper:0", "paper:1", "clean:0"],
                        help="PRESET:SEED degradation draws of the training split (default: paper 0 and 1, clean)")
    parser.add_argument("--score", nargs="+", metavar="PRIOR", default=None,
                        help="instead of fitting, score these priors' lines alone on --split (--draws its draws)")
    parser.add_argument("--split", default="validation", help="the split --score reads (default: validation)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("level_prior_fit: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _score(args) if args.score else _fit(args)
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
