"""Refuse images the enhancer cannot serve, with a reason: from the file header before loading
(too large, 4D, unknown DICOM transfer syntax, damaged MetaImage data) and from the pixels after
(shape, size, constant, non-finite).

Each refusal is an :class:`ImageRefused` whose text is the one line the user sees for that file.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform

from monai_dpe.formats import DICOM_SUFFIXES, PHOTO_SUFFIXES, image_suffix, is_dicom_file
from monai_dpe.keys import ItemKeys
from monai_dpe.transforms.channels import has_alpha
from monai_dpe.transforms.intensity_policy import IntensityPolicy

__all__ = ["CheckHeaderd", "CheckImaged", "ImageRefused", "check_series_geometry", "check_size", "placed_slices", "series_parts", "MAX_VOXELS",
           "MAX_SLICE_PIXELS"]

MAX_VOXELS = 400_000_000
# DPENet at half width needs about 1 GB per megapixel of slice on CPU: 4096 x 4096 is ~16 GB
MAX_SLICE_PIXELS = 4096 * 4096
# a display image (its output keeps the stretch) whose robust range is at most this many storage steps
# holds no picture to enhance (a flat field with a one-level blemish): the stretch would blow it up to
# full contrast; a quantitative image goes back to its own units, so any range is served
NEAR_CONSTANT_LEVELS = 2


class ImageRefused(ValueError):
    """An image the enhancer will not process, with the reason."""



class CheckHeaderd(MapTransform):
    """Refuse, from the file header alone, images that must not be loaded: too many pixels for
    memory (a 20000 x 20000 PNG is a few kB on disk), 4D series, unknown DICOM transfer syntaxes.

    Runs before ``LoadImaged`` on the path; headers it cannot read are left to the image reader,
    whose error is then reported.

    Args:
        keys: keys holding image paths (files or DICOM series folders).
        max_voxels: refuse images declaring more voxels than this (all channels).
        max_slice_pixels: refuse images whose two largest spatial sides span more pixels than this.
        series_files_key: item key listing the files of one part of a series folder (:func:`series_parts`);
            only those are checked.
    """

    def __init__(self, keys="image", max_voxels: int = MAX_VOXELS, max_slice_pixels: int = MAX_SLICE_PIXELS,
                 allow_missing_keys: bool = False, series_files_key: str = ItemKeys.SERIES_FILES):
        super().__init__(keys, allow_missing_keys)
        self.max_voxels, self.max_slice_pixels = int(max_voxels), int(max_slice_pixels)
        self.series_files_key = series_files_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                self.check(d[key], d.get(self.series_files_key))
        return d

    def check(self, path: str | os.PathLike, files: Sequence[str | os.PathLike] | None = None) -> None:
        """Raise :class:`ImageRefused` with the reason if the header of ``path`` (or of its ``files``) declares an unusable image."""
        files = None if files is None else [Path(f) for f in files]
        if Path(path).is_dir():
            check_series_geometry(Path(path), files)
        elif Path(path).is_file() and os.path.getsize(path) == 0:  # readers answer "Could not create IO object"
            raise ImageRefused("empty file (0 bytes): there is no image to read")
        shape = _dicom_shape(Path(path), files) if files else _header_shape(Path(path))
        if shape is None:
            return
        spatial, channels = shape
        if len(spatial) > 3 and any(s > 1 for s in spatial[3:]):
            raise ImageRefused(f"unsupported {len(spatial)}D image of shape {spatial}: only 2D images and 3D volumes")
        check_size(spatial, channels, self.max_voxels, self.max_slice_pixels, note=", refused before loading")


def check_size(spatial: Sequence[int], channels: int, max_voxels: int, max_slice_pixels: int, note: str = "") -> None:
    """Raise :class:`ImageRefused` if an image of this shape is too large to enhance in memory."""
    sides = sorted((int(s) for s in spatial), reverse=True)
    slice_pixels = sides[0] * (sides[1] if len(sides) > 1 else 1)
    voxels = int(np.prod(sides)) * int(channels)
    size = "x".join(str(int(s)) for s in spatial)
    if slice_pixels > max_slice_pixels:
        raise ImageRefused(f"image too large: {size} is {slice_pixels:,} pixels a slice, over the limit of "
                           f"{max_slice_pixels:,} (max_slice_pixels){note}")
    if voxels > max_voxels:
        raise ImageRefused(f"image too large: {size} x {channels} channel(s) is {voxels:,} voxels, over the limit of "
                           f"{max_voxels:,} (max_voxels){note}")


def _header_shape(path: Path) -> tuple[tuple[int, ...], int] | None:
    """(spatial shape, channels) from a file's header without reading its pixels; ``None`` if unknown."""
    suffix = image_suffix(path.name)
    if path.is_dir() or suffix in DICOM_SUFFIXES or is_dicom_file(path):
        return _dicom_shape(path)
    try:
        if suffix in PHOTO_SUFFIXES:
            return _pil_shape(path)
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            return _nifti_shape(nibabel.load(str(path)).header)
        if suffix in (".nrrd", ".mha", ".mhd"):
            import SimpleITK as sitk

            if suffix in (".mha", ".mhd"):
                _check_metaimage_data(path)

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return tuple(int(s) for s in reader.GetSize()), int(reader.GetNumberOfComponents())
    except ImageRefused:
        raise
    except Exception:  # an unreadable header is the reader's to report, with its own words
        return None
    return None


