"""Whether ``monai-dpe bundle calibrate`` helps a source: calibrate on half of its images, score the other half.

For each source of a split with at least ``--min-images`` images (2D), the images are taken in name order
and halved (every other one). A bundle exported from the shipped one is calibrated on one half's clean
files with the real command, and that bundle's ``evaluate.json`` scores the other half, as the model
card's evaluation runs it (its weights, its calibrated prior and prior weight); then the halves swap, so every image is scored once by a prior
that never saw it. The reference is the shipped bundle's report on the same split and seed (the model
card's ``docs/benchmarks/eval/metrics.json`` for the test split, seed 0). The table gives, per preset and
source, the stretch, the shipped and the calibrated PSNR, DeltaE on colour images and structure PSNR.

Usage::

    python -m monai_dpe.reports.calibration --split test --reference docs/benchmarks/eval/metrics.json \\
        --output docs/benchmarks/calibration/test
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["halves", "calibration_table", "write_table", "main"]

logger = logging.getLogger(__name__)


def halves(items: Sequence[Mapping[str, Any]], min_images: int = 6) -> dict[str, tuple[list, list]]:
    """Source -> its 2D items in name order, split into every other one: ``(first half, second half)``.

    Sources with fewer than ``min_images`` 2D items are left out: a half of two images says little.
    """
    by_source: dict[str, list] = {}
    for item in items:
        if item.get("spatial_dims", 2) == 2:
            by_source.setdefault(str(item["source"]), []).append(dict(item))
    ordered = {source: sorted(found, key=lambda item: item["image"]) for source, found in sorted(by_source.items())}
    return {source: (found[0::2], found[1::2]) for source, found in ordered.items() if len(found) >= min_images}


def calibration_table(reference: Mapping[str, Any], calibrated: Sequence[Mapping[str, Any]]) -> dict[str, dict]:
    """Preset -> source (and ``"all"``) -> means over the calibrated reports' images and the same images of
    ``reference``: ``n``, ``stretch``, ``shipped``, ``calibrated`` (PSNR), ``shipped_delta_e``,
    ``calibrated_delta_e`` (colour images), ``shipped_structure``, ``calibrated_structure`` and
    ``floor_failures`` (calibrated images more than 0.5 dB of structure below their input)."""
    shipped = {(image["name"], image["preset"]): image for image in reference["images"]}
    rows: dict[tuple[str, str], dict[str, list]] = {}
    for report in calibrated:
        for image in report["images"]:
            before = shipped[image["name"], image["preset"]]
            baselines = before.get("baselines", {})
            for key in ((image["preset"], image["source"]), (image["preset"], "all")):
                row = rows.setdefault(key, {name: [] for name in ("stretch", "shipped", "calibrated",
                                                                  "shipped_delta_e", "calibrated_delta_e",
                                                                  "shipped_structure", "calibrated_structure",
                                                                  "floor")})
                row["stretch"].append(baselines.get("stretch", {}).get("psnr", np.nan))
                row["shipped"].append(before["psnr"])
                row["calibrated"].append(image["psnr"])
                row["shipped_structure"].append(before["structure_psnr"])
                row["calibrated_structure"].append(image["structure_psnr"])
                floor = baselines.get("input", {}).get("structure_psnr")
                row["floor"].append(floor is not None and image["structure_psnr"] < floor - 0.5)
                if image["rgb"]:
                    row["shipped_delta_e"].append(before["delta_e"])
                    row["calibrated_delta_e"].append(image["delta_e"])
    table: dict[str, dict] = {}
    presets = ("paper", "radiology", "clean")  # the model card's order; "all" after a preset's sources
    for (preset, source), row in sorted(rows.items(), key=lambda r: (presets.index(r[0][0]) if r[0][0] in presets
                                                                     else len(presets), r[0][1] == "all", r[0][1])):
        means = {name: float(np.mean(values)) if values else None for name, values in row.items() if name != "floor"}
        table.setdefault(preset, {})[source] = {"n": len(row["shipped"]), **means,
                                                "floor_failures": int(sum(row["floor"]))}
    return table


def write_table(table: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path, info: str) -> None:
    """The table as Markdown at ``path`` and JSON beside it (``.json``)."""
    number = lambda value: "" if value is None or np.isnan(value) else f"{value:.2f}"  # noqa: E731
    lines = ["# `monai-dpe bundle calibrate` by halves", "", info]
    for preset, sources in table.items():
        lines += ["", f"## {preset} preset", "", "| source | image-seeds | stretch | shipped | calibrated | DeltaE "
                  "shipped | DeltaE calibrated | structure shipped | structure calibrated | floor failures |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for source, row in sources.items():
            lines.append(f"| {source} | {row['n']} | " + " | ".join(number(row[key]) for key in (
                "stretch", "shipped", "calibrated", "shipped_delta_e", "calibrated_delta_e", "shipped_structure",
                "calibrated_structure")) + f" | {row['floor_failures']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")


def _calibrated_bundle(work: Path, images: Sequence[Mapping[str, Any]], dataset_dir: Path, bundle: str) -> Path:
    """A bundle exported into ``work`` and calibrated on ``images`` (copied under ``work/clean``)."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "clean").mkdir(parents=True)
    for index, item in enumerate(images):  # the index keeps two sources' equal file names apart
        shutil.copy2(dataset_dir / item["image"], work / "clean" / f"{index}_{Path(item['image']).name}")
    cli = [sys.executable, "-m", "monai_dpe.cli"]
    subprocess.run([*cli, "bundle", "export", str(work / "bundle"), "--bundle", bundle], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*cli, "bundle", "calibrate", str(work / "bundle"), "--images", str(work / "clean"),
                    "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return work / "bundle"


def _evaluate(calibrated: Path, held: Sequence[Mapping[str, Any]], split: str, seed: int, work: Path,
              args: argparse.Namespace) -> dict:
    """``evaluate.json`` of the ``calibrated`` bundle (its prior and its prior weight) on ``held``."""
    datalist = work / "held.json"
    datalist.write_text(json.dumps({split: list(held)}), encoding="utf-8")
    configs = calibrated / "configs"
    output = work / f"seed{seed}"
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                    f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']", "--meta_file",
                    str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
                    "--bundle_root", str(calibrated), "--dataset_dir", args.dataset_dir, "--datalist", str(datalist),
                    "--validate#split", split, "--seed", str(seed), "--baselines", "['stretch']", "--progress",
                    "False", "--output_dir", str(output)], check=True, stdout=subprocess.DEVNULL)
    return json.loads((output / "metrics.json").read_text(encoding="utf-8"))


