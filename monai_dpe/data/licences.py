"""The data licence table of the bundle (``bundle/docs/data_license.txt``), written from the source registry.

One registry (``monai_dpe.data.sources``) says where each image comes from, its licence and its
split, so the table that credits the data is made from it rather than kept by hand.
"""
from __future__ import annotations

import os
from pathlib import Path

from monai_dpe.data.repositories import RepositoryCollection
from monai_dpe.data.sources import COLLECTIONS, SOURCES, ImageSource
from monai_dpe.files import atomic_path

__all__ = ["licence_table", "write_licence_table"]

_HEADER = """Data licences of the images that train, validate and test the shipped DPE weights

`make corpus` (python -m monai_dpe.data build) rebuilds the corpus: packaged images from PyPI and
Debian, and public Git repositories read at the pinned commits below. No image is redistributed in
this repository. The split is by source (one dataset, or one packaged image or volume).
Training sources must allow sharing weights trained on them (CC0, CC BY, public domain, or a
permissive licence covering the files). Test-only sources are never trained on; they are scored.

"""


_NOTES = """
Notes
- The shipped weights were trained from random weights on this table's training sources alone (CHANGELOG,
  0.17.0 to 0.21.0). Weights shipped before 0.21.0 descended from weights trained on a head CT volume under
  GPL-2 (Debian invesalius-examples, Cranium.inv3), which the corpus no longer holds.
- mr_brain_mni152: ICBM 2009 template, Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
  Montreal Neurological Institute, McGill University; free use with the copyright notice kept (validation only).
- ISIC 2017 challenge data is CC-0 (the challenge's data page, ImageMarkup/stade templates/data/2017.html).
- PBC (Acevedo et al.) is CC BY 4.0 (Mendeley Data doi:10.17632/snkd93bnjr.1); the repository's MIT licence covers
  its code only.
- histology_kather_crc: the repository states no licence of its own; its tiles are Kather et al.'s 2016
  texture collection (its eight tissue classes), which Zenodo 53169 publishes under CC BY 4.0.
- microscopy_em_isbi2012 and ultrasound_breast_busi state no licence: they are scored in the test split and
  never trained on.
"""


def _row(source: ImageSource | RepositoryCollection) -> str:
    if isinstance(source, RepositoryCollection):
        origin = f"github.com/{source.repo}@{source.commit[:12]} {' '.join(source.patterns)}"
        count = f" (up to {source.limit} files)" if source.limit else ""
        credit = f"\n{'':<32}credit: {source.attribution}{count}"
    else:
        origin, credit = f"{source.package_kind} {source.package}: {source.member}", ""
    return f"{source.name:<31} {source.modality:<11} {source.split:<10} {source.licence}\n{'':<32}{origin}{credit}"


def licence_table() -> str:
    """The table: one entry per source, grouped by split."""
    lines = [_HEADER.rstrip("\n"), "", f"{'source':<31} {'modality':<11} {'split':<10} licence", "-" * 100]
    for split in ("training", "validation", "test"):
        lines += [_row(s) for s in (*SOURCES, *COLLECTIONS) if s.split == split]
    return "\n".join(lines) + "\n" + _NOTES


def write_licence_table(path: str | os.PathLike) -> Path:
    """Write :func:`licence_table` to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path, suffix=".partial") as partial:
        partial.write_text(licence_table())
    return path
