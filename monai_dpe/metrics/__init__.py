"""Metrics for enhancement: CIEDE2000 colour difference, structure PSNR and a capped PSNR (PSNR and SSIM come
from MONAI)."""
from __future__ import annotations

from monai_dpe.metrics.capped_psnr import CappedPSNRMetric
from monai_dpe.metrics.colour import ciede2000, delta_e_map, rgb_to_lab
from monai_dpe.metrics.delta_e import DeltaE, DeltaEMetric
from monai_dpe.metrics.structure import structure_psnr

__all__ = ["CappedPSNRMetric", "DeltaEMetric", "DeltaE", "ciede2000", "delta_e_map", "rgb_to_lab", "structure_psnr"]