def _runs(args: argparse.Namespace, seed: int, work: Path) -> list[dict]:
    """Both halves of every source with enough images: calibrate on one, evaluate the other."""
    datalist = json.loads((Path(args.bundle) / "configs" / "datalist.json").read_text(encoding="utf-8"))
    reports = []
    for source, pair in halves(datalist.get(args.split, []), args.min_images).items():
        for half, (clean, held) in enumerate((pair, pair[::-1])):
            folder = work / f"{source}_half{half}"
            logger.info("%s, half %d: calibrating on %d images, scoring %d", source, half, len(clean), len(held))
            calibrated = _calibrated_bundle(folder, clean, Path(args.dataset_dir), args.bundle)
            reports.append(_evaluate(calibrated, held, args.split, seed, folder, args))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--reference", required=True, help="the shipped bundle's evaluate.json report on --split")
    parser.add_argument("--output", required=True, help="folder for table.md and table.json")
    parser.add_argument("--work", default=None, help="folder for the calibrated bundles and their runs, kept "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--bundle", default="bundle")
    parser.add_argument("--dataset_dir", default="corpus")
    parser.add_argument("--min-images", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="calibration: %(message)s")
    try:
        reference = json.loads(Path(args.reference).read_text(encoding="utf-8"))
        (Path(args.bundle) / "configs" / "datalist.json").stat()
    except (OSError, json.JSONDecodeError) as error:
        logger.error("error: %s", error)
        return 2
    seed = int(reference.get("seed", 0))
    with tempfile.TemporaryDirectory() as scratch:
        reports = _runs(args, seed, Path(args.work or scratch))
    if not reports:
        logger.error("error: no source of split %r has %d or more 2D images", args.split, args.min_images)
        return 2
    info = (f"Split {args.split}, seed {seed}; reference {args.reference}; sources with {args.min_images} or more "
            f"2D images. Reproduce: `python -m monai_dpe.reports.calibration --split {args.split} --reference "
            f"{args.reference} --output {args.output}`.")
    write_table(calibration_table(reference, reports), Path(args.output) / "table.md", info)
    logger.info("table -> %s", Path(args.output) / "table.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
