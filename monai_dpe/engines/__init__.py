"""Engines: the supervised adversarial trainer step for enhancement."""
from __future__ import annotations

from monai_dpe.engines.handlers import TrainingProgressBar, TrainingState
from monai_dpe.engines.trainer import PrepareImageTarget, SupervisedAdversarialTrainer

__all__ = ["SupervisedAdversarialTrainer", "PrepareImageTarget", "TrainingState", "TrainingProgressBar"]
