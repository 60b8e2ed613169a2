"""Planning a run before any work: each input's output and panel path, and the inputs that must not be written.

Everything that can be decided from names and the file system is decided here, once, so that the
engine only runs the planned items: collisions, outputs that would replace inputs or escape the
output folder, existing outputs, what a resumed run keeps, and DICOM objects that are no images.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from monai_dpe.data.discovery import display_path, non_image_dicom_class
from monai_dpe.formats import DICOM_OUTPUT_SUFFIX, image_suffix, is_dicom_name
from monai_dpe.keys import ItemKeys
from monai_dpe.transforms.io import RESUME_REPLACE, UnsafeOutputPath, output_path
from monai_dpe.visualize import comparison_path

__all__ = ["NOT_IMAGE", "plan_outputs"]

#: item key: the reason an input is skipped as no image (a DICOM object of a non-image SOP class)
NOT_IMAGE = ItemKeys.NOT_IMAGE


def plan_outputs(
    items: Sequence[Mapping],
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    comparison: bool = False,
    resume: bool = False,
) -> list[dict]:
    """Decide every item's output before any work, and mark the items that must not be written.

    Each item gains ``source_path`` (the input as given, for messages), ``output_path`` and, with
    ``comparison``, ``panel_path`` (:class:`~monai_dpe.keys.ItemKeys`); the writers use them. An item whose output
    would replace an input, collide with an earlier item's output or panel, escape ``output_dir``, or
    replace an existing file without ``overwrite`` (its comparison panel too, with
    ``comparison``) gets an ``error`` instead, which :class:`SafeDataset` passes on unread; so does an
    input that lies in ``output_dir`` (a linked folder of an input led there).
    With ``resume``, an item whose outputs all exist is marked ``skipped`` instead: outputs are
    only ever renamed into place when complete, so an existing one is a finished one. An item
    with some of them (a run stopped between an output and its panel) is redone, and marked
    ``RESUME_REPLACE`` so that its writers may replace what the stopped run wrote. A DICOM
    object of a non-image SOP class (RT Dose, SEG, SR, ...) is marked ``NOT_IMAGE`` with the
    reason, claims no output name, and is counted as skipped. DICOM inputs whose NIfTI output
    would share its name with another input's output are named apart (:func:`_name_dicom_apart`).
    """
    out = Path(output_dir).resolve()
    inputs = {Path(item[ItemKeys.IMAGE]).resolve() for item in items if ItemKeys.ERROR not in item}
    inputs = {p for p in inputs if not p.is_relative_to(out)}  # refused below, they may be replaced
    series = [p for p in inputs if p.is_dir()]
    items = _name_dicom_apart(items, output_dir)
    claimed: dict[Path, str] = {}  # every output and panel path planned so far: what it is, and of which input
    planned = []
    for item in items:
        item = {**item, ItemKeys.SOURCE_PATH: display_path(item[ItemKeys.IMAGE])}
        if ItemKeys.ERROR in item:  # found unreadable (a link loop, a FIFO, a name ITK cannot take): never opened
            planned.append(item)
            continue
        if Path(item[ItemKeys.IMAGE]).resolve().is_relative_to(out):  # a linked folder led there
            planned.append({**item, ItemKeys.ERROR: f"lies in the output folder {output_dir}: outputs are not enhanced again"})
            continue
        sop_class = non_image_dicom_class(item[ItemKeys.IMAGE])
        if sop_class is not None:
            reason = f"skipped: SOP class {sop_class[0]} ({sop_class[1]}) is not image storage"
            planned.append({**item, NOT_IMAGE: reason})
            continue
        try:
            dest = output_path(output_dir, str(item[ItemKeys.RELPATH]))
        except UnsafeOutputPath as err:
            planned.append({**item, ItemKeys.ERROR: str(err)})
            continue
        item[ItemKeys.OUTPUT_PATH] = str(dest)
        if comparison:
            item[ItemKeys.PANEL_PATH] = str(comparison_path(dest))
        written = [dest, comparison_path(dest)] if comparison else [dest]
        targets = [p.resolve() for p in written]
        clash = next((p for p, t in zip(written, targets) if t in claimed), None)
        replaced = next((p for p, t in zip(written, targets) if t in inputs or any(t.is_relative_to(f) for f in series)),
                        None)
        if replaced is not None:
            item[ItemKeys.ERROR] = f"{'output' if replaced == dest else 'comparison panel'} {replaced} would replace an input"
        elif clash is not None:
            what = "output" if clash == dest else "comparison panel"
            item[ItemKeys.ERROR] = f"{what} {clash} is also {claimed[clash.resolve()]}"
        elif resume and not overwrite and all(p.exists() for p in written):
            item[ItemKeys.SKIPPED] = str(dest)
        elif resume and not overwrite and any(p.exists() for p in written):
            item[RESUME_REPLACE] = True  # stopped between its files: redo it, replacing what it wrote
        elif not overwrite and any(p.exists() for p in written):
            existing = next(p for p in written if p.exists())
            item[ItemKeys.ERROR] = f"output {existing} already exists (pass --overwrite to replace it)"
        for target, what in zip(targets, ("output", "comparison panel")):
            claimed.setdefault(target, f"the {what} of {item[ItemKeys.SOURCE_PATH]} (same name)")
        planned.append(item)
    return planned


def _name_dicom_apart(items: Sequence[Mapping], output_dir: str | os.PathLike) -> list[dict]:
    """Give DICOM inputs whose ``.nii.gz`` output name another input's output also has a name of their own.

    DICOM is written as NIfTI, so ``scan.dcm`` beside ``scan.nii.gz`` (or ``scan.IMA``, or a series
    folder ``scan``) would all be ``scan.nii.gz``. Each DICOM input of such a group is then named
    after its full name: ``scan.dcm`` -> ``scan.dcm.nii.gz``, ``scan.IMA`` -> ``scan.IMA.nii.gz``,
    and a series folder or extensionless file ``scan`` -> ``scan.dcm.nii.gz``; any other input
    keeps its name, as always. The item's ``relpath`` becomes that output name. A collision left
    after this is reported by :func:`plan_outputs` as before.
    """
    targets: dict[Path, list[int]] = {}
    for index, item in enumerate(items):
        if ItemKeys.ERROR in item:
            continue
        try:
            targets.setdefault(output_path(output_dir, str(item[ItemKeys.RELPATH])), []).append(index)
        except UnsafeOutputPath:  # reported by plan_outputs
            continue
    renamed = [dict(item) for item in items]
    for indices in targets.values():
        if len(indices) < 2:
            continue
        for index in indices:
            rel = Path(str(items[index][ItemKeys.RELPATH]))
            if is_dicom_name(rel.name):
                name = rel.name if image_suffix(rel.name) else f"{rel.name}.dcm"
                renamed[index][ItemKeys.RELPATH] = str(rel.with_name(f"{name}{DICOM_OUTPUT_SUFFIX}"))
    return renamed
