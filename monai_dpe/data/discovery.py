"""Find the images an enhancement run should process: files of supported formats and DICOM series folders."""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from monai_dpe.formats import DICOM_SUFFIXES, DICOMDIR, image_suffix, is_dicom_file
from monai_dpe.keys import ItemKeys
from monai_dpe.transforms.checks import series_parts

logger = logging.getLogger(__name__)

__all__ = ["find_images", "image_suffix", "is_dicom_file", "is_dicom_series_dir", "non_image_dicom_class",
           "unreadable_reason", "display_path"]


# formats MONAI reads with ITK, whose C++ layer aborts the process on a file name that is not UTF-8
_ITK_READ_SUFFIXES = (".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".dcm", ".dicom", ".ima", "")
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def display_path(path: str | os.PathLike) -> str:
    """``path`` as text that can always be printed and stored in JSON: bytes of a file name that
    are not UTF-8 shown as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an image, found without opening it; ``None`` for a regular file
    or a folder whose name the readers can take.

    A symbolic link loop or a dangling link cannot be opened; a FIFO, socket or device named
    ``*.png`` would block the reader for good or feed it a stream; a file name that is not valid
    UTF-8 makes ITK's C++ layer abort the whole process (exit 134), so such names are refused for
    the formats ITK reads (NRRD, MetaImage, TIFF, DICOM files and series folders).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return f"cannot be opened: {(err.strerror or type(err).__name__).lower()}"
    kind = next((name for test, name in _FILE_KINDS if test(mode)), None)
    if kind is not None:
        return f"not a regular file ({kind}), so it is not read"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file, so it is not read"
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        if stat.S_ISDIR(mode) or image_suffix(path) in _ITK_READ_SUFFIXES:
            return "file name is not valid UTF-8, which the ITK image reader cannot take: rename the file"
    return None


def is_dicom_series_dir(folder: str | os.PathLike) -> bool:
    """A folder of DICOM slices (at least two) of one series, which MONAI reads as one volume.

    MONAI's reader keeps only the first series of a folder, so a folder mixing series (or
    unrelated DICOM files) is not a series: its files are then enhanced one by one. Files whose
    header cannot be read do not decide; the reader reports them. Other files (a JSON sidecar,
    notes, ``Thumbs.db``) do not count, as MONAI's reader skips them too, but an image of another
    format or a sub-folder makes the folder a plain folder, so that nothing in it is dropped.
    """
    folder = Path(folder)
    entries = list(folder.iterdir())
    if any(p.is_dir() for p in entries):
        return False
    files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
    dicom_suffixes = (*DICOM_SUFFIXES, "")
    slices = [p for p in files if p.suffix.lower() in dicom_suffixes]
    if len(slices) < 2 or any(image_suffix(p.name) for p in files if p.suffix.lower() not in dicom_suffixes):
        return False
    return len({uid for uid in map(_series_uid, slices) if uid is not None}) <= 1


def _series_uid(path: Path) -> str | None:
    """The file's SeriesInstanceUID ("" if it has none); ``None`` if it is a DICOMDIR index or its
    header cannot be read.

    A file that is no slice of a volume gets a key of its own, so that a folder holding one is no
    series and each of its files is an item: a non-image object (SEG, RT Dose, ...), skipped by
    name rather than read into a volume, and a 2D image without a position and orientation in
    space (radiograph views and ultrasound stills often share one series) or a multi-frame image,
    which a series reader would stack with made-up spacing or drop.
    """
    import pydicom

    if path.name.upper() == DICOMDIR:
        return None
    if non_image_dicom_class(path) is not None:
        return f"non-image object {path.name}"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
            "SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "NumberOfFrames"])
    except Exception:  # not DICOM, or damaged: the reader gives the reason later
        return None
    placed = "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds
    if not placed or int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"2D image {path.name}"
    return str(ds.get("SeriesInstanceUID", ""))


# image storage SOP classes whose DICOM name does not say "Image Storage"
_IMAGE_CLASSES_OTHERWISE_NAMED = ("Enhanced US Volume Storage",)


def non_image_dicom_class(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(name, uid)`` of a DICOM file's SOP class when it is a known storage class that is not
    image storage (RT Dose, RT Structure Set, RT Plan, Segmentation, SR, presentation states, key
    objects, encapsulated PDF, ...); ``None`` for images, unknown or private classes and non-DICOM.

    Such objects are no pictures to enhance: a SEG is a label map, an RT Dose is scaled to Gy by
    a factor the image readers drop, and an RT Structure Set has no pixels at all. The decision
    is pydicom's DICOM dictionary name of the SOP Class UID ("... Image Storage" is an image).
    Only regular files are opened (a FIFO would block the read).
    """
    import pydicom
    from pydicom.uid import UID

    path = Path(path)
    if not (path.is_file() and (image_suffix(path.name) in DICOM_SUFFIXES or is_dicom_file(path))):
        return None
    try:  # force: RT objects are often stored without the 128-byte preamble
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
        uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    except Exception:  # not DICOM or damaged: the reader gives the reason later
        return None
    if not uid:
        return None
    uid = UID(str(uid))
    name = uid.name
    if name == str(uid) or "Storage" not in name:  # not in the dictionary: private or unknown, left to the reader
        return None
    if "Image Storage" in name or name in _IMAGE_CLASSES_OTHERWISE_NAMED:
        return None
    return name, str(uid)


