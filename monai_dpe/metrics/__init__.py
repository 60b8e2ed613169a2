"""Metrics for enhancement: CIEDE2000 colour difference (PSNR and SSIM come from MONAI)."""
from __future__ import annotations

from monai_dpe.metrics.colour import ciede2000, delta_e_map, rgb_to_lab
from monai_dpe.metrics.delta_e import DeltaE, DeltaEMetric

__all__ = ["DeltaEMetric", "DeltaE", "ciede2000", "delta_e_map", "rgb_to_lab"]
