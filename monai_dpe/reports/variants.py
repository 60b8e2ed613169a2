"""The shipped weights under other post-processing settings on one split: the model card's variant rows.

Each variant is ``evaluate.json``'s evaluation with bundle overrides (without the level prior or with its
line alone, the level line allowed to clip, the network's level, another Wiener scale, a fixed share of the
network), run as the model card's command runs it (``python -m monai.bundle run``, baselines reused from
the shipped report), one output folder per variant. The table gives, per degradation preset, PSNR,
structure PSNR, SSIM and DeltaE on colour images of the shipped settings (the reference report) and of
each variant.

Usage::

    python -m monai_dpe.reports.variants --reference docs/benchmarks/eval/metrics.json \\
        --output docs/benchmarks/variants
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["VARIANTS", "variant_command", "variant_table", "write_table", "main"]

#: label -> ``monai.bundle run`` overrides (values as that command line takes them)
VARIANTS: dict[str, dict[str, str]] = {
    "without the level prior (`--no-level-prior`)": {"level_prior_path": "$None"},
    "the level prior's line alone (`monai.bundle run --level_prior_weight 1.0`)": {"level_prior_weight": "1.0"},
    "the line allowed to clip (`monai.bundle run --range_margin '$None'`)": {"range_margin": "$None"},
    "the network's level for every image (`--network-level`)": {"own_level_range": "$None",
                                                                 "level_prior_path": "$None"},
    "Wiener scale 0.5 (no level prior; `monai.bundle run --wiener_noise_scale 0.5 --level_prior_path '$None'`)":
        {"wiener_noise_scale": "0.5", "level_prior_path": "$None"},
    "share from the input's noise (0.9.1, no level prior; `monai.bundle run --wiener_noise_scale '$None'`; no "
    "range limit)": {"wiener_noise_scale": "$None", "level_prior_path": "$None"},
    "fixed share 0.3 (no level prior; `--network-share 0.3 --no-level-prior`)":
        {"network_share": "0.3", "level_prior_path": "$None"},
    "fixed share 0.3 and the network's level": {"network_share": "0.3", "own_level_range": "$None",
                                                "level_prior_path": "$None"},
    "network alone (`--network-share 1 --network-level`)": {"network_share": "1.0", "own_level_range": "$None",
                                                            "level_prior_path": "$None"},
}
logger = logging.getLogger(__name__)
_MEASURES = (("psnr", 2), ("structure_psnr", 2), ("ssim", 3), ("delta_e_rgb", 2))


def _slug(label: str) -> str:
    """A folder name for a variant: its label's words, lower case, joined by underscores."""
    words = "".join(c if c.isalnum() else " " for c in label.split("(")[0].lower()).split()
    return "_".join(words)


def variant_command(overrides: Mapping[str, str], reference: str, output_dir: str, bundle_root: str = "bundle",
                    dataset_dir: str = "corpus", extra: Sequence[str] = ()) -> list[str]:
    """The ``monai.bundle run`` command line that evaluates one variant into ``output_dir``."""
    configs = os.path.join(bundle_root, "configs")
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               str([os.path.join(configs, "train.json"), os.path.join(configs, "evaluate.json")]),
               "--meta_file", os.path.join(configs, "metadata.json"), "--logging_file",
               os.path.join(configs, "logging.conf"), "--bundle_root", bundle_root, "--dataset_dir", dataset_dir,
               "--output_dir", output_dir, "--reuse_baselines", reference, "--progress", "False", *extra]
    for key, value in overrides.items():
        command += [f"--{key}", value]
    return command


def variant_table(reference: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """``{preset: {label: {measure: value}}}`` for the degraded presets: the shipped row, then each variant's."""
    table: dict[str, dict] = {}
    for preset in reference["per_preset"]:
        if preset == "clean":
            continue
        rows = {"DPE (shipped)": reference["per_preset"][preset]["model"]}
        rows.update({label: report["per_preset"][preset]["model"] for label, report in variants.items()})
        table[preset] = {label: {m: row.get(m) for m, _ in _MEASURES} for label, row in rows.items()}
    return table


def write_table(table: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path, info: str) -> None:
    """The table as Markdown, one section per preset."""
    lines = ["# Post-processing variants of the shipped weights", "", info, ""]
    for preset, rows in table.items():
        lines += [f"## {preset} preset", "", "| DPE variant | PSNR | structure PSNR | SSIM | DeltaE (RGB images) |",
                  "|---|---|---|---|---|"]
        for label, row in rows.items():
            cells = ["-" if row[m] is None else f"{row[m]:.{d}f}" for m, d in _MEASURES]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="the shipped settings' report (evaluate.json's metrics.json)")
    parser.add_argument("--output", required=True, help="folder for one report per variant, variants.md and .json")
    parser.add_argument("--bundle_root", default="bundle")
    parser.add_argument("--dataset_dir", default="corpus")
    parser.add_argument("--only", nargs="+", default=None, metavar="WORD",
                        help="run only the variants whose label holds one of these words")
    parser.add_argument("--resume", action="store_true", help="keep variants whose report already exists")
    args, extra = parser.parse_known_args(argv)  # the rest goes to every monai.bundle run (e.g. --validate#split)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("variants: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _run(args, extra)
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    """Evaluate each chosen variant (or keep its report with ``--resume``), then write the table."""
    try:
        reference = json.loads(Path(args.reference).read_text())
    except (OSError, json.JSONDecodeError) as error:
        logger.error("error: --reference %s: %s", args.reference, error)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    chosen = {label: o for label, o in VARIANTS.items() if not args.only or any(w in label for w in args.only)}
    reports = {}
    for index, (label, overrides) in enumerate(chosen.items(), 1):
        folder = output / _slug(label)
        if not (args.resume and (folder / "metrics.json").is_file()):
            logger.info("[%d/%d] %s", index, len(chosen), label)
            command = variant_command(overrides, args.reference, str(folder), args.bundle_root, args.dataset_dir, extra)
            if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
                logger.error("error: %s: the evaluation failed (%s)", label, " ".join(command))
                return 1
        reports[label] = json.loads((folder / "metrics.json").read_text())
    table = variant_table(reference, reports)
    info = (f"Split: {reference.get('split')}, seed {reference.get('seed')}; weights {reference.get('weights')}. "
            "Reproduce: `python -m monai_dpe.reports.variants --reference "
            f"{args.reference} --output {args.output}`.")
    write_table(table, output / "variants.md", info)
    (output / "variants.json").write_text(json.dumps(table, indent=1))
    logger.info("wrote %s", output / "variants.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
