"""Write enhanced images next to nothing but themselves: same name and format, atomic, inside the output folder.

``SaveEnhancedd`` maps each input's path relative to its input root onto the output folder,
refuses names that would escape it, writes with MONAI's image writers to a temporary name and
renames on completion, so a crash never leaves a partial file under the final name.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_writer import ITKWriter, NibabelWriter, PILWriter
from monai.transforms import MapTransform

from monai_dpe.formats import (
    DICOM_OUTPUT_SUFFIX,
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    PHOTO_SUFFIXES,
    image_suffix,
    is_dicom_name,
)
from monai_dpe.files import partial_prefix
from monai_dpe.keys import ItemKeys
from monai_dpe.transforms.load import photo_header

__all__ = ["SaveEnhancedd", "StorageTyped", "output_path", "is_dicom_name", "UnsafeOutputPath", "RESUME_REPLACE",
           "DICOM_OUTPUT_SUFFIX"]

#: item key: a resumed run redoes an item it had half written and may replace those files
RESUME_REPLACE = ItemKeys.RESUME_REPLACE


class UnsafeOutputPath(ValueError):
    """An output name derived from an input would land outside the output folder."""


def output_path(output_dir: str | os.PathLike, relpath: str) -> Path:
    """Where the enhanced twin of the input at ``relpath`` (relative to its input root) goes.

    Same relative path and name; DICOM files and series folders become ``.nii.gz``. Absolute
    paths, ``..`` components and symlinked folders that lead out of ``output_dir`` are refused.
    """
    rel = Path(relpath)
    if rel.is_absolute() or any(part == ".." for part in rel.parts) or not rel.parts:
        raise UnsafeOutputPath(f"{relpath}: output name would escape the output folder.")
    if is_dicom_name(rel.name):
        suffix = image_suffix(rel.name)
        name = rel.name[: -len(suffix)] if suffix else rel.name
        rel = rel.with_name(name + DICOM_OUTPUT_SUFFIX)
    root = Path(output_dir).resolve()
    dest = root / rel
    if not dest.parent.resolve().is_relative_to(root) or (dest.is_symlink() and not dest.resolve().is_relative_to(root)):
        raise UnsafeOutputPath(f"{relpath}: output path {dest} leads outside {root}.")
    return dest


class NiftiWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` that keeps a NIfTI source's qform and sform, matrices and codes.

    MONAI sets both to the data's affine with code 1 (scanner). A registered image (sform code 2,
    aligned) or a template (code 4, MNI) would lose the space it is in, and where the source's
    qform and sform differ, ITK-based viewers (which use the qform) would place the enhanced image
    elsewhere than the original. The enhancement never resamples, so the source's forms still fit.
    """

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        forms = obj_kwargs.pop("source_forms", None)
        if forms is None:
            return super().write(filename, verbose=verbose, **obj_kwargs)
        super(NibabelWriter, self).write(filename, verbose=verbose)  # the base class only logs
        self.data_obj = self.create_backend_obj(self.data_obj, affine=self.affine, dtype=self.output_dtype, **obj_kwargs)
        (qform, qform_code), (sform, sform_code) = forms
        self.data_obj.set_qform(qform, code=qform_code)
        self.data_obj.set_sform(sform, code=sform_code)
        nib.save(self.data_obj, filename)


def _writer(suffix: str, array: torch.Tensor, source=None):
    if suffix in (".tif", ".tiff") and array.dim() == 4 and array.shape[-1] > 1:
        return ITKWriter  # a multi-page TIFF stack (read by ITK as a volume): ITK writes it back page by page
    if suffix in (".tif", ".tiff") and array.dtype in (torch.int8, torch.int16):
        return ITKWriter  # signed TIFF pixels: PIL has no mode to write them, ITK keeps the type
    if suffix in (".tif", ".tiff") and source and _itk_component_dtype(source) in (np.int32, np.uint32):
        return ITKWriter  # 32-bit integer TIFF: PIL would store 16 bits and clip, ITK keeps the type
    if suffix in PHOTO_SUFFIXES:
        return PILWriter
    if suffix in ITK_SUFFIXES:
        return ITKWriter
    return NiftiWriter


