"""Find the images an enhancement run should process: files of supported formats and DICOM series folders."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from monai_dpe.data.datalist import IMAGE_SUFFIXES

__all__ = ["find_images", "image_suffix", "is_dicom_series_dir"]


def image_suffix(path: str | os.PathLike) -> str:
    """The format suffix of a path, with ``.nii.gz`` as one suffix; ``""`` for unsupported files."""
    name = os.path.basename(str(path)).lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def is_dicom_series_dir(folder: str | os.PathLike) -> bool:
    """A folder whose files are all DICOM slices (at least two), read by MONAI as one volume."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return len(files) >= 2 and all(p.suffix.lower() in (".dcm", "") for p in files) and not any(
        p.is_dir() for p in folder.iterdir()
    )


def find_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """Items ``{"image": path, "relpath": path relative to its input root}`` for every image under ``inputs``.

    Files of a supported suffix are found recursively; a folder made only of DICOM slices is one
    item (a series). An input file is taken as given, whatever its suffix, so that an
    unsupported file named explicitly is reported rather than silently skipped.
    """
    roots: Iterable = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    items: list[dict] = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            items += _walk(root)
        else:
            items.append({"image": str(root), "relpath": root.name})
    return items


def _walk(root: Path) -> list[dict]:
    if is_dicom_series_dir(root):
        return [{"image": str(root), "relpath": root.name}]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        if here != root and is_dicom_series_dir(here):
            found.append({"image": str(here), "relpath": str(here.relative_to(root))})
            dirs.clear()
            continue
        for name in sorted(files):
            if image_suffix(name) and not name.startswith("."):
                path = here / name
                found.append({"image": str(path), "relpath": str(path.relative_to(root))})
    return found