# bytes per component of the MetaImage element types whose size does not depend on the platform
_MET_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
              "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8}


def _check_metaimage_data(path: Path) -> None:
    """Refuse a MetaImage file whose pixel data is missing or shorter than its header declares: the
    data file a ``.mhd`` names, or the data after the header of a ``.mha`` (``ElementDataFile = LOCAL``).

    ITK would print its own lines to the console and then blame the file ("No such file"), so the
    reason is found here from the header's ``ElementDataFile``, ``DimSize`` and ``ElementType``.
    File lists and compressed data are left to the reader.
    """
    fields, data_start = {}, 0
    with open(path, "rb") as stream:
        for line in stream.read(65536).splitlines(keepends=True):
            data_start += len(line)
            key, sep, value = line.decode("latin-1").partition("=")
            if sep:
                fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
    name = fields.get("ElementDataFile", "")
    if not name or name.upper() == "LIST" or "%" in name:
        return
    local = name.upper() == "LOCAL"
    data = path if local else path.parent / name
    if not data.is_file():
        raise ImageRefused(f"its data file {name} (named by the MetaImage header) is missing")
    if fields.get("CompressedData", "False").lower() == "true":
        return
    try:
        elements = int(np.prod([int(v) for v in fields["DimSize"].split()]))
        element_bytes = _MET_BYTES[fields["ElementType"]] * int(fields.get("ElementNumberOfChannels", 1))
        offset = 0 if local else max(int(fields.get("HeaderSize", 0) or 0), 0)
    except (KeyError, ValueError):
        return
    expected = elements * element_bytes + offset
    found = data.stat().st_size - (data_start if local else 0)
    if found < expected:
        what = "the file is truncated: " if local else f"its data file {name} is truncated: "
        raise ImageRefused(f"{what}{found:,} bytes{' of pixel data' if local else ''} where the MetaImage header "
                           f"declares {expected:,}")


def _nifti_shape(header) -> tuple[tuple[int, ...], int]:
    """(spatial shape, channels) of a NIfTI header: packed RGB24/RGBA32 and vector images
    ``(X, Y, Z, 1, C)`` are colour, as :class:`~monai_dpe.transforms.ColourNiftiReader` reads them."""
    shape = tuple(int(s) for s in header.get_data_shape())
    names = header.get_data_dtype().names
    if names:
        return shape, len(names)
    if len(shape) == 5 and shape[3] == 1:
        return shape[:3], shape[4]
    return shape, 1


def _pil_shape(path: Path) -> tuple[tuple[int, ...], int]:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as im:
                _refuse_reduced_colour_depth(im)
                _refuse_turned_tiff(im)
                frames = int(getattr(im, "n_frames", 1))
                spatial = (*im.size, frames) if frames > 1 else tuple(im.size)
                return spatial, len(im.getbands())
        except Image.DecompressionBombError as err:  # PIL refuses to open it at all: say so in our words
            pixels = [w for w in str(err).replace("(", " ").split() if w.isdigit()]
            declared = f"{int(pixels[0]):,} pixels" if pixels else "more pixels than PIL allows"
            raise ImageRefused(f"image too large: its header declares {declared}, over PIL's decompression-bomb "
                               "limit; refused before loading") from err


