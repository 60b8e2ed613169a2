"""The keys of an enhancement item: the one schema that discovery, planning, the transforms and the engine share.

As MONAI's ``CommonKeys`` does for its engines, this names each fact an item carries on its way
from an input file to its output. Each is decided once, by the step named, and later steps read it.
"""
from __future__ import annotations

__all__ = ["ItemKeys"]


class ItemKeys:
    """Item keys, with the step that writes each."""

    IMAGE = "image"  # discovery: the input path (a file or a DICOM series folder); the loader: the image
    RELPATH = "relpath"  # discovery: the path below its input root, which the output mirrors
    SERIES_FILES = "series_files"  # discovery: the files of one evenly spaced part of a series split at its gaps
    SOURCE_PATH = "source_path"  # planning: the input as given, for messages
    OUTPUT_PATH = "output_path"  # planning: where the enhanced image is written
    PANEL_PATH = "panel_path"  # planning, with comparison panels: where the item's panel is written
    ERROR = "error"  # discovery, planning or reading: why the item fails (one line)
    SKIPPED = "skipped"  # planning, on resume: the finished output that is kept
    NOT_IMAGE = "not_image"  # planning: why a DICOM object is not enhanced (its SOP class)
    RESUME_REPLACE = "resume_replace"  # planning, on resume: the writers may replace a stopped run's files
    PRED = "pred"  # the engine: the enhanced image