class SaveEnhancedd(MapTransform):
    """Save ``pred`` under ``output_dir`` with the input's relative path, name, format and dtype.

    Args:
        keys: the image to save (default ``"pred"``).
        output_dir: the output folder (created if needed).
        relpath_key: key holding the input's path relative to its input root.
        overwrite: replace existing outputs; otherwise an existing output is an error.
        output_key: the item's planned output path (``plan_outputs``), used when present; else
            the path is made from ``relpath_key`` under ``output_dir``, and recorded here.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = "./output",
        relpath_key: str = ItemKeys.RELPATH,
        overwrite: bool = False,
        output_key: str = ItemKeys.OUTPUT_PATH,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.relpath_key, self.overwrite, self.output_key = output_dir, relpath_key, overwrite, output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            dest = self.destination(d)
            if dest.exists() and not (self.overwrite or d.get(RESUME_REPLACE, False)):
                raise FileExistsError(f"{dest}: output exists (use overwrite to replace it).")
            source = d[key].meta.get("filename_or_obj") if isinstance(d[key], MetaTensor) else None
            if source and dest.exists() and os.path.exists(str(source)) and os.path.samefile(str(source), dest):
                raise UnsafeOutputPath(f"{dest}: output would replace its input.")
            self.write(d[key], dest)
            d[self.output_key] = str(dest)
        return d

    def destination(self, d: Mapping) -> Path:
        """The item's planned output (inside ``output_dir``: a plan never writes elsewhere), else one made from its relpath."""
        planned = d.get(self.output_key)
        if not planned:
            return output_path(self.output_dir, str(d[self.relpath_key]))
        if not Path(planned).resolve().is_relative_to(Path(self.output_dir).resolve()):
            raise UnsafeOutputPath(f"planned output {planned} lies outside the output folder {self.output_dir}; refused")
        return Path(planned)

    @staticmethod
    def write(image: torch.Tensor, dest: Path) -> None:
        """Write ``image`` (channel first, with its metadata) to ``dest`` atomically.

        The writer works in a hidden temporary folder next to ``dest``; the finished files
        (a header and its data file for ``.mhd``) are then renamed into place, header last.
        """
        suffix = image_suffix(dest.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        array = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
        writer_type = _writer(suffix, array, meta.get("filename_or_obj"))
        array = _storage_array(writer_type, array, meta.get("filename_or_obj"))
        # PILWriter would otherwise clip to [0, 1] and rescale to 255: the data are already in their dtype's units
        options = {"scale": None} if writer_type is PILWriter else {}
        writer = writer_type(output_dtype=array.numpy().dtype, **options)
        spatial_ndim = array.dim() - 1
        # volumes keep a trailing singleton slice axis so the data matches its 3D affine
        squeeze = writer_type is PILWriter
        if writer_type is ITKWriter and array.shape[0] == 1:  # a scalar image, as read (not a 1-component vector)
            writer.set_data_array(array[0], channel_dim=None, squeeze_end_dims=False, spatial_ndim=spatial_ndim)
        else:
            writer.set_data_array(array, channel_dim=0, squeeze_end_dims=squeeze, spatial_ndim=spatial_ndim)
        if writer_type is NiftiWriter:
            writer.data_obj = _nifti_layout(writer.data_obj, array.shape[0], _nifti_shape(meta.get("filename_or_obj")))
        if writer_type is PILWriter:
            writer.set_metadata(meta, resample=False)
        else:
            # the data keep the source's grid; MONAI's no-op resample trips over a 2D NIfTI's 3D affine
            # and over a single-channel 2D ITK image written as a scalar image
            writer.affine = meta.get("affine")
        tmp_dir = Path(tempfile.mkdtemp(dir=dest.parent, prefix=partial_prefix(dest)))
        try:
            options = _writer_options(writer_type, meta.get("filename_or_obj"), suffix, array.numpy().dtype,
                                      array.shape[0])
            writer.write(tmp_dir / dest.name, verbose=False, **options)
            for part in sorted(tmp_dir.iterdir(), key=lambda p: p.name == dest.name):
                os.chmod(part, 0o644)
                os.replace(part, dest.parent / part.name)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _nifti_layout(data, channels: int, source_shape: tuple[int, ...] | None = None):
    """The channel-last array as NIfTI stores it: one channel as a plain (X, Y[, Z]) image, as read,
    or in the source's shape where that only adds trailing singleton axes (a single time point
    stored as (X, Y, Z, 1) stays 4D, with its time step); colour as a vector image (X, Y, Z, 1, C),
    the standard's place for components (4th dimension time, 5th components), which ITK, 3D
    Slicer and monai-dpe itself read back as colour."""
    if channels == 1:
        plain = data[..., 0]
        extra = source_shape[plain.ndim:] if source_shape and tuple(source_shape[: plain.ndim]) == plain.shape else None
        return plain.reshape(source_shape) if extra and all(s == 1 for s in extra) else plain
    while data.ndim < 4:  # a 2D colour image: a single slice, then the components
        data = data[..., None, :]
    return data[..., None, :]


_ITK_COMPONENT_DTYPES = {"unsigned_char": np.uint8, "char": np.int8, "unsigned_short": np.uint16, "short": np.int16,
                         "unsigned_int": np.uint32, "int": np.int32}


def _storage_array(writer_type, array: torch.Tensor, source) -> torch.Tensor:
    """The enhanced array in the integer type its file stores: MONAI gives uint16 pixels as int32.

    PNG and TIFF (PIL) take at most 16 bits unsigned; NRRD/MHA and NIfTI go back to the source's
    own integer type (an unscaled uint16 NIfTI left as int32 would make nibabel store it with a
    slope and intercept, and values outside uint16).
    """
    if array.is_floating_point() or array.element_size() <= 2:
        return array
    if writer_type is PILWriter:
        target = np.uint16
    elif writer_type is ITKWriter and source:
        target = _itk_component_dtype(source)
    elif writer_type is NiftiWriter and source:
        target = _nifti_integer_dtype(source)
    else:
        return array
    values = array.detach().cpu().numpy()  # on the CPU, where writers take it (a GPU run's pred is on the GPU)
    if target is None or values.dtype == target:
        return array
    limits = np.iinfo(target)  # numpy clips any integer type (torch has no clamp for uint32)
    return torch.from_numpy(np.clip(values, limits.min, limits.max).astype(target))


def _itk_component_dtype(source) -> type | None:
    """The 8/16/32-bit integer pixel type an ITK-read source stores, from its header; None otherwise."""
    try:
        import itk

        io = itk.ImageIOFactory.CreateImageIO(str(source), itk.CommonEnums.IOFileMode_ReadMode)
        io.SetFileName(str(source))
        io.ReadImageInformation()
        return _ITK_COMPONENT_DTYPES.get(io.GetComponentTypeAsString(io.GetComponentType()))
    except Exception:  # not an ITK file or an unreadable header: keep the array's own type
        return None


def _source_nifti_header(source) -> nib.Nifti1Header | None:
    """The header of a NIfTI-1 source file (read once per file version; not to be modified); None otherwise."""
    if not source or image_suffix(str(source)) not in NIFTI_SUFFIXES:  # DICOM included: its own suffixes
        return None
    try:
        stat = os.stat(source)
    except OSError:
        return None
    # the inode and change time too: a file replaced in place with its mtime kept (cp -p, rsync -t) is another file
    return _read_nifti_header(str(source), stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)  # a write asks for its source's dtype, shape, forms and header: one read serves all
def _read_nifti_header(path: str, inode: int, mtime_ns: int, ctime_ns: int, size: int) -> nib.Nifti1Header | None:
    try:
        header = nib.load(path).header
    except Exception:  # a header that cannot be read again: the writer's defaults apply
        return None
    return header if isinstance(header, nib.Nifti1Header) else None


def _nifti_integer_dtype(source) -> type | None:
    """The integer type an unscaled NIfTI source stores its voxels in; None otherwise."""
    header = _source_nifti_header(source)
    if header is None:
        return None
    dtype = header.get_data_dtype()
    slope, _ = header.get_slope_inter()
    return dtype.type if dtype.names is None and np.issubdtype(dtype, np.integer) and slope is None else None


def _nifti_shape(source) -> tuple[int, ...] | None:
    """A NIfTI source's stored shape (with any trailing singleton axes); None for other sources."""
    header = _source_nifti_header(source)
    return None if header is None else tuple(int(s) for s in header.get_data_shape())


def _nifti_forms(source) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]] | None:
    """A NIfTI source's (qform, code) and (sform, code), which :class:`NiftiWriter` keeps."""
    header = _source_nifti_header(source)
    if header is None:
        return None
    return (header.get_qform(), int(header["qform_code"])), (header.get_sform(), int(header["sform_code"]))


