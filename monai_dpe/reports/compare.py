"""Two sets of weights compared over degradation seeds: the means that a ship rule reads.

A ship rule compares a candidate with the shipped weights on the validation split under several
degradation seeds, ``evaluate.json`` run once per seed and weights (``--seed S --weights_path W``).
One seed's images draw one brightness, contrast and noise each, so a single report moves by tenths of
a dB between seeds; the rule reads means over the seeds. This module reads those ``metrics.json``
reports, pairs the candidate's with the reference's by seed (same split, images and presets, or it
refuses), and tabulates for each set the means over the seeds of:

- ``paper_psnr``, ``paper_structure_psnr``, ``paper_ssim``, ``paper_delta_e_rgb`` (colour images):
  the paper preset;
- ``radiology_psnr``: the radiology preset;
- ``clean_psnr_capped``: clean inputs, each image's PSNR capped at ``cap_db`` (60 dB, about an 8-bit
  file's rounding floor), so that a few images returned nearly bit for bit do not outweigh the rest;
- ``floor_failures``: paper-preset images whose structure PSNR is more than ``floor_db`` (0.5 dB)
  below their untouched input's, counted over all seeds (the issue's "never more than 0.5 dB below").

With margins (``paper_psnr=-0.1``: the candidate may lose at most 0.1 dB; ``paper_delta_e_rgb=0.1``:
it may gain at most 0.1 DeltaE; ``floor_failures=0``: no more failures than the reference) each
measure gets a verdict, and the command exits with status 1 when any margin fails.

Usage::

    python -m monai_dpe.reports.compare --reference ship_s*/metrics.json --candidate cand_s*/metrics.json \\
        --margins paper_psnr=-0.1 paper_delta_e_rgb=0.1 floor_failures=0 --output compare.md
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_dpe.engines.evaluation import CLEAN_PRESET, structure_margin
from monai_dpe.files import atomic_path, write_json

__all__ = ["MEASURES", "check_report", "seed_measures", "compare_reports", "format_comparison", "main"]

logger = logging.getLogger(__name__)

#: measure -> (what it is, whether higher is better)
MEASURES: dict[str, tuple[str, bool]] = {
    "paper_psnr": ("paper PSNR (dB)", True),
    "paper_structure_psnr": ("paper structure PSNR (dB)", True),
    "paper_ssim": ("paper SSIM", True),
    "paper_delta_e_rgb": ("paper DeltaE, colour images", False),
    "radiology_psnr": ("radiology PSNR (dB)", True),
    "clean_psnr_capped": ("clean PSNR, each image capped (dB)", True),
    "floor_failures": ("paper images losing structure, all seeds", False),
}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _name(image: Mapping[str, Any]) -> str:
    return image.get("name", image["source"])


def _floor_failures(paper: Sequence[Mapping[str, Any]], floor_db: float) -> dict[str, float] | None:
    """Paper images more than ``floor_db`` of structure below their untouched input; ``None`` where any is unscored."""
    margins = {_name(i): structure_margin(i) for i in paper}
    if not margins or any(m is None for m in margins.values()):
        return None  # e.g. evaluated with --baselines "[]": no untouched input to hold the output against
    return {name: m for name, m in margins.items() if m < -floor_db}


def seed_measures(report: Mapping[str, Any], cap_db: float = 60.0, floor_db: float = 0.5) -> dict[str, Any]:
    """:data:`MEASURES` of one evaluation report, with the names of its floor failures.

    A PSNR of ``None`` (output identical to its target: infinite) counts as ``cap_db``, for every
    preset; clean PSNRs are capped besides. A measure the report cannot score is ``None``.
    """
    images = report["images"]
    paper = [i for i in images if i["preset"] == "paper"]
    radiology = [i for i in images if i["preset"] == "radiology"]
    clean = [i for i in images if i["preset"] == CLEAN_PRESET]

    def psnr(image: Mapping[str, Any]) -> float:
        return cap_db if image["psnr"] is None else image["psnr"]

    def scored(group: Sequence[Mapping[str, Any]], key: str) -> list[float]:
        return [i[key] for i in group if i[key] is not None]  # None: a non-finite score, as the report writes it

    failures = _floor_failures(paper, floor_db)
    return {
        "paper_psnr": _mean([psnr(i) for i in paper]),
        "paper_structure_psnr": _mean(scored(paper, "structure_psnr")),
        "paper_ssim": _mean(scored(paper, "ssim")),
        "paper_delta_e_rgb": _mean(scored([i for i in paper if i.get("rgb")], "delta_e")),
        "radiology_psnr": _mean([psnr(i) for i in radiology]),
        "clean_psnr_capped": _mean([min(psnr(i), cap_db) for i in clean]),
        "floor_failures": None if failures is None else len(failures),
        "failed_images": failures or {},
    }


_SCORES = ("psnr", "structure_psnr", "ssim", "delta_e")


def _numeric(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_report(path: str, report: Any) -> None:
    """Refuse what is not an ``evaluate.json`` report, naming the file and what is wrong."""
    if not isinstance(report, Mapping):
        raise ValueError(f"{path}: not a metrics report (expected a JSON object)")
    missing = [key for key in ("seed", "split", "presets", "images") if key not in report]
    if missing:
        raise ValueError(f"{path}: no {', '.join(repr(k) for k in missing)}; not an evaluate.json report")
    if not isinstance(report["images"], list) or not report["images"]:
        raise ValueError(f"{path}: 'images' is not a non-empty list of per-image scores")
    for n, image in enumerate(report["images"]):
        if not isinstance(image, Mapping) or "preset" not in image or not ("name" in image or "source" in image):
            raise ValueError(f"{path}: image {n} is not a per-image record with a name and a preset")
        bad = [k for k in _SCORES if k not in image or not _numeric(image[k])]
        baselines = image.get("baselines") or {}
        if not isinstance(baselines, Mapping):
            bad.append("baselines")
        else:
            bad += [f"{name} {k}" for name, scores in baselines.items() for k in _SCORES
                    if not isinstance(scores, Mapping) or not _numeric(scores.get(k))]
        if bad:
            raise ValueError(f"{path}: image {n} ({_name(image)}) has no numeric {', '.join(bad)}")


def _seed_order(seed: Any) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def _by_seed(reports: Mapping[str, Mapping[str, Any]]) -> dict[Any, tuple[str, Mapping[str, Any]]]:
    """One report per seed, all of the same weights and datalist (a stray folder of other weights is refused)."""
    seeds: dict[Any, tuple[str, Mapping[str, Any]]] = {}
    for path, report in reports.items():
        seed = report["seed"]
        if seed in seeds:
            raise ValueError(f"{path}: seed {seed} again (also {seeds[seed][0]}); one report per seed")
        for key in ("weights", "datalist"):
            if seeds and report.get(key) != next(iter(seeds.values()))[1].get(key):
                first = next(iter(seeds.values()))
                raise ValueError(f"{path}: {key} {report.get(key)!r}, but {first[0]} has {first[1].get(key)!r}")
        seeds[seed] = (path, report)
    return seeds


def _pair_difference(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> str | None:
    """What a candidate report scored otherwise than its reference of the same seed, or ``None``."""
    if reference["split"] != candidate["split"]:
        return f"split {candidate['split']!r}, not {reference['split']!r}"
    if sorted(reference["presets"]) != sorted(candidate["presets"]):
        return f"presets {candidate['presets']}, not {reference['presets']}"
    items = [{(_name(i), i["preset"]) for i in r["images"]} for r in (reference, candidate)]
    if items[0] != items[1]:
        only = sorted(items[1] - items[0]) or sorted(items[0] - items[1])
        return f"other images ({len(items[1])} against {len(items[0])}; e.g. {only[0][0]}, {only[0][1]})"
    return None


def _row(measure: str, reference: Sequence[float], candidate: Sequence[float], margin: float | None) -> dict:
    """One measure pooled over the seeds (floor failures summed, the rest averaged), and its verdict."""
    pool = np.sum if measure == "floor_failures" else np.mean
    ref_value, cand_value = float(pool(reference)), float(pool(candidate))
    row = {"reference": ref_value, "candidate": cand_value, "difference": cand_value - ref_value,
           "per_seed_difference": [c - r for r, c in zip(reference, candidate)]}
    if margin is not None:
        higher_is_better = MEASURES[measure][1]
        shortfall = (margin - row["difference"]) if higher_is_better else (row["difference"] - margin)
        row.update(margin=margin, passed=bool(shortfall <= 1e-12), shortfall=max(float(shortfall), 0.0))
    return row


def compare_reports(reference: Mapping[str, Mapping[str, Any]], candidate: Mapping[str, Mapping[str, Any]],
                    margins: Mapping[str, float] | None = None, cap_db: float = 60.0,
                    floor_db: float = 0.5) -> dict[str, Any]:
    """Means over seeds of both sets, their differences, and a verdict per margin.

    Args:
        reference, candidate: report path -> parsed ``metrics.json``; one report per seed, the same
            seeds in both.
        margins: measure -> the most the candidate may fall behind (negative for higher-is-better
            measures, positive for DeltaE and floor failures; 0 asks for no worse).

    Raises:
        ValueError: naming the report, when one is malformed, a set mixes weights, seeds do not pair,
            or a pair scored other images, split or presets.
    """
    margins = dict(margins or {})
    unknown = sorted(set(margins) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown measures {unknown}; choose from {list(MEASURES)}")
    for path, report in {**reference, **candidate}.items():
        check_report(path, report)
    ref, cand = _by_seed(reference), _by_seed(candidate)
    if set(ref) != set(cand):
        raise ValueError(f"the seeds differ: reference {sorted(ref, key=_seed_order)}, "
                         f"candidate {sorted(cand, key=_seed_order)}")
    seeds = sorted(ref, key=_seed_order)
    for seed in seeds:
        difference = _pair_difference(ref[seed][1], cand[seed][1])
        if difference:
            raise ValueError(f"{cand[seed][0]}: scored {difference} (against {ref[seed][0]}, seed {seed})")
    per_seed = {name: {seed: seed_measures(runs[seed][1], cap_db, floor_db) for seed in seeds}
                for name, runs in (("reference", ref), ("candidate", cand))}
    rows = {}
    for measure in MEASURES:
        values = {name: [per_seed[name][s][measure] for s in seeds] for name in per_seed}
        if not any(v is None for vs in values.values() for v in vs):  # None: e.g. no colour images to score
            rows[measure] = _row(measure, values["reference"], values["candidate"], margins.get(measure))
    missing = sorted(set(margins) - set(rows))
    if missing:
        raise ValueError(f"margins given for {missing}, which these reports cannot score")
    failed = {name: {str(s): per_seed[name][s]["failed_images"] for s in seeds} for name in per_seed}
    verdict = None if not margins else all(rows[m]["passed"] for m in margins)
    return {"seeds": seeds, "cap_db": cap_db, "floor_db": floor_db, "measures": rows, "floor_failures": failed,
            "passed": verdict}


def _number(measure: str, value: float, signed: bool = False) -> str:
    digits = 0 if measure == "floor_failures" else 4 if measure == "paper_ssim" else 3
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_comparison(result: Mapping[str, Any], reference_name: str = "reference",
                      candidate_name: str = "candidate") -> str:
    """The comparison as Markdown: one row per measure, the per-seed differences, and the floor failures."""
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [f"Means over degradation seeds {seeds} (clean PSNR capped at {result['cap_db']:g} dB; a floor "
             f"failure is a paper-preset image more than {result['floor_db']:g} dB of structure below its "
             f"untouched input, counted over the seeds).", "",
             f"| measure | {reference_name} | {candidate_name} | difference | per seed | margin | verdict |",
             "|---|---|---|---|---|---|---|"]
    for measure, row in result["measures"].items():
        spread = " ".join(_number(measure, d, True) for d in row["per_seed_difference"])
        margin, verdict = "", ""
        if "margin" in row:
            margin = _number(measure, row["margin"], True)
            shortfall = _number(measure, row["shortfall"])
            shortfall = shortfall if float(shortfall) > 0 else f"less than {_number(measure, 0.0)[:-1]}1"
            verdict = "ok" if row["passed"] else f"**fails by {shortfall}**"
        lines.append(f"| {MEASURES[measure][0]} | {_number(measure, row['reference'])} | "
                     f"{_number(measure, row['candidate'])} | {_number(measure, row['difference'], True)} | "
                     f"{spread} | {margin} | {verdict} |")
    lines.append("")
    for name, label in (("reference", reference_name), ("candidate", candidate_name)):
        found = [f"{img} ({m:+.2f} dB, seed {seed})" for seed, imgs in result["floor_failures"][name].items()
                 for img, m in imgs.items()]
        lines.append(f"Floor failures, {label}: {', '.join(found) if found else 'none'}.")
    if result["passed"] is not None:
        lines += ["", f"Verdict: {candidate_name} {'passes' if result['passed'] else 'fails'} the margins."]
    return "\n".join(lines) + "\n"


def _read(paths: Sequence[str]) -> dict[str, Any]:
    """Parsed reports by file (a folder stands for its metrics.json); a file given twice is refused."""
    reports: dict[str, Any] = {}
    for path in paths:
        file = Path(path) / "metrics.json" if Path(path).is_dir() else Path(path)
        if str(file.resolve()) in {str(Path(p).resolve()) for p in reports}:
            raise ValueError(f"{file}: given twice")
        try:
            reports[str(file)] = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{file}: not a readable metrics report ({err})") from None
    return reports


def _finite(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected a finite number")
    return value


def _margin(text: str) -> tuple[str, float]:
    name, sign, value = text.partition("=")
    if not sign or name.strip() not in MEASURES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MEASURE=NUMBER with MEASURE one of {', '.join(MEASURES)}")
    return name.strip(), _finite(value, f"margin {name.strip()}")


def _non_negative(text: str) -> float:
    value = _finite(text, "value")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of at least 0")
    return value


def _check_output(output: str, inputs: Sequence[str]) -> None:
    """Refuse an output that would overwrite a report being read or land in a folder that is not there."""
    table = Path(output)
    if table.suffix.lower() == ".json":
        raise ValueError(f"--output {output}: give the Markdown file's name; the JSON is written beside it")
    if table.is_dir() or not table.parent.is_dir():
        raise ValueError(f"--output {output}: not a file name in a folder that exists")
    written = {str(table.resolve()), str(table.with_suffix(".json").resolve())}
    clash = [p for p in inputs if str(Path(p).resolve()) in written]
    if clash:
        raise ValueError(f"--output {output}: would overwrite the report {clash[0]}")


def _write(output: str, text: str, result: Mapping[str, Any]) -> None:
    """The table and its JSON, each through a temporary file and a rename (``write_json``)."""
    write_json(result, Path(output).with_suffix(".json"))
    with atomic_path(output, suffix=".partial") as partial:
        partial.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0: compared (and every margin met); 1: a margin failed; 2: the input was refused."""
    parser = argparse.ArgumentParser(prog="python -m monai_dpe.reports.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", nargs="+", required=True, help="metrics.json per seed (or their folders)")
    parser.add_argument("--candidate", nargs="+", required=True, help="metrics.json per seed (or their folders)")
    parser.add_argument("--margins", nargs="*", type=_margin, default=[], metavar="MEASURE=NUMBER",
                        help=f"the most the candidate may fall behind; measures: {', '.join(MEASURES)}")
    parser.add_argument("--names", nargs=2, default=("reference", "candidate"), metavar=("REFERENCE", "CANDIDATE"))
    parser.add_argument("--cap-db", type=_non_negative, default=60.0, help="cap on each image's PSNR (clean, infinite)")
    parser.add_argument("--floor-db", type=_non_negative, default=0.5,
                        help="structure loss that counts as a floor failure")
    parser.add_argument("--output", help="also write the Markdown table here, and the numbers beside it as JSON")
    args = parser.parse_args(argv)
    try:
        names = [name for name, _ in args.margins]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"--margins gives {', '.join(repeated)} more than once")
        reference, candidate = _read(args.reference), _read(args.candidate)
        if args.output:
            _check_output(args.output, [*reference, *candidate])
        result = compare_reports(reference, candidate, dict(args.margins), args.cap_db, args.floor_db)
        text = format_comparison(result, *args.names)
        if args.output:
            _write(args.output, text, result)
    except (ValueError, OSError) as err:
        parser.exit(2, f"compare: {err}\n")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # the table is the output
    logger.info("%s", text.rstrip("\n"))
    return 1 if result["passed"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
