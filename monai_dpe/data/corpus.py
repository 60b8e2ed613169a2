"""Build the DPE training/validation corpus from real images that packages ship.

``build_corpus`` writes every registry source (``monai_dpe.data.sources``) to
``output_dir/<modality>/<name><suffix>`` in a form that MONAI's ``LoadImage`` reads directly
with its default readers, the same way whatever reader it picks:

- DICOM becomes NIfTI (``.nii.gz``): ITK and pydicom read single DICOM files differently
  (a trailing depth-1 axis, frames in the middle axis, enhanced-DICOM rescale ignored), so
  the pixels are decoded once here with the modality LUT applied (HU for CT) and
  MONOCHROME1 inverted, so bright means dense for every X-ray;
- InVesalius projects and TIFF stacks become NIfTI with their voxel spacing;
- an 8-bit RGB TIFF (its first page; Aperio ``.svs`` slides too) becomes PNG;
- a dim, flat 8-bit image (``percentile-stretch``) is stored stretched to its 0.5-99.5
  percentiles as PNG;
- other PNG, JPEG and NIfTI are copied as they are.

Example::

    report = build_corpus("corpus")
    logger.info(report.summary())
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_dpe.files import atomic_path
from monai_dpe.data.datalist import ImageInfo, describe_image
from monai_dpe.data.photos import write_photo
from monai_dpe.data.repositories import (
    RepositoryCollection,
    RepositoryMember,
    RepositoryUnavailable,
    has_blob,
    list_members,
    open_repository,
    read_blob,
)
from monai_dpe.data.sources import COLLECTIONS, SOURCES, ImageSource, get_source, locate_source

__all__ = ["CorpusEntry", "CorpusReport", "build_corpus", "build_collection", "convert_source"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusEntry:
    """One file of the corpus, as written and loaded back.

    ``name`` identifies the image; ``source`` the dataset it came from (the unit of the split):
    a package's image is its own source, a repository collection's images share one.
    """

    name: str
    modality: str
    split: str
    relpath: str
    licence: str
    info: ImageInfo
    source: str = ""
    display_file: bool | None = None  # the original's format, where the corpus file's says otherwise

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", self.name)


@dataclass
class CorpusReport:
    """What ``build_corpus`` did: sources built now, found already built (skipped), and failed."""

    output_dir: Path
    built: list[CorpusEntry] = field(default_factory=list)
    skipped: list[CorpusEntry] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)

    @property
    def entries(self) -> list[CorpusEntry]:
        """Every usable corpus file, built now or before."""
        return self.built + self.skipped

    def summary(self) -> str:
        """A plain-text table: per split and modality, the count and the spatial shapes."""
        lines = [f"{'split':<11} {'modality':<11} {'n':>4}  shapes (channels x spatial)"]
        groups: dict[tuple[str, str], list[CorpusEntry]] = {}
        for entry in self.entries:
            groups.setdefault((entry.split, entry.modality), []).append(entry)
        for (split, modality), entries in sorted(groups.items()):
            shapes = ", ".join(f"{e.info.channels}x{'x'.join(map(str, e.info.spatial_shape))}" for e in entries)
            if len(entries) > 6:
                shapes = f"{len({e.source for e in entries})} sources, {sum(e.info.channels == 3 for e in entries)} colour"
            lines.append(f"{split:<11} {modality:<11} {len(entries):>4}  {shapes}")
        lines.append(f"built {len(self.built)}, skipped (already built) {len(self.skipped)}, failed {len(self.failed)}")
        lines += [f"FAILED {name}: {reason}" for name, reason in self.failed.items()]
        lines += [f"ABSENT {name}: {count} files not in the mirror (blobs of 4 MiB or more), skipped"
                  for name, count in self.absent.items()]
        return "\n".join(lines)


def build_corpus(
    output_dir: str | os.PathLike,
    sources: Iterable[ImageSource | RepositoryCollection | str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    mirrors: str | os.PathLike | None = None,
) -> CorpusReport:
    """Copy or convert every source into ``output_dir/<modality>/<name><suffix>``.

    Idempotent: an output that exists and loads back as a valid image is skipped. Each file
    is written under a temporary name, loaded back with ``LoadImage`` and checked, then
    renamed into place, so an interrupted build leaves no half-written corpus file. A
    source that fails (package missing, Debian archive unreachable, bad file) is logged in
    one line and recorded in the report; the others are still built.

    Args:
        output_dir: corpus folder (created if needed).
        sources: registry entries (package images and repository collections) or their names;
            default all of ``SOURCES`` and ``COLLECTIONS``.
        cache_dir: where Debian packages are extracted and repositories fetched
            (default ``~/.cache/monai-dpe``).
        progress: show a tqdm progress bar (counts and ETA).
        mirrors: folder of git mirrors (``OWNER+NAME/repo``) to read collections from instead
            of GitHub (default ``$MONAI_DPE_GIT_MIRRORS``).
    """
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    chosen = [get_source(s) if isinstance(s, str) else s for s in ((*SOURCES, *COLLECTIONS) if sources is None else sources)]
    report = CorpusReport(output_dir=output_dir)
    packaged = [s for s in chosen if isinstance(s, ImageSource)]
    bar = tqdm(packaged, desc="corpus", unit="image", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.name)
        _build_one(source, output_dir, cache_dir, report)
    bar.close()
    for collection in (s for s in chosen if isinstance(s, RepositoryCollection)):
        build_collection(collection, output_dir, report, mirrors, cache_dir, progress)
    logger.info("corpus %s: built %d, skipped %d, failed %d", output_dir, len(report.built),
                len(report.skipped), len(report.failed))
    return report


def build_collection(collection: RepositoryCollection, output_dir: Path, report: CorpusReport,
                     mirrors: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> None:
    """Write every file of a repository collection to ``<modality>/<name>/<stem>.png`` (idempotent).

    An unreachable repository, and files that fail to convert, give one line per collection in
    the report; files a mirror lacks (blobs of 4 MiB or more) are counted in ``report.absent``.
    """
    from tqdm.auto import tqdm

    try:
        git_dir = open_repository(collection, mirrors, cache_dir)
        members = list_members(git_dir, collection)
    except RepositoryUnavailable as err:
        logger.warning("source %s failed: %s", collection.name, err)
        report.failed[collection.name] = str(err)
        return
    if not members:
        report.failed[collection.name] = f"no file at {collection.commit[:12]} matches {list(collection.patterns)}"
        return
    absent, failures = 0, []
    for member in tqdm(members, desc=collection.name, unit="image", disable=not progress, leave=False):
        try:
            built = _collection_member(collection, member, git_dir, output_dir)
        except (ValueError, RepositoryUnavailable, OSError) as err:
            failures.append(f"{member.path}: {' '.join(str(err).split())}")
            continue
        if built is None:
            absent += 1
        else:
            (report.skipped if built[0] else report.built).append(built[1])
    if absent:
        report.absent[collection.name] = absent
        logger.warning("source %s: %d of %d files are not in the mirror (blobs of 4 MiB or more), skipped",
                       collection.name, absent, len(members))
    if failures:
        report.failed[collection.name] = f"{len(failures)} of {len(members)} files failed, first: {failures[0]}"
        logger.warning("source %s: %s", collection.name, report.failed[collection.name])


def _collection_member(collection: RepositoryCollection, member: RepositoryMember, git_dir: Path,
                       output_dir: Path) -> tuple[bool, CorpusEntry] | None:
    """Build one member: ``(already_built, entry)``, or ``None`` when the repository lacks its blob.

    Raises:
        ValueError, RepositoryUnavailable, OSError: the file cannot be read or converted.
    """
    relpath = collection.corpus_relpath(member.stem, member.is_volume)
    target = output_dir / relpath

    def entry(info: ImageInfo) -> CorpusEntry:
        return CorpusEntry(collection.image_name(member.stem), collection.modality, collection.split, relpath,
                           collection.licence, info, collection.name)

    if target.is_file():
        try:
            return True, entry(describe_image(target))
        except ValueError as err:
            logger.warning("rebuilding %s: existing file is not valid (%s)", target, err)
    if not has_blob(git_dir, member):
        return None
    with atomic_path(target, suffix=".partial" + "".join(Path(relpath).suffixes)) as partial:
        data = read_blob(git_dir, member)
        if member.is_volume:  # NIfTI volumes are kept as they are (gzip-compressed)
            partial.write_bytes(data if data[:2] == b"\x1f\x8b" else gzip.compress(data))
        else:
            write_photo(data, partial, name=f"{collection.repo}:{member.path}")
        info = describe_image(partial)
    return False, entry(info)


def _build_one(source: ImageSource, output_dir: Path, cache_dir: str | os.PathLike | None,
               report: CorpusReport) -> None:
    target = output_dir / source.output_relpath
    if target.is_file():
        try:
            report.skipped.append(_entry(source, describe_image(target)))
            return
        except ValueError as err:
            logger.warning("rebuilding %s: existing file is not valid (%s)", target, err)
    try:
        info = convert_source(source, target, cache_dir)
    except Exception as err:  # one bad source must not stop the corpus; the reason goes in the report
        reason = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, (RuntimeError, ValueError, OSError)):
            reason = f"{type(err).__name__}: {reason}"
        logger.warning("source %s failed: %s", source.name, reason)
        report.failed[source.name] = reason
        return
    report.built.append(_entry(source, info))


def _entry(source: ImageSource, info: ImageInfo) -> CorpusEntry:
    return CorpusEntry(source.name, source.modality, source.split, source.output_relpath, source.licence, info,
                       display_file=source.display_file)


def convert_source(source: ImageSource, target: Path, cache_dir: str | os.PathLike | None = None) -> ImageInfo:
    """Write ``source`` to ``target`` atomically and return what ``LoadImage`` reads back from it.

    Raises:
        SourceUnavailable: the source's package or file cannot be found.
        ValueError: the written file does not load back as a valid image.
    """
    path = locate_source(source, cache_dir)
    # the temporary name keeps the suffix: writers and readers pick the format from it
    with atomic_path(target, suffix=f".partial{source.output_suffix}") as partial:
        _CONVERTERS[source.converter](source, path, partial)
        try:
            info = describe_image(partial)
        except ValueError as err:
            raise ValueError(f"written file does not load back: {err}") from err
    return info


def _copy(source: ImageSource, path: Path, out: Path) -> None:
    shutil.copyfile(path, out)


def _save_nifti(array: np.ndarray, spacing: Iterable[float], out: Path, unit: str = "mm") -> None:
    import nibabel as nib

    spacing = [float(s) if s and float(s) > 0 else 1.0 for s in spacing]
    affine = np.diag(spacing[: array.ndim] + [1.0] * (4 - array.ndim))
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units(xyz=unit)
    nib.save(image, str(out))


def _compact_dtype(values: np.ndarray) -> np.ndarray:
    """Store integer-valued pixels as int16/uint16 when they fit, floats as float32."""
    if np.all(np.isfinite(values)) and np.array_equal(values, np.round(values)):
        for dtype in (np.uint8, np.int16, np.uint16, np.int32):
            info = np.iinfo(dtype)
            if values.min() >= info.min and values.max() <= info.max:
                return values.astype(dtype)
    return values.astype(np.float32)


def _dicom(source: ImageSource, path: Path, out: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(str(path))
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"colour DICOM ({ds.get('PhotometricInterpretation')}) is not supported")
    raw = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = raw if frames > 1 else raw[np.newaxis]
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        stack = _invert_monochrome1(stack, ds)
    values = np.stack([_rescale(frame, _frame_rescale(ds, i)) for i, frame in enumerate(stack)])
    # DICOM pixels are (frame, row, column); NIfTI and MONAI index (x=column, y=row, z=frame)
    array = values.transpose(2, 1, 0)
    if frames == 1:
        array = array[:, :, 0]
    _save_nifti(_compact_dtype(array), _dicom_spacing(ds), out)


def _dicom_colour(source: ImageSource, path: Path, out: Path) -> None:
    """Write a single-frame colour DICOM (RGB, YBR or palette colour) as an 8-bit RGB PNG, as it displays."""
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(str(path))
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise ValueError(f"{path.name}: multi-frame colour DICOM is not supported")
    rgb = ds.pixel_array  # pydicom converts YBR to RGB
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        rgb = apply_color_lut(rgb, ds)
        if rgb.dtype != np.uint8:  # 16-bit palette entries: the display's top 8 bits
            rgb = (rgb >> 8).astype(np.uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path.name}: expected 8-bit colour pixels, got {rgb.dtype} {rgb.shape}")
    Image.fromarray(rgb).save(out, format="PNG")


def _invert_monochrome1(stack: np.ndarray, ds) -> np.ndarray:
    if np.issubdtype(stack.dtype, np.unsignedinteger):
        top = (1 << int(ds.get("BitsStored", stack.dtype.itemsize * 8))) - 1
        return (top - stack.astype(np.int64)).astype(stack.dtype)
    return stack.max() + stack.min() - stack


def _rescale(frame: np.ndarray, slope_intercept: tuple[float, float]) -> np.ndarray:
    slope, intercept = slope_intercept
    return frame.astype(np.float64) * slope + intercept


def _functional_group(ds, frame: int, sequence: str):
    """Item of ``sequence`` for ``frame`` in an enhanced DICOM's per-frame or shared groups."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        group_seq = ds.get(groups)
        if group_seq and index < len(group_seq) and sequence in group_seq[index]:
            return group_seq[index][sequence][0]
    return None