def _writer_options(writer_type, source, suffix: str, dtype: np.dtype, channels: int = 1) -> dict:
    """What the writer keeps from the source file beyond pixels and grid."""
    if writer_type is PILWriter:
        return _photo_options(source, suffix)
    if writer_type is NiftiWriter:
        header = _nifti_header(source, dtype)
        if channels > 1:  # colour, laid out by _nifti_layout: say that the 5th dimension holds components
            header = header if header is not None else nib.Nifti1Header()
            header.set_intent("vector")
        options = {} if header is None else {"header": header}
        forms = _nifti_forms(source)
        return options if forms is None else {**options, "source_forms": forms}
    return {}


def _nifti_header(source, dtype: np.dtype) -> nib.Nifti1Header | None:
    """The source NIfTI's header, so its twin keeps units, intent, description and on-disk dtype.

    A scaled integer source (``scl_slope``) is read as floats; with its header nibabel stores the
    enhanced floats back in the source's integer type with a fresh slope and intercept. DICOM,
    written as NIfTI, gets a header that says millimetres, the unit DICOM positions are in. Packed
    RGB (a structured dtype) keeps its units; its components are written as a vector image.
    ``None``: MONAI's default header.
    """
    if not source:
        return None
    if is_dicom_name(str(source)):
        header = nib.Nifti1Header()
        header.set_data_dtype(dtype)
        header.set_xyzt_units("mm")
        return header
    source_header = _source_nifti_header(source)
    if source_header is None:
        return None
    if source_header.get_data_dtype().names is not None:
        header = nib.Nifti1Header()
        header.set_data_dtype(dtype)
        header.set_xyzt_units(*source_header.get_xyzt_units())
        return header
    return source_header.copy()


