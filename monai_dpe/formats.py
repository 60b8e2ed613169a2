"""What kind of file an image is: the one place that knows suffixes, DICOM names and display formats.

On the ground floor: it imports nothing from monai_dpe, and every layer asks it.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DICOM_SUFFIXES",
    "PHOTO_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "IMAGE_SUFFIXES",
    "DICOM_OUTPUT_SUFFIX",
    "image_suffix",
    "is_dicom_name",
    "is_display_format",
    "is_dicom_file",
    "DICOMDIR",
]

#: DICOM file suffixes in use: the standard's ``.dcm``, ``.dicom``, and Siemens' ``.IMA`` (any case).
#: Extensionless DICOM files are recognised by their content (``pydicom.misc.is_dicom``).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: Photo and slide formats (Pillow reads and writes them; their 8-bit pixels are display values).
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: NIfTI, read and written with NiBabel.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Volume formats read and written with ITK.
ITK_SUFFIXES = (".nrrd", ".mha", ".mhd")
#: File suffixes that MONAI's ``LoadImage`` reads with the readers monai-dpe installs.
IMAGE_SUFFIXES = (*PHOTO_SUFFIXES, *DICOM_SUFFIXES, *NIFTI_SUFFIXES, *ITK_SUFFIXES)
#: DICOM (files and series) is written as NIfTI: MONAI has no DICOM writer.
DICOM_OUTPUT_SUFFIX = ".nii.gz"
#: A DICOM media index: no pixels, no series of its own.
DICOMDIR = "DICOMDIR"


def image_suffix(path: str | os.PathLike) -> str:
    """The format suffix of a path, with ``.nii.gz`` as one suffix; ``""`` for unsupported files."""
    name = os.path.basename(str(path)).lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return ""


def is_dicom_name(path: str | os.PathLike) -> bool:
    """A DICOM file (any of ``DICOM_SUFFIXES``), an extensionless DICOM file or a series folder: what
    the file name alone says (content checks are discovery's)."""
    return image_suffix(path) in (*DICOM_SUFFIXES, "")


def is_display_format(path: str | os.PathLike) -> bool:
    """8-bit pixels of this file are display values: a photo or slide format, or DICOM as viewers show it."""
    return image_suffix(path) in (*PHOTO_SUFFIXES, *DICOM_SUFFIXES, "")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """An extensionless DICOM image file (PACS exports often drop the suffix); not a DICOMDIR index."""
    from pydicom.misc import is_dicom

    path = Path(path)
    try:  # only a regular file is opened: a FIFO would block the read
        return not path.suffix and path.name.upper() != DICOMDIR and path.is_file() and is_dicom(path)
    except OSError:
        return False