def _refuse_reduced_colour_depth(im) -> None:
    """Pillow decodes a 16-bit-per-channel colour PNG to 8 bits; the output would silently lose the depth."""
    rawmode = im.tile[0][3] if im.format == "PNG" and im.tile else ""
    if isinstance(rawmode, str) and rawmode.startswith(("RGB;16", "RGBA;16")):
        raise ImageRefused("16-bit-per-channel colour PNG: Pillow reads only 8 bits of each channel, so the "
                           "output would lose depth; save it as 8-bit colour or as one 16-bit grey image per channel")


def _refuse_turned_tiff(im) -> None:
    """ITK reads a TIFF's stored raster and ignores its orientation tag (and reads such colour files as
    RGBA): the output would be displayed turned or mirrored, with an alpha channel the input lacks."""
    orientation = im.getexif().get(0x0112, 1) if im.format == "TIFF" else 1  # EXIF/TIFF tag 274
    if orientation != 1:
        raise ImageRefused(f"TIFF orientation tag {orientation} (displayed turned or mirrored), which the TIFF "
                           "reader does not apply; save the image upright (orientation 1) or as PNG/JPEG")


def _dicom_shape(path: Path, files: Sequence[Path] | None = None) -> tuple[tuple[int, ...], int] | None:
    import pydicom
    from pydicom.uid import UID

    files = files or (_series_files(path) if path.is_dir() else [path])
    rows = cols = frames = 0
    channels = 1
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:
            return None
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and not UID(str(syntax)).is_transfer_syntax:
            where = f" in {file.name}" if path.is_dir() else ""
            raise ImageRefused(f"unreadable DICOM: unknown transfer syntax {syntax}{where}")
        rows, cols = max(rows, int(ds.get("Rows", 0) or 0)), max(cols, int(ds.get("Columns", 0) or 0))
        frames += int(ds.get("NumberOfFrames", 1) or 1)
        channels = int(ds.get("SamplesPerPixel", 1) or 1)
    if not rows or not cols:
        return None
    return ((cols, rows, frames) if frames > 1 else (cols, rows)), channels


# a slice gap may differ from the median gap by this share of it, plus _POSITION_ROUNDING, before
# the series counts as unevenly spaced: scanners round positions, a missing slice doubles a gap
_SPACING_TOLERANCE = 0.01
_POSITION_ROUNDING = 0.02  # mm: positions written to two decimals (0.625 mm spacing as 0.62 and 0.63 gaps)


def _names(files: Sequence[Path], limit: int = 3) -> str:
    shown = ", ".join(f.name for f in files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def _placed_slices(files: Sequence[Path]) -> list[tuple]:
    """(file, position, orientation, (rows, columns)) of each file that is a DICOM slice placed in space."""
    import pydicom

    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=[
                "ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns"])
            position = np.array([float(v) for v in ds.ImagePositionPatient])
            orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        except Exception:  # not a placed DICOM slice: the reader decides about it
            continue
        if position.shape != (3,) or orientation.shape != (6,) or not np.isfinite([*position, *orientation]).all():
            raise ImageRefused(f"not one volume: {file.name} has a malformed position or orientation ({position.size} and "
                               f"{orientation.size} values, not 3 and 6), so the slices cannot be placed; refused")
        slices.append((file, position, orientation, (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))))
    return slices


def placed_slices(folder: str | os.PathLike) -> list[Path]:
    """The files of a series folder that are DICOM slices placed in space (what a series reader stacks)."""
    try:
        return [s[0] for s in _placed_slices(_series_files(Path(folder)))]
    except ImageRefused:  # a malformed slice: CheckHeaderd has refused the series already
        return []


