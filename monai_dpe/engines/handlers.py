"""Ignite handlers for long CPU training: a crash-safe resumable state file and a progress bar."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import torch
from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine, Events

from monai_dpe.files import atomic_path

__all__ = ["TrainingState", "TrainingProgressBar"]

logger = logging.getLogger(__name__)


class TrainingState:
    """Save everything needed to resume (networks, optimisers, engine counters) to one fixed file.

    The file is written to a temporary name in the same folder and renamed, so a kill at any
    moment leaves either the previous complete state or the new one, never a half-written file.
    With ``resume=True`` the state is loaded when the engine starts; without it, an existing
    state file is refused rather than overwritten by a fresh run.

    Args:
        path: the state file (e.g. ``models/training_state.pt``).
        save_dict: objects with ``state_dict``/``load_state_dict`` (networks, optimisers); the
            counters of the engine the handler is attached to are saved under ``"trainer"``.
        save_interval: save every this many iterations (and at the end).
        resume: load ``path`` at start.
        resume_learning_rate: on resume, set every optimiser's learning rate to this value (a
            manual decay for a continued run); ``None`` keeps the saved rates.
    """

    def __init__(
        self,
        path: str,
        save_dict: Mapping[str, object],
        save_interval: int = 100,
        resume: bool = False,
        resume_learning_rate: float | None = None,
    ):
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        self.path, self.save_interval, self.resume = str(path), save_interval, resume
        self.resume_learning_rate = resume_learning_rate
        # plain module state dicts (no "module." prefix), so single- and multi-GPU runs resume each other
        self.save_dict = {k: _unwrap(v) for k, v in save_dict.items()}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load if self.resume else self._refuse_overwrite)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def _refuse_overwrite(self, engine: Engine) -> None:
        if os.path.exists(self.path):
            raise FileExistsError(
                f"{self.path}: a training state exists; resume it (resume=true / --resume) or move it away first."
            )

    def load(self, engine: Engine) -> None:
        """Restore every object from the state file; a missing or corrupt file fails with its reason."""
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for truncated or foreign files
            raise RuntimeError(f"cannot resume from {self.path}: {type(err).__name__}: {err}".splitlines()[0]) from err
        missing = [k for k in (*self.save_dict, "trainer") if k not in state]
        if missing:
            raise RuntimeError(f"cannot resume from {self.path}: it lacks {missing}.")
        for key, obj in self.save_dict.items():
            obj.load_state_dict(state[key])
            if self.resume_learning_rate is not None and isinstance(obj, torch.optim.Optimizer):
                for group in obj.param_groups:
                    group["lr"] = float(self.resume_learning_rate)
        counters = state["trainer"]
        engine.state.iteration = int(counters["iteration"])
        engine.state.epoch = int(counters["iteration"]) // int(engine.state.epoch_length or counters["epoch_length"])
        logger.info("resumed from %s at iteration %d", self.path, engine.state.iteration)

    def save(self, engine: Engine) -> None:
        """Write the state atomically (temporary file + rename); in a distributed run only rank 0 writes."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() > 0:
            return
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["trainer"] = {"iteration": engine.state.iteration, "epoch_length": engine.state.epoch_length}
        with atomic_path(self.path, suffix=".tmp", durable=True) as tmp:
            torch.save(state, tmp)


def _unwrap(obj: object) -> object:
    parallel = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return obj.module if isinstance(obj, parallel) else obj


class TrainingProgressBar:
    """Ignite's tqdm progress bar (counts, rate, ETA) with the loss in the postfix, attachable from a config."""

    def __init__(self, output_transform: Callable | None = None, persist: bool = False, show_loss: bool = True) -> None:
        self.output_transform = output_transform or (lambda out: {"loss": float(out["loss"])})
        self.persist, self.show_loss = persist, show_loss

    def attach(self, engine: Engine) -> None:
        ProgressBar(persist=self.persist).attach(engine, output_transform=self.output_transform if self.show_loss else None)
