"""Before/after panels: what the enhancement changed, for a reader to judge at a glance.

:func:`save_comparison` draws input, output and their absolute difference side by side (the
middle slice along each axis for volumes), input and output on one display window so a
brightness or contrast change stays visible. :class:`SaveComparisond` does it for each enhanced
item of the bundle's post-processing (``save_comparison`` in ``inference.json``).
"""
from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from monai_dpe.extras import require
from monai_dpe.files import atomic_path
from monai_dpe.keys import ItemKeys
from monai_dpe.transforms.io import RESUME_REPLACE
from monai_dpe.transforms.load import LoadDisplayImage

__all__ = ["save_comparison", "comparison_path", "SaveComparisond"]

COMPARISON_SUFFIX = "_comparison.png"
_MAX_SIDE = 1024  # a panel shows a few hundred pixels a side: larger images are strided first


def comparison_path(output: str | os.PathLike) -> Path:
    """The panel next to an enhanced output: ``scan.nii.gz`` -> ``scan.nii.gz_comparison.png``.

    The output's whole name is kept, so ``a.png`` and ``a.jpg`` in one folder get a panel each.
    """
    output = Path(output)
    return output.with_name(output.name + COMPARISON_SUFFIX)


def save_comparison(input_img, output_img, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write a PNG panel of ``input_img``, ``output_img`` and ``|output - input|`` to ``path``.

    Args:
        input_img: channel-first image (C, H, W) or volume (C, X, Y, Z), array or tensor; an
            alpha channel (2 or 4 channels) is left out of the panel.
        output_img: the enhanced image, same shape and units as ``input_img``.
        path: the PNG to write (atomically: a hidden temporary name, then renamed).
        title: a heading for the figure (e.g. the input's name).

    Both images share one display window (0-255 for 8-bit input, otherwise the 0.5-99.5
    percentiles of both together); the difference has its own scale, shown by a colour bar.
    Volumes get one row per axis, through the middle slice; pixel aspect follows the spacing
    of a ``MetaTensor``'s affine.
    """
    require("matplotlib", "the before/after panel (--save-comparison)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    before, after = _colour_planes(input_img), _colour_planes(output_img)
    if before.shape != after.shape:
        raise ValueError(f"input and output shapes differ: {before.shape} vs {after.shape}")
    spacing = _spacing(input_img, before.ndim - 1)
    lo, hi = _window(input_img, before, after)
    diff = np.abs(after - before).mean(axis=0)
    diff_max = float(np.percentile(diff, 99.5)) or float(diff.max()) or 1.0
    views = _views(before.shape[1:], spacing)

    # each row as tall as its slice is displayed, within limits, so thin slabs leave no blank bands
    heights = [min(max(_shown_ratio(before.shape[1:], index, aspect), 0.25), 1.5) for index, aspect, _ in views]
    fig = Figure(figsize=(10.5, 0.6 + sum(3.1 * h + 0.3 for h in heights)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(views), 3, squeeze=False, gridspec_kw={"height_ratios": heights})
    for row, (index, aspect, label) in enumerate(views):
        panels = [(before[(slice(None), *index)], "input"), (after[(slice(None), *index)], "output (enhanced)")]
        for col, (plane, name) in enumerate(panels):
            shown = np.clip((plane - lo) / (hi - lo), 0.0, 1.0)
            shown = shown[0].T if shown.shape[0] == 1 else np.moveaxis(shown, 0, -1).transpose(1, 0, 2)
            axes[row, col].imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, aspect=aspect, interpolation="nearest",
                                  origin=_origin(before.ndim))
            axes[row, col].set_title(name if not label else f"{name}, {label}", fontsize=9)
        change = axes[row, 2].imshow(diff[index].T, cmap="magma", vmin=0.0, vmax=diff_max, aspect=aspect,
                                     interpolation="nearest", origin=_origin(before.ndim))
        axes[row, 2].set_title(f"|output - input| (mean {float(diff[index].mean()):.3g})", fontsize=9)
        fig.colorbar(change, ax=axes[row, 2], shrink=0.8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title + ': ' if title else ''}display window [{lo:.4g}, {hi:.4g}]", fontsize=10)
    return _save_atomic(fig, Path(path))


def _colour_planes(img) -> np.ndarray:
    """float64 (C, spatial...) without alpha or singleton spatial axes, strided to at most _MAX_SIDE a side."""
    array = np.asarray(img.detach().cpu()) if isinstance(img, torch.Tensor) else np.asarray(img)
    if array.ndim < 3:
        raise ValueError(f"expected a channel-first image, got shape {array.shape}")
    if array.shape[0] in (2, 4):
        array = array[:-1]
    array = array.reshape([s for i, s in enumerate(array.shape) if i == 0 or s > 1])
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a 2D image or a 3D volume, got shape {array.shape}")
    step = -(-max(array.shape[1:]) // _MAX_SIDE)  # one stride on every axis keeps the aspect
    return array[(slice(None),) + (slice(None, None, step),) * (array.ndim - 1)].astype(np.float64)


def _spacing(img, ndim: int) -> tuple[float, ...]:
    """Voxel sizes of the non-singleton spatial axes, from a ``MetaTensor``'s affine (else all 1)."""
    affine = img.meta.get("affine") if isinstance(img, MetaTensor) else None
    if affine is None:
        return (1.0,) * ndim
    linear = np.asarray(affine, dtype=np.float64)[:-1, :-1]
    sizes = img.shape[1:]
    spacing = [float(np.linalg.norm(linear[:, i])) if i < linear.shape[1] else 1.0 for i in range(len(sizes))]
    kept = [sp if sp > 0 else 1.0 for sp, n in zip(spacing, sizes) if n > 1]
    return tuple(kept) if len(kept) == ndim else (1.0,) * ndim


def _window(input_img, before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    dtype = input_img.dtype
    if dtype in (torch.uint8, np.uint8):
        return 0.0, 255.0
    both = np.concatenate([before.ravel(), after.ravel()])
    both = both[np.isfinite(both)][:: max(1, both.size // 2_000_000)]
    lo, hi = (float(v) for v in np.percentile(both, [0.5, 99.5])) if both.size else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _views(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[tuple[tuple, float, str]]:
    """(index into the spatial axes, pixel aspect, label) for each row of the panel."""
    if len(shape) == 2:
        return [((slice(None), slice(None)), spacing[1] / spacing[0], "")]
    views = []
    for axis in range(3):
        middle = shape[axis] // 2
        index = tuple(middle if a == axis else slice(None) for a in range(3))
        rows, cols = [a for a in range(3) if a != axis][::-1]  # the plane is shown transposed
        views.append((index, spacing[rows] / spacing[cols], f"axis {axis} slice {middle}"))
    return views


def _shown_ratio(shape: tuple[int, ...], index: tuple, aspect: float) -> float:
    """Height over width of a plane as displayed (transposed: rows are its second axis)."""
    cols, rows = (n for n, i in zip(shape, index) if isinstance(i, slice))
    return rows * aspect / cols


def _origin(ndim: int) -> str:
    return "upper" if ndim == 3 else "lower"  # 2D pictures as they are viewed; volume slices with the axes rising


def _save_atomic(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


class SaveComparisond(MapTransform):
    """Write :func:`save_comparison`'s panel next to each saved output (``<name>_comparison.png``).

    The input is read again from its file (``filename_or_obj`` of ``source_key``'s metadata), so
    the panel compares the file as given with the output as saved, in the same units.

    Args:
        keys: the enhanced image, after inversion to the input's units (default ``"pred"``).
        source_key: the key whose metadata names the input file.
        output_key: the key where the writer recorded the output's path.
        enabled: draw panels; ``False`` makes this transform do nothing (a config switch).
        overwrite: replace an existing panel; otherwise an existing panel is an error.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        source_key: str = ItemKeys.IMAGE,
        output_key: str = ItemKeys.OUTPUT_PATH,
        enabled: bool = True,
        overwrite: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key, self.output_key = source_key, output_key
        self.enabled, self.overwrite = bool(enabled), bool(overwrite)
        # the input panel as the enhancer read it (upright, palette as colours)
        self.loader = LoadDisplayImage(image_only=True, dtype=None, ensure_channel_first=True)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            source = d[self.source_key].meta["filename_or_obj"]
            part = d.get(ItemKeys.SERIES_FILES)  # a part of a series split at its gaps: its own files
            title = os.path.basename(str(d[ItemKeys.RELPATH])) if part else os.path.basename(str(source))
            source = (list(part) if len(part) > 1 else part[0]) if part else source
            panel = Path(d[ItemKeys.PANEL_PATH]) if d.get(ItemKeys.PANEL_PATH) else comparison_path(d[self.output_key])
            if panel.exists() and not (self.overwrite or d.get(RESUME_REPLACE, False)):
                raise FileExistsError(f"{panel}: comparison exists (pass --overwrite to replace it).")
            save_comparison(self.loader(source), d[key], panel, title=title)
        return d
