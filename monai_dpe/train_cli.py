"""``monai-dpe train``: run the bundle's own ``configs/train.json`` on the corpus, a datalist or a folder of images.

The pipeline exists once, in the bundle; this command only fills in the bundle's overrides
(``dataset_dir``, ``datalist``, ``resume``, ``skip_bad`` and any ``KEY=VALUE`` the user adds)
and runs it with MONAI's bundle runner, as
``python -m monai.bundle run --config_file configs/train.json ...`` would.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_dpe.errors import UsageError, one_line, require_extra
from monai_dpe.files import write_json
from monai_dpe.locations import default_bundle

__all__ = ["register", "train_command", "parse_overrides", "FOLDER_DATALIST"]

logger = logging.getLogger(__name__)

#: Where ``--folder`` writes the datalist it builds, relative to the bundle (next to the TensorBoard logs).
FOLDER_DATALIST = Path("runs") / "folder_datalist.json"
def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` subcommand to the ``monai-dpe`` parser (its subcommands action must exist)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    train = commands.add_parser(
        "train",
        help="train the enhancement network with the bundle's train.json",
        description="Train the DPE generator and discriminator with the bundle's configs/train.json, on the bundle's "
        "corpus datalist, on another MONAI datalist, or on a folder of images and volumes. Extra bundle settings "
        "go after the options as KEY=VALUE (e.g. max_epochs=10 'channels=[64,96,128,160,192]'), or after -- as "
        "--KEY VALUE pairs, exactly as for `python -m monai.bundle run`.",
    )
    train.add_argument("--bundle", default=None, help="bundle folder (default: $MONAI_DPE_BUNDLE or the shipped bundle)")
    source = train.add_mutually_exclusive_group()
    source.add_argument("--dataset-dir", default=None, help="folder the datalist's image paths are relative to "
                        "(default: the --datalist's own folder; the corpus for the bundle's datalist)")
    source.add_argument("--folder", default=None,
                        help="train on every image/volume under this folder (split by file name into training and "
                        f"validation; the datalist is written to BUNDLE/{FOLDER_DATALIST.as_posix()})")
    train.add_argument("--datalist", default=None, help="MONAI datalist JSON with 'training' and 'validation' "
                       "(default: the bundle's configs/datalist.json; not with --folder)")
    train.add_argument("--validation-fraction", type=float, default=0.1,
                       help="share of --folder files kept for validation (default 0.1)")
    train.add_argument("--resume", action="store_true",
                       help="continue from BUNDLE/models/training_state.pt (networks, optimisers, iteration)")
    train.add_argument("--skip-bad", action="store_true",
                       help="drop unusable datalist entries with a warning each instead of stopping")
    train.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                       help="bundle settings, e.g. max_epochs=10 device=cpu")
    train.set_defaults(func=train_command)


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Bundle overrides from ``KEY=VALUE`` tokens and ``--KEY VALUE`` / ``--KEY=VALUE`` pairs.

    Values are read as JSON or Python literals where they are one (``10``, ``[8,16]``, ``true``,
    ``null``), else kept as text, the way ``python -m monai.bundle run`` reads its options.

    Raises:
        ValueError: a token that is neither form, or an option without a value.
    """
    out: dict[str, Any] = {}
    items = list(tokens)
    if items[:1] == ["--"]:
        items = items[1:]
    i = 0
    while i < len(items):
        token = items[i]
        if token.startswith("--"):
            key, has_value, value = token[2:].partition("=")
            if not has_value:
                if i + 1 >= len(items):
                    raise ValueError(f"override {token} has no value")
                value, i = items[i + 1], i + 1
        else:
            key, has_value, value = token.partition("=")
            if not has_value:
                raise ValueError(f"cannot read override {token!r}: expected KEY=VALUE or --KEY VALUE")
        if not key:
            raise ValueError(f"override {token!r} has no key")
        out[key] = _value(value)
        i += 1
    return out


