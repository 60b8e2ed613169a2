"""The ``monai-dpe`` command: a thin layer over the bundle and the library."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monai_dpe import __version__

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``monai-dpe`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="monai-dpe",
        description="Deep Perceptual Enhancement for medical images (MONAI plugin).",
    )
    parser.add_argument("--version", action="version", version=f"monai-dpe {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