def _frame_rescale(ds, frame: int) -> tuple[float, float]:
    item = _functional_group(ds, frame, "PixelValueTransformationSequence") or ds
    return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)


def _dicom_spacing(ds) -> tuple[float, float, float]:
    measures = _functional_group(ds, 0, "PixelMeasuresSequence") or ds
    row_col = measures.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
    depth = measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 1.0
    # PixelSpacing is (between rows, between columns) = (y, x)
    return float(row_col[1]), float(row_col[0]), float(depth)


def _tiff_volume(source: ImageSource, path: Path, out: Path) -> None:
    import tifffile

    stack = tifffile.imread(str(path))
    if stack.ndim != 3:
        raise ValueError(f"{path.name}: expected a (z, y, x) stack, got shape {stack.shape}")
    _save_nifti(stack.transpose(2, 1, 0), source.spacing or (1.0, 1.0, 1.0), out, source.spacing_unit)


def _tiff_rgb(source: ImageSource, path: Path, out: Path) -> None:
    """Write the first page of an 8-bit RGB TIFF as PNG.

    Pillow decodes through libtiff, so JPEG-compressed slide files (Aperio ``.svs``, whose first
    page is the full-resolution image) read without an extra codec package.
    """
    from PIL import Image

    with Image.open(path) as tiff:
        # Pillow shows a 16-bit RGB page as 8-bit RGB (high bytes only): check the stored depth
        mode, bits, image = tiff.mode, tuple(tiff.tag_v2.get(258, ())), np.asarray(tiff)
    if mode != "RGB" or bits != (8, 8, 8):
        raise ValueError(f"{path.name}: expected an 8-bit RGB first page, got mode {mode}, bits per sample {bits}")
    Image.fromarray(image).save(out)