def find_images(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """Items ``{"image": path, "relpath": path relative to its input root}``, one per image under ``inputs``.

    Files of a supported suffix (and extensionless DICOM files) are found recursively; a folder made
    only of DICOM slices of one series is one item (a series), while the slices of a folder mixing
    series are items each. An input file is taken as given, whatever its suffix, so that an
    unsupported file named explicitly is reported rather than silently skipped. When inputs share
    relative paths (``a/img.png`` and ``b/img.png``, or two folders holding the same names), each
    such input's items are placed under the input's own name, as ``cp -r a b out/`` would. A file
    that an earlier input already reached (named twice, named and inside a named folder, or named
    through a link) is not an item again; within one folder, a link and its target are two names
    and two items, as the folder holds them. A series with gaps (a missing slice, uneven positions)
    is split at them, one item per evenly spaced part, so each keeps its true positions.
    """
    roots: Iterable = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    groups = []
    for root in map(Path, roots):  # a link loop is no folder: it is an item, and fails with its reason
        found = _walk(root) if root.is_dir() else [_item(root, _resolved(root).name, unreadable_reason(root))]
        groups.append((root, found))
    seen: set[Path] = set()
    for index, (root, found) in enumerate(groups):
        unique = [item for item in found if _resolved(Path(item[ItemKeys.IMAGE])) not in seen]
        seen.update(_resolved(Path(item[ItemKeys.IMAGE])) for item in unique)
        groups[index] = (root, unique)
    owners: dict[str, set[int]] = {}
    for index, (_, found) in enumerate(groups):
        for item in found:
            owners.setdefault(item[ItemKeys.RELPATH], set()).add(index)
    items: list[dict] = []
    for index, (root, found) in enumerate(groups):
        if any(len(owners[item[ItemKeys.RELPATH]]) > 1 for item in found):
            found = [{**item, ItemKeys.RELPATH: str(Path(_input_label(root, item)) / item[ItemKeys.RELPATH])} for item in found]
        items += found
    return [part for item in items for part in _split_at_gaps(item)]


def _split_at_gaps(item: dict) -> list[dict]:
    """A series folder that is regular apart from its gaps becomes one item per evenly spaced part,
    named ``<series>_part<k>of<n>`` in order along the normal; any other item stays as it is."""
    if ItemKeys.ERROR in item or not os.path.isdir(item[ItemKeys.IMAGE]):
        return [item]
    parts = series_parts(Path(item[ItemKeys.IMAGE]))
    if not parts:
        return [item]
    relpath, width = item[ItemKeys.RELPATH], len(str(len(parts)))
    logger.warning("%s: slices not evenly spaced; split at the gaps into %d evenly spaced parts (%s)",
                   display_path(item[ItemKeys.IMAGE]), len(parts), ", ".join(str(len(p)) + " slices" for p in parts))
    return [{**item, ItemKeys.RELPATH: f"{relpath}_part{k:0{width}d}of{len(parts)}",
             ItemKeys.SERIES_FILES: [str(f) for f in files]} for k, files in enumerate(parts, start=1)]


def _item(path: Path, relpath: str | os.PathLike, reason: str | None = None) -> dict:
    """A found image; one that cannot be read (``reason``) carries it as ``error``, so it is reported, never opened."""
    item = {ItemKeys.IMAGE: str(path), ItemKeys.RELPATH: str(relpath)}
    return {**item, ItemKeys.ERROR: reason} if reason else item


def _resolved(path: Path) -> Path:
    """``path`` resolved, or made absolute where links cannot be followed (a loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python before 3.13 on a symlink loop
        return Path(os.path.abspath(path))


def _input_label(root: Path, item: dict) -> str:
    """The folder name that keeps an input's outputs apart from another input's: the input folder's
    own name, or, for an input that is itself the item (a file or a series folder), its parent's."""
    resolved = _resolved(root)
    return resolved.parent.name if Path(item[ItemKeys.IMAGE]) == root else resolved.name


def _follow(real_root: Path, path: Path, followed: set[Path]) -> bool:
    """Whether to walk the subfolder ``path``: a plain folder always, a linked one (as linked files are
    read) once, unless it leads inside the input (walked there anyway), to a folder that holds the
    input (a loop), or to one another link already led to; each link left is logged."""
    if not path.is_symlink():
        return True
    target = _resolved(path)
    if real_root.is_relative_to(target):
        reason = "a folder that holds the input (a loop)"
    elif target.is_relative_to(real_root):
        reason = "a folder inside the input, walked anyway"
    elif any(target.is_relative_to(f) or f.is_relative_to(target) for f in followed):
        reason = "a folder another link already leads to"
    else:
        followed.add(target)
        return True
    logger.warning("%s: a link to %s, not followed", display_path(path), reason)
    return False


def _walk(root: Path) -> list[dict]:
    if is_dicom_series_dir(root):  # named as the folder itself is, also when given as "." or ".."
        return [_item(root, root.resolve().name, unreadable_reason(root))]
    found, real_root, followed = [], _resolved(root), set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        here = Path(folder)
        dirs[:] = [name for name in dirs if _follow(real_root, here / name, followed)]
        if here != root and is_dicom_series_dir(here):
            found.append(_item(here, here.relative_to(root), unreadable_reason(here)))
            dirs.clear()
            continue
        for name in sorted(files):  # os.walk lists a symlink loop, a FIFO or a socket among the files
            if not name.startswith(".") and (image_suffix(name) or is_dicom_file(here / name)):
                path = here / name
                found.append(_item(path, path.relative_to(root), unreadable_reason(path)))
    return found
