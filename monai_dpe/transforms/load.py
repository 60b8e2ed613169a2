"""Read photos as a viewer shows them (upright, with intensities rather than palette indices or
inks) and colour NIfTI as colour.

MONAI's ``PILReader`` hands each opened PNG/JPEG/BMP to a converter; ``LoadDisplayImaged`` is
MONAI's loader with that reader added, and with :class:`ColourNiftiReader` for NIfTI. ``photo_header``
gives the writer what the pixels alone do not carry: the photo's resolution and colour profile, as
they apply to the converted pixels.
"""
from __future__ import annotations

import os

import numpy as np
from monai.config import KeysCollection
from monai.data import ITKReader, NibabelReader, PILReader
from monai.transforms import LoadImage, LoadImaged
from PIL import Image as PILImage
from PIL import ImageOps

from monai_dpe.formats import is_dicom_name
from monai_dpe.keys import ItemKeys
from monai_dpe.transforms.checks import ImageRefused, placed_slices

__all__ = ["ColourNiftiReader", "DicomSeriesPartReader", "LoadDisplayImage", "LoadDisplayImaged", "pil_display_converter", "photo_header"]

# PIL modes whose pixel values are not intensities: palette indices, and ink amounts or other colour
# spaces (whose ICC profile, if any, does not describe the RGB copy)
_PALETTE_MODES = ("P", "PA")
_OTHER_SPACE_MODES = ("CMYK", "YCbCr", "LAB", "HSV")
_TO_RGB_MODES = _PALETTE_MODES + _OTHER_SPACE_MODES
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def pil_display_converter(image: PILImage.Image) -> PILImage.Image:
    """An opened PNG/JPEG/BMP as the intensities a viewer shows: upright, grey or RGB(A).

    A palette image would otherwise be enhanced as its index map, a CMYK JPEG's black ink taken
    for alpha, and a 1-bit image cast back to all-white; an EXIF-rotated photo would be written
    unrotated (without its EXIF), so it would display turned. Palettes become RGB(A), or grey
    (with alpha) when every entry is grey; other non-intensity modes become RGB, 1-bit becomes
    8-bit grey, and the EXIF orientation is applied.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _TO_RGB_MODES:
        alpha = image.mode == "PA" or (image.mode == "P" and "transparency" in image.info)
        grey = image.mode in _PALETTE_MODES and _grey_palette(image)
        return image.convert(("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB"))
    if image.mode == "1":
        return image.convert("L")
    return image


def _grey_palette(image: PILImage.Image) -> bool:
    palette = image.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


class ColourNiftiReader(NibabelReader):
    """MONAI's ``NibabelReader`` that also reads the two colour encodings NIfTI has, channel last.

    Packed colour (datatype RGB24 or RGBA32, which nibabel gives as a structured array that MONAI
    cannot convert) is unpacked to its components; a vector image (the standard's 5th dimension,
    shape ``(X, Y, Z, 1, C)``, as ITK and monai-dpe write colour) has its singleton 4th dimension
    dropped. Grey images and 4D series read exactly as with ``NibabelReader``.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(squeeze_non_spatial_dims=True, **kwargs)

    def _get_array_data(self, img, filename):
        data = super()._get_array_data(img, filename)
        if data.dtype.names:
            from numpy.lib import recfunctions

            data = recfunctions.structured_to_unstructured(np.asarray(data))
        return data


class DicomSeriesPartReader(ITKReader):
    """MONAI's ``ITKReader`` for a list of DICOM slices that are one volume (a part of a series split at its gaps).

    ``ITKReader`` reads a list as separate images stacked into channels, and a folder as its whole
    series; this reads the files given, in their order, with ITK's series reader, which takes the
    spacing and origin from their positions. It serves lists of two or more DICOM files only; other
    lists are MONAI's (images stacked as channels).
    """

    def verify_suffix(self, filename) -> bool:
        return (isinstance(filename, (list, tuple)) and len(filename) > 1 and all(map(is_dicom_name, filename))
                and super().verify_suffix(filename))

    def read(self, data, **kwargs):
        import itk

        return itk.imread([str(f) for f in data], **{**self.kwargs, **kwargs})


def _register_display_readers(loader) -> None:
    """Register the readers monai-dpe adds; later ones are tried first for the suffixes they serve."""
    loader.register(ColourNiftiReader())
    loader.register(PILReader(converter=pil_display_converter))
    loader.register(DicomSeriesPartReader())


class LoadDisplayImage(LoadImage):
    """MONAI's ``LoadImage`` with :class:`LoadDisplayImaged`'s extra readers: photos as a viewer shows
    them, colour NIfTI as colour."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _register_display_readers(self)


class LoadDisplayImaged(LoadImaged):
    """MONAI's ``LoadImaged`` with two more readers: ``PILReader`` with :func:`pil_display_converter`,
    and :class:`ColourNiftiReader`.

    The readers are registered after MONAI's own, so they take the suffixes they serve (PNG, JPEG,
    BMP; NIfTI) while MONAI keeps choosing readers by suffix for everything else: a multi-page TIFF
    stays with ITK (a volume), which a reader passed as ``reader=`` would not guarantee, since MONAI
    then tries that reader on every file and PIL opens the first page of any TIFF.

    An item with ``series_files`` (:class:`~monai_dpe.keys.ItemKeys`) is one part of a DICOM series
    split at its gaps: those files are read as its image, with :class:`DicomSeriesPartReader`.
    """

    def __init__(self, keys: KeysCollection, *args, **kwargs) -> None:
        super().__init__(keys, *args, **kwargs)
        _register_display_readers(self._loader)

    def __call__(self, data, reader=None):
        files = data.get(ItemKeys.SERIES_FILES)
        d = dict(data)
        for key in self.key_iterator(d):
            if files:
                d[key] = list(files) if len(files) > 1 else files[0]
            elif isinstance(d[key], (str, os.PathLike)) and os.path.isdir(d[key]):
                files = placed_slices(d[key])  # sidecars and notes in the folder are not slices
        loaded = super().__call__(d, reader)
        if files and len(files) > 1:
            _check_all_slices_read(loaded, self.keys, len(files))
        return loaded


def _check_all_slices_read(data, keys, expected: int) -> None:
    """ITK's series reader drops a slice it cannot decode (a truncated file) and spreads the rest over
    the span: the volume would be written with a made-up spacing. Refuse it instead."""
    for key in keys:
        image = data.get(key)
        depth = int(image.shape[-1]) if image is not None and image.ndim == 4 else 1
        if depth != expected:
            raise ImageRefused(f"not one volume: {expected} slice files but {depth} slices could be read (a truncated or "
                               "unreadable slice?); a volume would get a made-up spacing, so the series is refused")


def photo_header(path: str | os.PathLike) -> dict:
    """The resolution (``dpi``: a photo's physical scale) and colour profile (``icc_profile``) of the
    photo at ``path``, as PIL save options for its enhanced copy.

    They describe the pixels :func:`pil_display_converter` made: the resolution turns with an EXIF
    rotation of 90 degrees, and a CMYK or other non-RGB profile is dropped (the copy is RGB). An
    unreadable header gives no options; the pixels were read already.
    """
    try:
        with PILImage.open(path) as image:
            info, mode = dict(image.info), image.mode
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return {}
    options = {}
    if info.get("dpi"):
        dpi = tuple(info["dpi"])
        options["dpi"] = dpi[::-1] if orientation in _TRANSPOSING_ORIENTATIONS else dpi
    if info.get("icc_profile") and mode not in _OTHER_SPACE_MODES:
        options["icc_profile"] = info["icc_profile"]
    return options
