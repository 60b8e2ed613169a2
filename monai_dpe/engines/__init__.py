"""Engines: the supervised adversarial trainer for enhancement and the fault-isolating enhancement runner."""
from __future__ import annotations

from monai_dpe.engines.enhancer import EnhancementEvaluator, SafeDataset, one_line, raise_on_failures
from monai_dpe.engines.handlers import (
    averaged_model_records,
    BestMetricRecord,
    EpochSeeder,
    TimeLimit,
    TrainingProgressBar,
    TrainingState,
    WeightsRecord,
    best_model_records,
    enabled_handlers,
)
from monai_dpe.engines.planning import plan_outputs
from monai_dpe.engines.schedules import CosineDecay, CosineDecayLR, decay_handlers, decay_schedulers
from monai_dpe.engines.trainer import PrepareImageTarget, SupervisedAdversarialTrainer, prepare_with_level

__all__ = [
    "BestMetricRecord",
    "CosineDecay",
    "CosineDecayLR",
    "decay_handlers",
    "decay_schedulers",
    "EnhancementEvaluator",
    "SafeDataset",
    "one_line",
    "plan_outputs",
    "raise_on_failures",
    "SupervisedAdversarialTrainer",
    "PrepareImageTarget",
    "prepare_with_level",
    "TrainingState",
    "EpochSeeder",
    "TrainingProgressBar",
    "TimeLimit",
    "WeightsRecord",
    "averaged_model_records",
    "best_model_records",
    "enabled_handlers",
]
