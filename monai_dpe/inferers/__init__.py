"""Inferers: slice-wise inference so 2D enhancement networks serve 3D volumes."""
from __future__ import annotations

from monai_dpe.inferers.slice_inferer import SliceWiseInferer, hold_channels_last

__all__ = ["SliceWiseInferer", "hold_channels_last"]
