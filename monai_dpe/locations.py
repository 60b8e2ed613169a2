"""Where the shipped bundle lives: in the installed package, or beside it in a clone."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUNDLE_ENV", "default_bundle", "shipped_bundle"]

BUNDLE_ENV = "MONAI_DPE_BUNDLE"


def default_bundle() -> Path:
    """The bundle to use: ``$MONAI_DPE_BUNDLE`` if set, else the shipped one: inside the installed
    package (``monai_dpe/bundle``, package data of the wheel and sdist), or in a clone the repository's
    ``bundle/`` beside the package (the source of truth, mapped into the package when it is built)."""
    if os.environ.get(BUNDLE_ENV):
        return Path(os.environ[BUNDLE_ENV])
    return shipped_bundle()


def shipped_bundle() -> Path:
    """The bundle monai-dpe ships: the installed package's, or the repository's in a clone."""
    package = Path(__file__).resolve().parent
    installed = package / "bundle"
    return installed if (installed / "configs" / "inference.json").is_file() else package.parent / "bundle"
