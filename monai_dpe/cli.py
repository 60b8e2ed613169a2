"""The ``monai-dpe`` command: a thin layer over the bundle and the library.

``monai-dpe enhance INPUT... --output-dir OUT`` runs the bundle's own inference config
(``configs/inference.json``) with the inputs, output folder and options as overrides: the
pipeline exists once, in the bundle.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from monai_dpe import __version__
from monai_dpe.errors import UsageError, require_extra
from monai_dpe.keys import ItemKeys
from monai_dpe.locations import BUNDLE_ENV, default_bundle

__all__ = ["main", "build_parser", "default_bundle"]

EXIT_FAILED, EXIT_USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``monai-dpe`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="monai-dpe",
        description="Deep Perceptual Enhancement for medical images (MONAI plugin).",
    )
    parser.add_argument("--version", action="version", version=f"monai-dpe {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    enhance = commands.add_parser(
        "enhance",
        help="enhance image files and folders into an output folder",
        description="Enhance images (PNG, JPEG, BMP, TIFF, DICOM files and series, NIfTI, NRRD, MHA/MHD) with the "
        "bundle's inference pipeline: one output per input, same relative path, name and format (DICOM is "
        "written as NIfTI, .nii.gz). Inputs are never written.",
    )
    enhance.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files, DICOM series folders or folders of images")
    enhance.add_argument("-o", "--output-dir", required=True, help="where the outputs go (must not be an input folder)")
    enhance.add_argument("--axis", type=int, choices=(0, 1, 2, -1), default=None,
                         help="volume axis to enhance slice by slice (default: the bundle's, the last axis)")
    enhance.add_argument("--device", default=None,
                         help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    enhance.add_argument("--backend", choices=("auto", "eager", "bf16", "torchscript", "onnx"), default=None,
                         help="run the network in eager PyTorch, eager under bf16 autocast, TorchScript or ONNX "
                              "Runtime; auto (the bundle's default): bf16 on CPUs with AVX512-BF16 or AMX, else ONNX "
                              "Runtime for the shipped weights when installed, else eager")
    enhance.add_argument("--batch", type=_positive, default=None,
                         help="slices per network call (default: the bundle's)")
    enhance.add_argument("--network-share", type=_share, default=None, metavar="S",
                         help="share of the network's own detail, 0 to 1; the rest is the input's global affine "
                              "map that matches it best, which keeps the input's detail (default: the bundle's; "
                              "the shipped bundle has none and Wiener-filters the input's detail with the network's "
                              "output as the guide); 1 with --network-level is the network alone")
    enhance.add_argument("--network-level", action="store_true",
                         help="always take the network's brightness and contrast (no level prior); by default a "
                              "display image (8-bit photo, slide or DICOM) that is already well exposed keeps its "
                              "own, a dark one takes half of its level from the level prior, and a quantitative "
                              "image (CT, MR, NIfTI, 16-bit) keeps its units' level")
    enhance.add_argument("--no-level-prior", action="store_true",
                         help="give a dark display image the network's brightness and contrast alone; by default "
                              "half of them come from the bundle's level prior (models/level_prior.json, trees "
                              "fitted on the training split's global statistics), as the validation split chose "
                              "(see the model card)")
    enhance.add_argument("--colour-stretch-share", type=_share, default=None, metavar="S",
                         help="share, 0 to 1, of a dark colour image's brightness and contrast taken from its own "
                              "percentile stretch instead of the network's (default: the bundle's, 0). The network "
                              "learnt colour levels mostly from blood smears: 0.5 suits photographs, fundus and "
                              "slides better, and blood smears worse (see the model card)")
    enhance.add_argument("--allow-clipping", action="store_true",
                         help="let the network's brightness and contrast push a display image's darkest or "
                              "brightest parts past black or white; by default the level is kept so that what the "
                              "input resolves stays between them, which a burned-in white label or scale bar on a "
                              "dark image also holds back")
    enhance.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    enhance.add_argument("--resume", action="store_true",
                         help="skip inputs whose outputs already exist (a rerun of an interrupted batch)")
    enhance.add_argument("--summary", default=None, metavar="FILE",
                         help="write a JSON summary (done, skipped, failed and why) to FILE")
    enhance.add_argument("--save-comparison", action="store_true",
                         help="also write <output>_comparison.png: input, output and |output - input|")
    enhance.add_argument("--bundle", default=None, help=f"bundle folder (default: ${BUNDLE_ENV} or the shipped bundle)")
    enhance.add_argument("--weights", default=None, help="weights file (default: the bundle's models/model.pt)")
    enhance.add_argument("--no-progress", action="store_true", help="no progress bars")
    enhance.add_argument("-v", "--verbose", action="store_true", help="show library log messages and warnings")
    enhance.set_defaults(func=enhance_command)

    from monai_dpe.train_cli import register as register_train  # `monai-dpe train` lives in monai_dpe/train_cli.py
    register_train(parser)
    bundle = commands.add_parser("bundle", help="the shipped MONAI bundle: export it as a standalone folder")
    bundle_commands = bundle.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    export = bundle_commands.add_parser(
        "export", help="write the bundle (configs, weights, model card, sample data) to a new folder",
        description="Copy the bundle that `monai-dpe enhance` uses into DIR, a standalone MONAI bundle for "
        "`python -m monai.bundle run`, MONAI Label and model-zoo tools (its code: pip install monai-dpe).")
    export.add_argument("directory", metavar="DIR", help="the new bundle folder (must not exist, or be empty)")
    export.add_argument("--bundle", default=None, help=f"bundle folder (default: ${BUNDLE_ENV} or the shipped bundle)")
    export.set_defaults(func=export_bundle_command)
    calibrate = bundle_commands.add_parser(
        "calibrate", help="fit an exported bundle's level prior to your source, from clean images of it",
        description="Calibrate the level prior of bundle DIR (one that `monai-dpe bundle export` wrote) on clean "
        "images of one source: the level of an image the prior has never seen the like of is what it gets "
        "most wrong. DIR/models/level_prior.json is replaced; enhance with `monai-dpe enhance --bundle DIR`.")
    calibrate.add_argument("directory", metavar="DIR", help="an exported bundle folder (not the shipped bundle)")
    calibrate.add_argument("--images", required=True, metavar="FOLDER",
                           help="clean, well-exposed images of the source (at least 3; read, never modified)")
    calibrate.add_argument("--no-progress", action="store_true", help="no progress bars")
    calibrate.set_defaults(func=calibrate_bundle_command)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"monai-dpe: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("monai-dpe: interrupted", file=sys.stderr)
        return 130


def enhance_command(args: argparse.Namespace) -> int:
    """``monai-dpe enhance``: check the request, run the bundle's evaluator, print a summary."""
    inputs = [Path(p) for p in args.inputs]
    output_dir = Path(args.output_dir)
    _check_paths(inputs, output_dir, Path(args.summary) if args.summary else None)
    bundle = Path(args.bundle) if args.bundle else default_bundle()
    config_file = bundle / "configs" / "inference.json"
    if not config_file.is_file():
        raise UsageError(f"{bundle}: not a monai-dpe bundle (no configs/inference.json)")
    if _uses_level_prior(args):
        _level_prior_path(bundle)  # refused before any output folder is made
    device = _device(args.device)
    if args.save_comparison:  # refused before any file is computed, not once per file
        require_extra("matplotlib", "--save-comparison (the before/after panel)")
    _quiet_libraries(args.verbose)

    from monai_dpe.engines import one_line
    from monai_dpe.files import remove_partials

    if args.resume:  # files a killed run was writing: never complete, so they go before planning
        remove_partials(output_dir)
    start = time.monotonic()
    try:
        parser = _inference_config(bundle, config_file, inputs, output_dir, args, device)
        datalist = parser.get_parsed_content("datalist")
        if not datalist:
            raise UsageError(f"no images found in {' '.join(map(str, inputs))}")
        if args.summary:
            _check_summary_apart(Path(args.summary), datalist)
        parser.get_parsed_content("initialize")
        evaluator = parser.get_parsed_content("evaluator")
    except BaseException as err:  # stopped before the first file: this run's summary says why, none stale stays
        if not isinstance(err, SummaryIsAnOutput):  # whose file is an output's: it is not written at all
            _summary_of_a_stop(args.summary, err)
        if isinstance(err, (UsageError, KeyboardInterrupt)) or not isinstance(err, Exception):
            raise
        print(f"monai-dpe: error: {one_line(err)}", file=sys.stderr)  # a bad weights file or config: one line
        return EXIT_FAILED
    try:
        evaluator.run()  # stopped by an error or Ctrl-C, it writes its summary first (EnhancementEvaluator)
    except Exception as err:
        print(f"monai-dpe: error: {one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    state = evaluator.state
    done, failed = len(state.enhanced), len(state.failed)
    skips = [f"{len(state.skipped)} skipped (already done)"] if state.skipped else []
    skips += [f"{len(state.not_images)} skipped (not images)"] if state.not_images else []
    skipped = "".join(f", {s}" for s in skips)
    print(f"enhanced {done} file(s){skipped}, {failed} failed in {time.monotonic() - start:.1f} s -> {output_dir}")
    return EXIT_FAILED if failed else 0


#: what a standalone bundle holds; training runs, evaluation outputs and baselines stay behind
BUNDLE_PARTS = ("configs", "models", "docs", "sample_data", "LICENSE", "large_files.json")
MODEL_SUFFIXES = (".pt", ".ts", ".onnx")  # models/model*.pt and its TorchScript and ONNX exports
MODEL_EXTRAS = ("level_prior.json",)  # what the configs read beside the weights (the level prior)


def export_bundle_command(args: argparse.Namespace) -> int:
    """``monai-dpe bundle export DIR``: copy the bundle's parts into a new standalone folder."""
    import shutil

    source = Path(args.bundle) if args.bundle else default_bundle()
    if not (source / "configs" / "inference.json").is_file():
        raise UsageError(f"{source}: not a monai-dpe bundle (no configs/inference.json)")
    target = Path(args.directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target}: exists and is not an empty folder; choose a new DIR")
    _check_writable(target.resolve(), f"bundle folder {target}")
    skip = shutil.ignore_patterns(".*", "__pycache__")
    target.mkdir(parents=True, exist_ok=True)
    for part in BUNDLE_PARTS:
        if part == "models":  # the weights and their exports; not a training state or other runs' checkpoints
            (target / part).mkdir()
            for weights in sorted((source / part).glob("model*")):
                if weights.is_file() and weights.suffix in MODEL_SUFFIXES:
                    shutil.copy2(weights, target / part / weights.name)
            for name in MODEL_EXTRAS:
                if (source / part / name).is_file():
                    shutil.copy2(source / part / name, target / part / name)
        elif (source / part).is_dir():
            shutil.copytree(source / part, target / part, ignore=skip)
        elif (source / part).is_file():
            shutil.copy2(source / part, target / part)
    print(f"bundle written to {target} (run it: cd {target} && python -m monai.bundle run "
          "--config_file configs/inference.json)")
    return 0


def calibrate_bundle_command(args: argparse.Namespace) -> int:
    """``monai-dpe bundle calibrate DIR --images FOLDER``: the level prior of DIR fitted to FOLDER's source."""
    import json

    from monai_dpe.engines.level_prior_fit import (CALIBRATED_PRIOR_WEIGHT, PRIOR_WEIGHT_CONFIGS, calibrate_source,
                                                   set_prior_weight)
    from monai_dpe.errors import one_line
    from monai_dpe.files import FilesNotRestoredError, replace_files
    from monai_dpe.locations import shipped_bundle

    bundle, folder = Path(args.directory), Path(args.images)
    prior = bundle / "models" / "level_prior.json"
    if not (bundle / "configs" / "train.json").is_file() or not prior.is_file():
        raise UsageError(f"{bundle}: not a monai-dpe bundle with a level prior (configs/train.json, "
                         "models/level_prior.json); write one with `monai-dpe bundle export DIR`")
    configs = [bundle / "configs" / name for name in PRIOR_WEIGHT_CONFIGS]
    shipped = shipped_bundle().resolve()
    if any(path.resolve().is_relative_to(shipped) for path in (prior, *configs)):  # the bundle, or links into it
        raise UsageError(f"{bundle}: the shipped bundle is not calibrated in place; export a copy first "
                         "(`monai-dpe bundle export DIR`) and calibrate that")
    if not folder.is_dir():
        raise UsageError(f"--images {folder}: not a folder")
    for part in (prior.parent, bundle / "configs"):
        _check_writable(part.resolve(), f"bundle folder {part}")
    contents = {}
    for path in configs:  # checked before minutes of reading, written after
        try:
            contents[path] = set_prior_weight(path.read_text(encoding="utf-8"), CALIBRATED_PRIOR_WEIGHT).encode()
        except (OSError, ValueError) as err:
            raise UsageError(f"{path}: cannot set its level prior weight ({err})") from err
    try:
        spec = calibrate_source(str(bundle), str(folder), progress=not args.no_progress)
    except (OSError, ValueError, RuntimeError) as err:  # an unreadable prior or image; MONAI's config wraps it
        raise UsageError(one_line(err)) from err
    try:  # the prior and the weights that give it the whole level: all three or none
        replace_files({prior: json.dumps(spec).encode(), **contents})
    except FilesNotRestoredError as err:
        raise UsageError(f"{bundle}: cannot write its calibrated prior and weights, nor put back "
                         f"{', '.join(err.paths)} ({one_line(err.__cause__ or err)})") from err
    except OSError as err:
        raise UsageError(f"{bundle}: cannot write its calibrated prior and weights ({err.strerror or err}); "
                         "the bundle is as it was") from err
    record = spec["training"]["calibrations"][-1]
    print(f"level prior of {bundle} calibrated on {record['images']} images of {folder}: the truth's black "
          f"{record['black_shift']:+.3f} and white {record['white_shift']:+.3f} of full scale from the prior's guess; "
          f"its level_prior_weight is {CALIBRATED_PRIOR_WEIGHT} (enhance with: monai-dpe enhance --bundle {bundle} ...)")
    return 0


def _summary_of_a_stop(path: str | None, error: BaseException) -> None:
    """The summary of a run stopped before its evaluator started: nothing done, and why."""
    if path:
        from monai_dpe.engines.enhancer import run_summary, stop_reason, write_summary

        try:
            write_summary(Path(path).resolve(), run_summary(stopped=stop_reason(error)))
        except OSError as err:  # the stop's own reason is the line to show
            print(f"monai-dpe: error: --summary {path}: {err.strerror or err}", file=sys.stderr)


def _check_paths(inputs: list[Path], output_dir: Path, summary: Path | None = None) -> None:
    """Refuse missing inputs, an output folder that is, or is inside, an input folder, a summary
    file that would overwrite an input's file, and an output folder or summary file that cannot be
    written (found here, before any computing, not after every file)."""
    out = output_dir.resolve()
    for path in inputs:
        if not os.path.lexists(path):
            raise UsageError(f"{path}: no such file or folder")
        if not path.exists():  # a link loop or a dangling link: that input fails alone, with its reason
            continue
        if summary is not None and _overwrites(summary, path):
            raise UsageError(f"--summary {summary} would overwrite a file of the input {path}: inputs are never written")
        folder = path.resolve() if path.is_dir() else path.resolve().parent
        if out == folder or (path.is_dir() and out.is_relative_to(folder)):
            where = "is" if out == folder else "is inside"
            raise UsageError(
                f"output folder {output_dir} {where} the input folder {folder}: choose another --output-dir"
            )
    if out.exists() and not out.is_dir():
        raise UsageError(f"{output_dir}: exists and is not a folder")
    _check_writable(out, f"output folder {output_dir}")
    if summary is not None:
        if summary.is_dir():
            raise UsageError(f"--summary {summary}: is a folder, not a file")
        _check_writable(summary.resolve().parent, f"--summary {summary}")


class SummaryIsAnOutput(UsageError):
    """``--summary`` names a file the run writes (an output or a comparison panel)."""


def _check_summary_apart(summary: Path, planned: list) -> None:
    """Refuse a summary file that is also an item's planned output or comparison panel: the JSON would
    replace the image (or a later run would find it in the image's place and take it as done)."""
    target = summary.resolve()
    for item in planned:
        for key, what in ((ItemKeys.OUTPUT_PATH, "output"), (ItemKeys.PANEL_PATH, "comparison panel")):
            if item.get(key) and Path(item[key]).resolve() == target:
                source = item.get(ItemKeys.SOURCE_PATH, item.get(ItemKeys.IMAGE))
                raise SummaryIsAnOutput(f"--summary {summary} is also the {what} of {source}: choose another file")


def _check_writable(folder: Path, what: str) -> None:
    """Refuse ``what`` if a file cannot be created in ``folder`` (or, where it does not exist yet, in
    its nearest existing parent, where it would be made): a probe file is created and removed, which
    read-only mounts, permissions and other refusals all answer the same way."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        where = "" if existing == folder else f" (in {existing})"
        raise UsageError(f"{what} is not writable{where}: {err.strerror or err}") from err


def _overwrites(target: Path, source: Path) -> bool:
    """Whether writing ``target`` would replace the input ``source`` or an existing file under it."""
    target, source = target.resolve(), source.resolve()
    return target == source or (source.is_dir() and target.exists() and target.is_relative_to(source))


def _device(name: str | None):
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "meta":  # a device without data: every file would fail alone with PyTorch's words
        raise UsageError(f"--device {name}: holds no data, so nothing can be computed on it; use cpu or cuda")
    return device


def _uses_level_prior(args: argparse.Namespace) -> bool:
    """Whether the level prior shares a dark display image's level: unless asked for the network's level alone."""
    return not (args.no_level_prior or args.network_level)


def _level_prior_path(bundle: Path) -> str:
    """The bundle's level prior, which its configs read by default; refused where the bundle has none."""
    path = bundle.resolve() / "models" / "level_prior.json"
    if not path.is_file():
        raise UsageError(f"{path}: no such file: the bundle's level prior (`make level-prior` fits one; "
                         "--no-level-prior goes without)")
    return _config_path(path)


def _config_path(path: Path | str) -> str:
    """A path as a plain config string: the parser would evaluate one starting with $, @ or %."""
    text = str(path)
    return text if not text.startswith(("$", "@", "%")) else os.path.join(".", text)


def _inference_config(bundle: Path, config_file: Path, inputs: list[Path], output_dir: Path, args, device):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    meta_file = bundle / "configs" / "metadata.json"
    if meta_file.is_file():
        parser.read_meta(str(meta_file))
    overrides = {
        "bundle_root": str(bundle.resolve()),
        "dataset_dir": [_config_path(p) for p in inputs],
        "output_dir": str(output_dir.resolve()),
        "overwrite": bool(args.overwrite),
        "resume": bool(args.resume),
        "save_comparison": bool(args.save_comparison),
        "progress": not args.no_progress,
    }
    optional = {"slice_axis": args.axis, "sw_batch_size": args.batch, "device": device, "backend": args.backend,
                "network_share": args.network_share,
                "own_level_range": "$None" if args.network_level else None,
                "colour_stretch_share": args.colour_stretch_share,
                "level_prior_path": _level_prior_path(bundle) if _uses_level_prior(args) else "$None",
                "range_margin": "$None" if args.allow_clipping else None,
                "weights_path": str(Path(args.weights).resolve()) if args.weights else None,
                "summary_path": str(Path(args.summary).resolve()) if args.summary else None}
    overrides.update({k: v for k, v in optional.items() if v is not None})
    parser.update(overrides)
    return parser


class _BarSafeHandler(logging.StreamHandler):
    """Log lines written around tqdm's progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise
            self.handleError(record)


def _quiet_libraries(verbose: bool) -> None:
    """Per-file failures and skips as ``monai-dpe: <file>: <reason>`` lines; library chatter only with --verbose."""
    handler = _BarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("monai-dpe: %(message)s" if not verbose else "%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        warnings.simplefilter("ignore")
        for name in ("ignite", "monai"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        logging.getLogger("monai_dpe").setLevel(logging.WARNING)  # an input skipped, with its reason


if __name__ == "__main__":
    sys.exit(main())
