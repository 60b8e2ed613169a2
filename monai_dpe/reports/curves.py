"""Validation curves from bundle training logs: parse the metrics lines, tabulate, plot.

``train.json``'s validation ``StatsHandler`` logs one line per validation, for example::

    2026-11-26 06:16:40,033 - INFO - Epoch[7] Metrics -- val_delta_e: 5.0988 val_psnr: 25.3720 val_ssim: 0.7787

This module reads those lines from the log files of one or more runs, converts epochs to training
iterations (``epoch * epoch_length``), and draws validation PSNR (and SSIM and DeltaE, where
logged) against iterations, one line per run, with optional horizontal reference lines on each
panel (the shipped model, the network's stretched input). The parsed points are also written as
JSON, so the figure can be remade and the numbers quoted without the raw logs.

Usage::

    python -m monai_dpe.reports.curves --run "paper width, H200=train.log:250" \\
        --reference "shipped 0.2.0=25.31" --reference "shipped 0.2.0=val_ssim:0.80" \\
        --output docs/benchmarks/gpu_training.png
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai_dpe.extras import require

__all__ = ["read_validation_log", "plot_validation_curves", "main"]

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)$")
_METRIC = re.compile(r"(\w+): (-?(?:[0-9.]+(?:[eE][-+]?\d+)?|nan|inf))")


def read_validation_log(path: str | Path, epoch_length: int) -> list[dict[str, float]]:
    """Validation records of one training log: ``{"iteration": ..., "val_psnr": ..., ...}`` per line.

    Raises:
        ValueError: naming the file, when it holds no validation metrics lines.
    """
    records = []
    for line in Path(path).read_text(errors="replace").splitlines():
        found = _EPOCH.search(line)
        if found:  # the trainer's own lines (train_loss) share the format: keep validation metrics only
            metrics = {name: float(value) for name, value in _METRIC.findall(found.group(2)) if name.startswith("val_")}
            if metrics:
                records.append({"iteration": int(found.group(1)) * int(epoch_length), **metrics})
    if not records:
        raise ValueError(f"{path}: no validation metrics lines ('Epoch[N] Metrics -- ...') found")
    return records


_PANELS = (
    ("val_psnr", "validation PSNR (dB)"),
    ("val_ssim", "validation SSIM"),
    ("val_delta_e", "validation DeltaE (CIEDE2000)"),
)


def plot_validation_curves(runs: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path,
                           references: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """Validation PSNR, and SSIM and DeltaE where logged, against iterations, one line per run.

    ``references`` maps a metric (``"val_psnr"``) to named horizontal lines on its panel (the shipped
    model's score), so a run can be read against what it must reach.
    """
    matplotlib = require("matplotlib", "plotting validation curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = references or {}
    logged = {key for recs in runs.values() for r in recs for key in r}
    panels = [(key, label) for key, label in _PANELS if key == "val_psnr" or key in logged]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for name, records in runs.items():
            points = [(r["iteration"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), marker=".", label=name)
        for name, value in references.get(key, {}).items():
            ax.axhline(value, linestyle="--", linewidth=1, color="grey")
            ax.annotate(name, (0, value), xycoords=("axes fraction", "data"), textcoords="offset points",
                        xytext=(4, 3), fontsize=8, color="grey")
        ax.locator_params(axis="x", nbins=5)  # five-digit iteration labels run together at matplotlib's default
        ax.set_xlabel("training iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reference(text: str) -> tuple[str, str, float]:
    """``NAME=VALUE`` (a PSNR line) or ``NAME=METRIC:VALUE`` as (metric, name, value)."""
    name, spec = _pair(text, "=")
    metric, _, value = spec.rpartition(":")
    known = [key for key, _ in _PANELS]
    if metric and metric not in known:
        raise argparse.ArgumentTypeError(f"--reference {text!r}: metric {metric!r} is none of {known}")
    try:
        return metric or "val_psnr", name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--reference {text!r}: {value!r} is not a number") from None


def _pair(text: str, sep: str) -> tuple[str, str]:
    name, _, value = text.rpartition(sep)
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME{sep}VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_dpe.reports.curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=LOG:EPOCH_LENGTH",
                        help="a run's label, its training log and its epoch length (repeatable)")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=[METRIC:]VALUE",
                        help="a horizontal reference line on a metric's panel, the PSNR's without METRIC "
                             "(val_ssim, val_delta_e; repeatable)")
    parser.add_argument("--output", required=True, type=Path, help="figure path (.png); the points go beside it as .json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        runs = {}
        for spec in args.run:
            name, source = _pair(spec, "=")
            log, length = _pair(source, ":")
            runs[name] = read_validation_log(log, int(length))
        references: dict[str, dict[str, float]] = {}
        for metric, name, value in map(_reference, args.reference):
            references.setdefault(metric, {})[name] = value
    except (OSError, ValueError, argparse.ArgumentTypeError) as err:
        parser.exit(2, f"error: {err}\n")
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.exit(2, f"error: --output {args.output}: cannot create its folder ({err.strerror or err})\n")
    plot_validation_curves(runs, args.output, references)
    args.output.with_suffix(".json").write_text(json.dumps({"runs": runs, "references": references}, indent=1))
    logger.info("wrote %s and %s", args.output, args.output.with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
