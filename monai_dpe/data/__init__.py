"""Training and validation data for DPE: the corpus of real medical images and its datalists."""
from __future__ import annotations

from monai_dpe.data.corpus import CorpusEntry, CorpusReport, build_corpus
from monai_dpe.data.discovery import find_images, image_suffix, is_dicom_series_dir
from monai_dpe.data.datalist import (
    datalist_from_folder,
    describe_image,
    load_scored_split,
    load_split,
    sampling_weights,
    validate_datalist,
    with_presets,
    write_datalist,
)
from monai_dpe.data.ranks import training_share, validation_share
from monai_dpe.data.sources import MODALITIES, SOURCES, SPLITS, ImageSource, SourceUnavailable, get_source

__all__ = [
    "MODALITIES",
    "SOURCES",
    "SPLITS",
    "CorpusEntry",
    "CorpusReport",
    "ImageSource",
    "SourceUnavailable",
    "build_corpus",
    "datalist_from_folder",
    "find_images",
    "image_suffix",
    "is_dicom_series_dir",
    "describe_image",
    "get_source",
    "load_scored_split",
    "load_split",
    "sampling_weights",
    "training_share",
    "validate_datalist",
    "validation_share",
    "with_presets",
    "write_datalist",
]
