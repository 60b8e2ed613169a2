"""EnhancementEvaluator: run the bundle's inference over many files, one failure never stopping the rest."""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, MapTransform, apply_transform
from ignite.engine import Events

from monai_dpe.data.datalist import DICOM_SUFFIXES, PHOTO_SUFFIXES
from monai_dpe.data.discovery import image_suffix
from monai_dpe.errors import one_line
from monai_dpe.files import atomic_path
from monai_dpe.transforms.io import RESUME_REPLACE, UnsafeOutputPath, output_path

__all__ = [
    "SafeDataset",
    "EnhancementEvaluator",
    "CheckHeaderd",
    "ImageRefused",
    "CheckImaged",
    "plan_outputs",
    "one_line",
    "raise_on_failures",
]

logger = logging.getLogger(__name__)

MAX_VOXELS = 400_000_000
# DPENet at half width needs about 1 GB per megapixel of slice on CPU: 4096 x 4096 is ~16 GB
MAX_SLICE_PIXELS = 4096 * 4096


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
    """

    def __init__(self, keys="image", max_voxels: int = MAX_VOXELS, max_slice_pixels: int = MAX_SLICE_PIXELS,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.max_voxels, self.max_slice_pixels = int(max_voxels), int(max_slice_pixels)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, os.PathLike)):
                self.check(d[key])
        return d

    def check(self, path: str | os.PathLike) -> None:
        """Raise :class:`ImageRefused` with the reason if the header of ``path`` declares an unusable image."""
        shape = _header_shape(Path(path))
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
    if path.is_dir() or suffix in DICOM_SUFFIXES:
        return _dicom_shape(path)
    try:
        if suffix in PHOTO_SUFFIXES:
            return _pil_shape(path)
        if suffix in (".nii", ".nii.gz"):
            import nibabel

            return _nifti_shape(nibabel.load(str(path)).header)
        if suffix in (".nrrd", ".mha", ".mhd"):
            import SimpleITK as sitk

            if suffix == ".mhd":
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
    """Refuse a MetaImage header (``.mhd``) whose data file is missing or shorter than it declares.

    ITK would print its own lines to the console and then blame the header file ("No such file"),
    so the reason is found here from the header's ``ElementDataFile``, ``DimSize`` and ``ElementType``.
    Data inside the header (``LOCAL``), file lists and compressed data are left to the reader.
    """
    fields = {}
    with open(path, "rb") as stream:
        for line in stream.read(65536).decode("latin-1").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
    name = fields.get("ElementDataFile", "")
    if not name or name.upper() in ("LOCAL", "LIST") or "%" in name:
        return
    data = path.parent / name
    if not data.is_file():
        raise ImageRefused(f"its data file {name} (named by the MetaImage header) is missing")
    if fields.get("CompressedData", "False").lower() == "true":
        return
    try:
        elements = int(np.prod([int(v) for v in fields["DimSize"].split()]))
        element_bytes = _MET_BYTES[fields["ElementType"]] * int(fields.get("ElementNumberOfChannels", 1))
        offset = max(int(fields.get("HeaderSize", 0) or 0), 0)
    except (KeyError, ValueError):
        return
    expected, found = elements * element_bytes + offset, data.stat().st_size
    if found < expected:
        raise ImageRefused(f"its data file {name} is truncated: {found:,} bytes where the MetaImage header "
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


def _dicom_shape(path: Path) -> tuple[tuple[int, ...], int] | None:
    import pydicom
    from pydicom.uid import UID

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
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


class CheckImaged(MapTransform):
    """Refuse images the enhancer cannot serve, with a reason: wrong dimensionality, too small,
    constant, non-finite values, or too many voxels for comfortable memory.

    Args:
        keys: images to check (channel first).
        max_voxels: refuse images larger than this many voxels (all channels).
        min_size: smallest accepted spatial side.
        max_slice_pixels: refuse images whose two largest spatial sides span more pixels than this.
    """

    def __init__(self, keys="image", max_voxels: int = MAX_VOXELS, min_size: int = 2, allow_missing_keys: bool = False,
                 max_slice_pixels: int = MAX_SLICE_PIXELS):
        super().__init__(keys, allow_missing_keys)
        self.max_voxels, self.min_size, self.max_slice_pixels = int(max_voxels), int(min_size), int(max_slice_pixels)

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
        if bool((t == t.reshape(-1)[0]).all()):
            raise ImageRefused("image is constant: nothing to enhance")


class SafeDataset(Dataset):
    """A MONAI ``Dataset`` that turns a failure to load or preprocess one item into an error record.

    The record ``{"error": reason, "image": path, "relpath": ...}`` flows through the data loader
    to the evaluator, which reports it and moves on to the next file.
    """

    def _transform(self, index: int) -> dict:
        item = self.data[index]
        if "error" in item or "skipped" in item:  # refused or already done before any work (see plan_outputs)
            return dict(item)
        path = item.get("image", "")
        if not os.path.isdir(path) and not image_suffix(path):
            return {**item, "error": f"unsupported file type '{os.path.splitext(path)[1] or path}'"}
        try:
            return super()._transform(index)
        except Exception as err:  # any reader or transform failure is one file's problem, not the run's
            return {**item, "error": one_line(err)}


def plan_outputs(
    items: Sequence[Mapping],
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    comparison: bool = False,
    resume: bool = False,
) -> list[dict]:
    """Decide every item's output before any work, and mark the items that must not be written.

    Each item gains ``source_path`` (the input as given, for messages). An item whose output
    would replace an input, collide with an earlier item's output, escape ``output_dir``, or
    replace an existing file without ``overwrite`` (its comparison panel too, with
    ``comparison``) gets an ``error`` instead, which :class:`SafeDataset` passes on unread.
    With ``resume``, an item whose outputs all exist is marked ``skipped`` instead: outputs are
    only ever renamed into place when complete, so an existing one is a finished one. An item
    with some of them (a run stopped between an output and its panel) is redone, and marked
    ``RESUME_REPLACE`` so that its writers may replace what the stopped run wrote.
    """
    from monai_dpe.visualize import comparison_path

    inputs = {Path(item["image"]).resolve() for item in items}
    series = [p for p in inputs if p.is_dir()]
    claimed: dict[Path, str] = {}
    planned = []
    for item in items:
        item = {**item, "source_path": str(item["image"])}
        try:
            dest = output_path(output_dir, str(item["relpath"]))
        except UnsafeOutputPath as err:
            planned.append({**item, "error": str(err)})
            continue
        target = dest.resolve()
        written = [dest, comparison_path(dest)] if comparison else [dest]
        if target in inputs or any(target.is_relative_to(p) for p in series):
            item["error"] = f"output {dest} would replace an input"
        elif target in claimed:
            item["error"] = f"output {dest} is also the output of {claimed[target]} (same name)"
        elif resume and not overwrite and all(p.exists() for p in written):
            item["skipped"] = str(dest)
        elif resume and not overwrite and any(p.exists() for p in written):
            item[RESUME_REPLACE] = True  # stopped between its files: redo it, replacing what it wrote
        elif not overwrite and any(p.exists() for p in written):
            existing = next(p for p in written if p.exists())
            item["error"] = f"output {existing} already exists (pass --overwrite to replace it)"
        claimed.setdefault(target, item["source_path"])
        planned.append(item)
    return planned


class EnhancementEvaluator(SupervisedEvaluator):
    """Enhance every item of a data loader (batch size 1), post-process and save each one in isolation.

    Postprocessing (inversion of the intensity policy, writing) runs inside the iteration, so an
    error while writing one file is reported for that file only. ``state.enhanced`` lists the
    outputs written and ``state.failed`` the ``(input, reason)`` pairs; each failure is logged
    once as ``"<input>: <reason>"``.

    Args:
        item_postprocessing: transform applied to each decollated item (e.g. ``Invertd`` then ``SaveEnhancedd``).
        summary_path: if given, a JSON summary (done, skipped, failed, reasons) is written there
            (atomically) at the end.
        others: as MONAI's ``SupervisedEvaluator``.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader,
        network: torch.nn.Module,
        inferer=None,
        item_postprocessing: Callable | None = None,
        summary_path: str | None = None,
        val_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device, val_data_loader=val_data_loader, network=network, inferer=inferer,
            val_handlers=val_handlers, decollate=False, **kwargs,
        )
        self.item_postprocessing = item_postprocessing
        self.summary_path = summary_path
        self.add_event_handler(Events.STARTED, self._reset_records)
        self.add_event_handler(Events.COMPLETED, self._summarise)

    def _reset_records(self, engine) -> None:
        engine.state.enhanced, engine.state.failed, engine.state.skipped = [], [], []

    def _fail(self, path: str, reason: str) -> None:
        self.state.failed.append((path, reason))
        logger.error("%s: %s", path, reason)

    def _iteration(self, engine, batchdata: dict) -> dict:
        path = _first(batchdata.get("image_path", batchdata.get("relpath", "")))
        if "skipped" in batchdata:
            engine.state.skipped.append(_first(batchdata["skipped"]))
            return {}
        if "error" in batchdata:
            self._fail(_first(batchdata.get("source_path", path)), _first(batchdata["error"]))
            return {}
        source = _first(batchdata.get("source_path", path))
        try:
            inputs = batchdata["image"].to(engine.state.device)
            engine.network.eval()
            with torch.inference_mode():
                pred = engine.inferer(inputs, engine.network)
            items = decollate_batch({**batchdata, "pred": pred.cpu()})
            del pred, inputs
            while items:
                out = self._postprocess(items.pop(0))
                engine.state.enhanced.append(out.get("output_path", source) if isinstance(out, dict) else source)
        except Exception as err:  # a failure while enhancing or writing one file must not stop the run
            self._fail(source, one_line(err))
        return {}

    def _postprocess(self, item: dict) -> Any:
        """Apply ``item_postprocessing`` transform by transform, holding no reference to earlier stages.

        A ``Compose`` keeps its input alive until its last transform returns, so the network's
        float32 output of a volume would stay in memory while the inverted copy is written;
        stepping through the flattened transforms frees each stage's output once the next exists.
        """
        if self.item_postprocessing is None:
            return item
        if not isinstance(self.item_postprocessing, Compose):
            return self.item_postprocessing(item)
        for transform in self.item_postprocessing.flatten().transforms:
            item = apply_transform(transform, item)
        return item

    def _summarise(self, engine) -> None:
        done, failed, skipped = len(engine.state.enhanced), len(engine.state.failed), len(engine.state.skipped)
        logger.info("enhanced %d file(s), %d skipped (done before), %d failed", done, skipped, failed)
        if self.summary_path:
            summary = {"done": done, "skipped": skipped, "failed": failed, "outputs": engine.state.enhanced,
                       "skipped_outputs": engine.state.skipped,
                       "failures": [{"input": p, "reason": r} for p, r in engine.state.failed]}
            with atomic_path(self.summary_path) as tmp, open(tmp, "w") as handle:
                json.dump(summary, handle, indent=2)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) and value else value


def raise_on_failures(evaluator: EnhancementEvaluator) -> None:
    """End a bundle run with an error (non-zero exit) if any file failed."""
    failed = getattr(evaluator.state, "failed", [])
    if failed:
        raise SystemExit(f"{len(failed)} file(s) failed: " + "; ".join(f"{p}: {r}" for p, r in failed))
