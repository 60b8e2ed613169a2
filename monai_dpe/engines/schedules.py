"""Learning-rate decay for long runs: a cosine from the configured rate down to a fraction of it."""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from monai.handlers import LrScheduleHandler

__all__ = ["CosineDecay", "CosineDecayLR", "decay_schedulers", "decay_handlers"]

logger = logging.getLogger(__name__)


class CosineDecay:
    """The factor on the learning rate after ``step`` iterations: 1 at the start, ``final_factor`` at
    ``iterations`` and after, along half a cosine (fast early progress, small late steps to settle).

    A class rather than a lambda so that torch's ``LambdaLR`` saves its settings: :class:`CosineDecayLR` compares
    them on resume.
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


class CosineDecayLR(torch.optim.lr_scheduler.LambdaLR):
    """torch's ``LambdaLR`` along a :class:`CosineDecay` whose length and floor are always this run's settings.

    A saved state gives back the step count and base rates only: ``LambdaLR`` alone would also put back the
    saved decay's settings, so a run resumed with another ``iterations`` would silently follow the old
    decay. With ``restart`` the decay starts again at the resume (a warm restart, from
    ``resume_learning_rate`` where one is given), unless the state was saved by a run restarted with
    the same decay: so an interrupted warm restart resumes with its own command instead of starting over.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, iterations: int, final_factor: float = 0.05, restart: bool = False
    ) -> None:
        super().__init__(optimizer, CosineDecay(iterations, final_factor))
        self.restart = bool(restart)

    def load_state_dict(self, state_dict: dict) -> None:
        decay = self.lr_lambdas[0]
        saved = (state_dict.get("lr_lambdas") or [None])[0]
        if self.restart and not (state_dict.get("restart") and saved == vars(decay)):
            logger.info("learning-rate decay restarts at the resume: over %d iterations", decay.iterations)
            return
        if saved and saved != vars(decay):
            logger.warning(
                "the saved learning-rate decay ran over %s iterations to %s; this run's (%d to %s) goes on from "
                "its step %d", saved.get("iterations"), saved.get("final_factor"), decay.iterations,
                decay.final_factor, state_dict.get("last_epoch", 0),
            )
        kept = {k: v for k, v in state_dict.items() if k != "restart"}  # this run's own setting stays
        super().load_state_dict({**kept, "lr_lambdas": [None] * len(self.lr_lambdas)})


def decay_schedulers(
    optimizers: Mapping[str, torch.optim.Optimizer],
    iterations: int | None,
    final_factor: float = 0.05,
    restart: bool = False,
) -> dict[str, CosineDecayLR]:
    """One :class:`CosineDecayLR` per named optimiser, keyed ``"<name>_schedule"`` for
    :class:`TrainingState`; none where ``iterations`` is unset (a constant rate).

    The decay counts the iterations this scheduler has stepped: a state saved with it resumes mid-decay
    (``restart``: starts the decay again), and a state saved without one (a constant-rate run continued
    with a decay) starts the decay there.
    """
    if not iterations:
        return {}
    return {f"{name}_schedule": CosineDecayLR(opt, iterations, final_factor, restart) for name, opt in optimizers.items()}


def decay_handlers(schedulers: Mapping[str, CosineDecayLR]) -> list[LrScheduleHandler]:
    """MONAI's ``LrScheduleHandler`` for each scheduler, stepped every iteration, logging nothing per step."""
    return [LrScheduleHandler(s, print_lr=False, epoch_level=False) for s in schedulers.values()]
