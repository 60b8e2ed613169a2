"""Learning-rate decay for long runs: a cosine from the configured rate down to a fraction of it."""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from monai.handlers import LrScheduleHandler

__all__ = ["CosineDecay", "decay_schedulers", "decay_handlers"]


class CosineDecay:
    """The factor on the learning rate after ``step`` iterations: 1 at the start, ``final_factor`` at
    ``iterations`` and after, along half a cosine (fast early progress, small late steps to settle).

    A class rather than a lambda so that torch's ``LambdaLR`` keeps it in its ``state_dict``.
    """

    # not torch's CosineAnnealingLR: past T_max it climbs again, and its recursive form ignores a rate reset on resume

    def __init__(self, iterations: int, final_factor: float = 0.05) -> None:
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}.")
        if not 0.0 <= final_factor <= 1.0:
            raise ValueError(f"final_factor must lie in [0, 1], got {final_factor}.")
        self.iterations, self.final_factor = int(iterations), float(final_factor)

    def __call__(self, step: int) -> float:
        progress = min(max(step, 0), self.iterations) / self.iterations
        return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_schedulers(
    optimizers: Mapping[str, torch.optim.Optimizer], iterations: int | None, final_factor: float = 0.05
) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
    """One ``LambdaLR`` with :class:`CosineDecay` per named optimiser, keyed ``"<name>_schedule"`` for
    :class:`TrainingState`; none where ``iterations`` is unset (a constant rate).

    The decay counts the iterations this scheduler has stepped: a state saved with it resumes mid-decay,
    and a state saved without one (a constant-rate run continued with a decay) starts the decay there.
    """
    if not iterations:
        return {}
    decay = CosineDecay(iterations, final_factor)
    return {f"{name}_schedule": torch.optim.lr_scheduler.LambdaLR(opt, decay) for name, opt in optimizers.items()}


def decay_handlers(schedulers: Mapping[str, torch.optim.lr_scheduler.LambdaLR]) -> list[LrScheduleHandler]:
    """MONAI's ``LrScheduleHandler`` for each scheduler, stepped every iteration, logging nothing per step."""
    return [LrScheduleHandler(s, print_lr=False, epoch_level=False) for s in schedulers.values()]
