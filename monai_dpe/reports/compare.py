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

from monai_dpe.engines.evaluation import CLEAN_PRESET
from monai_dpe.files import atomic_path, write_json

__all__ = ["MEASURES", "seed_measures", "compare_reports", "format_comparison", "main"]

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


def _floor_margin(image: Mapping[str, Any]) -> float | None:
    """Structure PSNR of the output minus that of the untouched input, where the report holds both."""
    untouched = (image.get("baselines", {}).get("input") or {}).get("structure_psnr")
    if image.get("structure_psnr") is None or untouched is None:
        return None
    return float(image["structure_psnr"] - untouched)


def seed_measures(report: Mapping[str, Any], cap_db: float = 60.0, floor_db: float = 0.5) -> dict[str, Any]:
    """:data:`MEASURES` of one evaluation report, with the names of its floor failures.

    A clean image's PSNR of ``None`` (output identical to its input: infinite) counts as ``cap_db``.
    """
    images = report["images"]
    paper = [i for i in images if i["preset"] == "paper"]
    radiology = [i for i in images if i["preset"] == "radiology"]
    clean = [i for i in images if i["preset"] == CLEAN_PRESET]
    margins = {i.get("name", i["source"]): _floor_margin(i) for i in paper}
    failures = {name: m for name, m in margins.items() if m is not None and m < -floor_db}
    return {
        "paper_psnr": _mean([i["psnr"] for i in paper if i["psnr"] is not None]),
        "paper_structure_psnr": _mean([i["structure_psnr"] for i in paper if i["structure_psnr"] is not None]),
        "paper_ssim": _mean([i["ssim"] for i in paper]),
        "paper_delta_e_rgb": _mean([i["delta_e"] for i in paper if i.get("rgb")]),
        "radiology_psnr": _mean([i["psnr"] for i in radiology if i["psnr"] is not None]),
        "clean_psnr_capped": _mean([cap_db if i["psnr"] is None else min(i["psnr"], cap_db) for i in clean]),
        "floor_failures": len(failures),
        "failed_images": failures,
    }


def _key(report: Mapping[str, Any]) -> tuple:
    """What two paired reports must share: split, presets and the scored (image, preset) pairs."""
    items = sorted((i.get("name", i["source"]), i["preset"]) for i in report["images"])
    return report.get("split"), tuple(report.get("presets", ())), tuple(items)


def _by_seed(reports: Mapping[str, Mapping[str, Any]]) -> dict[Any, tuple[str, Mapping[str, Any]]]:
    seeds: dict[Any, tuple[str, Mapping[str, Any]]] = {}
    for path, report in reports.items():
        seed = report.get("seed")
        if seed in seeds:
            raise ValueError(f"{path}: seed {seed} again (also {seeds[seed][0]}); one report per seed")
        seeds[seed] = (path, report)
    return seeds


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
        ValueError: naming the report, when seeds do not pair or a pair scored other images, split or presets.
    """
    margins = dict(margins or {})
    unknown = sorted(set(margins) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown measures {unknown}; choose from {list(MEASURES)}")
    ref, cand = _by_seed(reference), _by_seed(candidate)
    if set(ref) != set(cand):
        raise ValueError(f"the seeds differ: reference {sorted(ref, key=str)}, candidate {sorted(cand, key=str)}")
    seeds = sorted(ref, key=str)
    for seed in seeds:
        if _key(ref[seed][1]) != _key(cand[seed][1]):
            raise ValueError(f"{cand[seed][0]}: scored other images, split or presets than {ref[seed][0]} (seed {seed})")
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
            verdict = "ok" if row["passed"] else f"**fails by {_number(measure, row['shortfall'])}**"
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


def _read(paths: Sequence[str]) -> dict[str, dict]:
    reports = {}
    for path in paths:
        file = Path(path) / "metrics.json" if Path(path).is_dir() else Path(path)
        try:
            reports[str(file)] = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{file}: not a readable metrics report ({err})") from None
        if "images" not in reports[str(file)]:
            raise ValueError(f"{file}: holds no per-image scores ('images'); not an evaluate.json report")
    return reports


def _margin(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MEASURE=NUMBER, e.g. paper_psnr=-0.1") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_dpe.reports.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--reference", nargs="+", required=True, help="metrics.json per seed (or their folders)")
    parser.add_argument("--candidate", nargs="+", required=True, help="metrics.json per seed (or their folders)")
    parser.add_argument("--margins", nargs="*", type=_margin, default=[], metavar="MEASURE=NUMBER",
                        help=f"the most the candidate may fall behind; measures: {', '.join(MEASURES)}")
    parser.add_argument("--names", nargs=2, default=("reference", "candidate"), metavar=("REFERENCE", "CANDIDATE"))
    parser.add_argument("--cap-db", type=float, default=60.0, help="cap on each clean image's PSNR")
    parser.add_argument("--floor-db", type=float, default=0.5, help="structure loss that counts as a floor failure")
    parser.add_argument("--output", help="also write the Markdown table here, and the numbers beside it as JSON")
    args = parser.parse_args(argv)
    if args.output and Path(args.output).suffix == ".json":
        parser.error(f"--output {args.output}: give the Markdown file's name; the JSON is written beside it")
    try:
        result = compare_reports(_read(args.reference), _read(args.candidate), dict(args.margins),
                                 args.cap_db, args.floor_db)
    except ValueError as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    text = format_comparison(result, *args.names)
    print(text, end="")
    if args.output:
        with atomic_path(args.output, suffix=".partial") as partial:
            partial.write_text(text)
        write_json(result, Path(args.output).with_suffix(".json"))
    return 1 if result["passed"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