def _photo_options(source, suffix: str) -> dict:
    """PIL save options: JPEG at quality 95, and the source photo's resolution and colour profile."""
    options = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
    return {**options, **photo_header(source)} if source else options


class StorageTyped(MapTransform):
    """Give each image the integer type its source file stores (MONAI reads uint16 pixels as int32).

    ``SaveEnhancedd`` does the same when it writes; this transform ends the bundle's
    ``postprocessing`` so that callers with their own writer (MONAI Label's infer task) get the
    source's type too. The image's format decides, as in :class:`SaveEnhancedd`: NIfTI, NRRD,
    MetaImage and 32-bit TIFF go back to the source header's integer type, PNG and other TIFF to
    at most 16 bits.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            source = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
            if not source:  # nothing says which file, so nothing says which type
                continue
            array = image.as_tensor()
            stored = _storage_array(_writer(_output_suffix(str(source)), array, source), array, source)
            if stored.dtype != array.dtype:
                d[key] = MetaTensor(stored, meta=image.meta, applied_operations=image.applied_operations)
        return d


def _output_suffix(source: str) -> str:
    """The suffix an output of ``source`` gets: its own, or NIfTI for DICOM."""
    return DICOM_OUTPUT_SUFFIX if is_dicom_name(source) else image_suffix(source)