def _value(text: str) -> Any:
    # not python-fire's DefaultParseValue, which `monai.bundle run` uses: it keeps `null` and `true` as
    # text, so `time_limit=null` would reach the config as the string "null"; JSON first, then Python
    for read in (json.loads, ast.literal_eval):
        try:
            return read(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _settings(args: argparse.Namespace, bundle: Path) -> dict[str, Any]:
    """The bundle overrides this command passes, after the user's own ``KEY=VALUE`` ones."""

    tokens = list(args.overrides)  # train_command has taken its own options back already
    if args.folder is not None and args.dataset_dir is not None:
        raise UsageError("--dataset-dir and --folder exclude each other: --folder is the dataset")
    try:
        settings = parse_overrides(tokens)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.folder is not None:
        if args.datalist is not None:
            raise UsageError("--datalist and --folder exclude each other: --folder builds the datalist")
        settings.update(_folder_datalist(Path(args.folder), bundle, args.validation_fraction))
    else:
        if args.datalist is not None:
            settings["datalist"] = str(Path(args.datalist).resolve())
            # relative entries are relative to the datalist's folder, as MONAI's load_decathlon_datalist has it
            settings["dataset_dir"] = str(Path(args.datalist).resolve().parent)
        if args.dataset_dir is not None:
            settings["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    if args.resume:
        settings["resume"] = True
    if args.skip_bad:
        settings["skip_bad"] = True
    return settings


def _own_option_parser() -> argparse.ArgumentParser:
    """This command's own options, to find them among the overrides (no defaults: present or not)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in ("--bundle", "--dataset-dir", "--folder", "--datalist"):
        parser.add_argument(name, default=None)
    parser.add_argument("--validation-fraction", type=float, default=None)
    parser.add_argument("--resume", action="store_true", default=None)
    parser.add_argument("--skip-bad", action="store_true", default=None)
    return parser


def _rescue_own_options(args: argparse.Namespace) -> list[str]:
    """Take this command's options back from the overrides and return the overrides left.

    argparse hands every token after the first ``KEY=VALUE`` to the overrides, so ``max_epochs=1
    --bundle b`` would otherwise train the default bundle and pass ``bundle`` as a bundle setting.
    Tokens after ``--`` are always overrides (``-- --resume true`` is the bundle's own flag).
    """

    tokens = list(args.overrides)
    cut = tokens.index("--") if "--" in tokens else len(tokens)
    try:
        found, rest = _own_option_parser().parse_known_args(tokens[:cut])
    except SystemExit:  # argparse already said what is wrong (e.g. an option without its value)
        raise UsageError("cannot read the options given after the KEY=VALUE overrides") from None
    for name, value in vars(found).items():
        if value is not None:
            setattr(args, name, value)
    return rest + tokens[cut + 1:]  # the separator itself is not an override


def _folder_datalist(folder: Path, bundle: Path, validation_fraction: float) -> dict[str, str]:
    from monai_dpe.data import datalist_from_folder

    if not folder.is_dir():
        raise UsageError(f"--folder {folder}: no such folder")
    try:
        datalist = datalist_from_folder(folder, validation_fraction)
    except ValueError as err:
        raise UsageError(f"--folder {folder}: {err}") from None
    if not datalist["training"] or not datalist["validation"]:
        raise UsageError(f"--folder {folder}: needs at least two usable images (found "
                         f"{len(datalist['training']) + len(datalist['validation'])})")
    path = bundle / FOLDER_DATALIST
    write_json({"description": f"monai-dpe train --folder {folder.resolve()}", **datalist}, path)
    logger.info("datalist of %s: %d training, %d validation -> %s", folder, len(datalist["training"]),
                len(datalist["validation"]), path)
    return {"dataset_dir": str(folder.resolve()), "datalist": str(path)}


def train_command(args: argparse.Namespace) -> int:
    """``monai-dpe train``: run the bundle's ``train.json`` with the request as overrides; 1 on failure."""

    require_extra("tensorboard", "training (train.json logs to TensorBoard)")
    args.overrides = _rescue_own_options(args)
    bundle = (Path(args.bundle) if args.bundle else default_bundle()).resolve()
    configs = bundle / "configs"
    if not (configs / "train.json").is_file():
        raise UsageError(f"{bundle}: not a monai-dpe bundle (no configs/train.json)")
    settings = _settings(args, bundle)

    from monai.bundle import run

    logging_file = configs / "logging.conf"
    try:
        run(
            config_file=str(configs / "train.json"),
            meta_file=str(configs / "metadata.json"),
            logging_file=str(logging_file) if logging_file.is_file() else None,
            bundle_root=str(bundle),
            **settings,
        )
    except Exception as err:  # a bad datalist entry, a corrupt state, a refused overwrite: one line
        print(f"monai-dpe train: error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0