def _series_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _stack(slices: list[tuple]) -> tuple[list[tuple], np.ndarray]:
    """The slices sorted along their normal and their positions there; :class:`ImageRefused` if they
    are no single stack: another orientation or size among them, two at one position, or sideways steps."""
    groups: dict[tuple, list] = {}
    for s in slices:
        groups.setdefault((tuple(np.round(s[2], 3)), s[3]), []).append(s)
    main = max(groups.values(), key=len)
    others = [s[0] for s in slices if s not in main]
    if others:
        size, orientation = main[0][3], main[0][2]
        odd_size = [f for f, _, o, sz in slices if sz != size]
        turned = [f for f, _, o, sz in slices if sz == size and not np.allclose(o, orientation, atol=1e-3)]
        reasons = ([f"{_names(turned)} in another orientation (a localizer?)"] if turned else []) + \
                  ([f"{_names(odd_size)} of another size than the {size[0]}x{size[1]} slices"] if odd_size else [])
        raise ImageRefused(f"not one volume: {' and '.join(reasons)}; a volume would stack them in or drop them, "
                           "so the series is refused (move those files out of the folder)")
    normal = np.cross(main[0][2][:3], main[0][2][3:])
    order = sorted(main, key=lambda s: float(s[1] @ normal))
    along = np.array([float(s[1] @ normal) for s in order])
    gaps = np.diff(along)
    duplicates = np.flatnonzero(gaps < 1e-3)
    if duplicates.size:
        i = int(duplicates[0])
        more = f", and {duplicates.size - 1} more such pair(s)" if duplicates.size > 1 else ""
        raise ImageRefused(f"not one volume: {order[i][0].name} and {order[i + 1][0].name} lie at the same position "
                           f"({along[i]:.3f} mm along the normal{more}); a volume would get a made-up spacing, so "
                           "the series is refused")
    steps = np.diff(np.stack([s[1] for s in order]), axis=0)
    sideways = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if float(sideways.max()) > _SPACING_TOLERANCE * float(np.median(gaps)) + _POSITION_ROUNDING:
        raise ImageRefused(f"not one volume: slice positions move {float(sideways.max()):.3f} mm sideways between "
                           "slices (a tilted or sheared stack), which a volume's grid cannot hold; refused")
    return order, along


def _even(gap: float, spacing: float) -> bool:
    return abs(gap - spacing) <= _SPACING_TOLERANCE * spacing + _POSITION_ROUNDING


def check_series_geometry(folder: Path, files: Sequence[Path] | None = None) -> None:
    """Raise :class:`ImageRefused` if the DICOM slices in ``folder`` (or just ``files``) do not stack into one regular volume.

    A series reader sorts slices along their normal and writes one uniform spacing, whatever the
    positions say: a missing slice, uneven or duplicate positions, a localizer (another
    orientation) or a slice of another size would be written with made-up geometry, stacked in or
    dropped. Checked from the headers: one orientation and one size (the odd files named), no two
    slices at one position, positions along the normal (no shear), evenly spaced. A series that
    is regular apart from its gaps is split at them before this check (:func:`series_parts`).
    """
    slices = _placed_slices(_series_files(folder) if files is None else files)
    if len(slices) < 2:
        return
    _, along = _stack(slices)
    gaps = np.diff(along)
    spacing = float(np.median(gaps))
    if not all(_even(float(g), spacing) for g in gaps):
        raise ImageRefused(f"not one volume: slices are not evenly spaced (gaps of {gaps.min():.3g} to "
                           f"{gaps.max():.3g} mm along the normal, a missing slice?); a volume would get a made-up "
                           "uniform spacing, so the series is refused")


def series_parts(folder: Path) -> list[list[Path]]:
    """The evenly spaced runs of a DICOM series that is one stack apart from its gaps, sorted along the normal.

    A missing slice or uneven positions (0, 1, 2, 3, 5, 6, 7, 10, 11 mm) would make a volume with a
    made-up uniform spacing; split where the gap changes, each run keeps its true positions
    (0-3, 5-7 and 10-11 mm here). Runs are taken in order, each as long as its first gap repeats.
    Empty (no split) when the series is one regular volume, when a run would hold a single slice
    (no spacing to keep: :func:`check_series_geometry` refuses the series in one line), or when the
    slices are no stack at all (another orientation or size, a duplicate position).
    """
    try:
        slices = _placed_slices(_series_files(folder))
        if len(slices) < 4:
            return []
        order, along = _stack(slices)
    except ImageRefused:
        return []
    parts, start, count = [], 0, len(order)
    while start < count:
        end = start + 2  # exclusive: a run has two slices at least, and the gap between them is its spacing
        if end > count:
            return []
        spacing = float(along[start + 1] - along[start])
        while end < count and _even(float(along[end] - along[end - 1]), spacing):
            end += 1
        parts.append([s[0] for s in order[start:end]])
        start = end
    return parts if len(parts) > 1 else []