def _percentile_stretch(source: ImageSource, path: Path, out: Path) -> None:
    """Store an 8-bit image stretched so its 0.5 and 99.5 percentiles span 0-255.

    For dim, flat display crops: the network's input is stretched this way, and an 8-bit target
    keeps its absolute brightness, so stored as shipped such an image would ask the network to
    undo the stretch on a clean input.
    """
    from PIL import Image

    from monai_dpe.transforms.intensity_policy import robust_range

    with Image.open(path) as img:
        mode, image = img.mode, np.array(img)  # a writable copy: robust_range hands it to torch
    if mode not in ("L", "RGB"):
        raise ValueError(f"{path.name}: expected an 8-bit grey or RGB image, got mode {mode}")
    low, high = robust_range(image, 0.5, 99.5)  # the network input's own stretch
    if high <= low:
        raise ValueError(f"{path.name}: flat image (0.5 and 99.5 percentiles both {low:g}), nothing to stretch")
    stretched = np.clip((image - low) / (high - low), 0.0, 1.0) * 255.0
    Image.fromarray(np.round(stretched).astype(np.uint8)).save(out)


_CONVERTERS: dict[str, Callable[[ImageSource, Path, Path], None]] = {
    "copy": _copy,
    "dicom": _dicom,
    "dicom-colour": _dicom_colour,
    "tiff-volume": _tiff_volume,
    "tiff-rgb": _tiff_rgb,
    "percentile-stretch": _percentile_stretch,
}
