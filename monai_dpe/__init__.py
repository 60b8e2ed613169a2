"""monai-dpe: Deep Perceptual Enhancement for medical images, as MONAI components."""
from __future__ import annotations

__version__ = "0.24.0"