class CheckImaged(MapTransform):
    """Refuse images the enhancer cannot serve, with a reason: wrong dimensionality, too small,
    constant (every colour channel, alpha left out), nearly constant (a display image whose robust
    range is at most ``NEAR_CONSTANT_LEVELS`` storage steps, as ``intensity_mode`` would stretch it),
    complex or non-finite values, or too many voxels for comfortable memory.

    Args:
        keys: images to check (channel first).
        max_voxels: refuse images larger than this many voxels (all channels).
        min_size: smallest accepted spatial side.
        max_slice_pixels: refuse images whose two largest spatial sides span more pixels than this.
        intensity_mode: the :class:`~monai_dpe.transforms.IntensityPolicy` mode the image will be stretched in.
    """

    def __init__(self, keys="image", max_voxels: int = MAX_VOXELS, min_size: int = 2, allow_missing_keys: bool = False,
                 max_slice_pixels: int = MAX_SLICE_PIXELS, intensity_mode: str = "auto"):
        super().__init__(keys, allow_missing_keys)
        self.max_voxels, self.min_size, self.max_slice_pixels = int(max_voxels), int(min_size), int(max_slice_pixels)
        self.intensity_mode = intensity_mode

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key])
        return d

    def check(self, img: torch.Tensor) -> None:
        spatial = tuple(img.shape[1:])
        if len(spatial) not in (2, 3) or img.shape[0] > 4:
            raise ImageRefused(f"unsupported image shape {tuple(img.shape)}: expected 2D or 3D with 1-4 channels")
        extents = sorted(s for s in spatial if s > 1)  # a single slice read as (H, W, 1) is still 2D
        if len(extents) < 2 or extents[0] < self.min_size or (len(spatial) == 3 and extents[-2] < self.min_size):
            raise ImageRefused(f"image too small to enhance: spatial shape {spatial}")
        check_size(spatial, img.shape[0], self.max_voxels, self.max_slice_pixels)
        t = torch.as_tensor(img)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ImageRefused("image contains NaN or infinite values")
        if t.is_complex():
            raise ImageRefused("complex-valued image: enhance its magnitude, or each part as an image of its own")
        colour = _colour_channels(img)
        if all(low == high for low, high in _channel_ranges(torch.as_tensor(colour))):
            raise ImageRefused("image is constant: nothing to enhance")
        shown = None if t.is_floating_point() else IntensityPolicy(mode=self.intensity_mode).display_range(colour)
        if shown is not None and shown[1] - shown[0] <= NEAR_CONSTANT_LEVELS:
            low, high = int(shown[0]), int(shown[1])
            raise ImageRefused(f"image is nearly constant: its robust range holds {high - low + 1} storage levels "
                               f"({low} to {high}); stretched to full contrast it would show detail that is not there")


def _colour_channels(img):
    """The channels that are enhanced (with ``img``'s meta): an alpha channel (:func:`has_alpha`, which
    :class:`~monai_dpe.transforms.SplitAlphad` asks too) is left out, so a flat picture with a varying
    alpha is still flat."""
    return img[:-1] if has_alpha(img) else img


def _channel_ranges(t: torch.Tensor) -> list[tuple[float, float]]:
    """Each channel's smallest and largest value.

    Integers in numpy, which has a minimum and maximum for every integer type (torch has none for
    uint16, uint32 and uint64 on the CPU); floats, bfloat16 included, in torch."""
    flat = t.detach().cpu().reshape(t.shape[0], -1)
    if flat.is_floating_point():
        return list(zip(flat.amin(dim=1).double().tolist(), flat.amax(dim=1).double().tolist()))
    values = flat.numpy()
    return list(zip(values.min(axis=1).tolist(), values.max(axis=1).tolist()))
