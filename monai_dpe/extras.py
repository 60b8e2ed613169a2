"""Optional dependencies: import one, or fail with a line that names the extra which installs it.

MONAI's ``optional_import`` is not enough here: its error points to MONAI's own install page,
while a user of monai-dpe needs the ``pip install 'monai-dpe[extra]'`` line for this package.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

# module -> the setup.py extra that installs it
EXTRAS = {
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "bm3d": "baselines",
    "matplotlib": "report",
    "tensorboard": "train",
    "sklearn": "train",
    "itk": "itk",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (e.g. ``"onnxruntime"``) or raise :class:`MissingExtraError` naming its extra.

    ``purpose`` completes "<purpose> needs <package>", e.g. ``"--backend onnx"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = extra or EXTRAS.get(top, top)
        raise MissingExtraError(
            f"{purpose} needs the optional package {top}, which is not installed: pip install 'monai-dpe[{extra}]'"
        ) from err
