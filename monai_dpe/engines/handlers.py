"""Ignite handlers for long CPU training: a crash-safe resumable state file, per-epoch seeding, a progress bar."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping

import ignite.distributed as idist
import numpy as np
import torch
from ignite.contrib.handlers import ProgressBar
from ignite.engine import Engine, Events

from monai_dpe.files import atomic_path, remove_partials
from monai_dpe.networks.weights import record_retrained_weights

__all__ = [
    "TrainingState", "BestMetricRecord", "WeightsRecord", "EpochSeeder", "TrainingProgressBar", "best_model_records",
    "enabled_handlers",
]

logger = logging.getLogger(__name__)


class TrainingState:
    """Save everything needed to resume (networks, optimisers, engine counters) to one fixed file.

    The file is written to a temporary name in the same folder and renamed, so a kill at any
    moment leaves either the previous complete state or the new one, never a half-written file.
    With ``resume=True`` the state is loaded when the engine starts; without it, an existing
    state file is refused rather than overwritten by a fresh run.

    The state is saved whenever the iteration count is a multiple of ``save_interval``; when that
    iteration ends an epoch, the save waits until the epoch's other handlers (validation, the
    best-checkpoint saver) have run, so a resumed run restarts exactly at an epoch boundary with
    everything those handlers recorded. With :class:`EpochSeeder` such a resume reproduces the
    uninterrupted run.

    Args:
        path: the state file (e.g. ``models/training_state.pt``).
        save_dict: objects with ``state_dict``/``load_state_dict`` (networks, optimisers); the
            counters of the engine the handler is attached to are saved under ``"trainer"``.
        save_interval: save every this many iterations (and at the end); a multiple of the
            epoch length makes resumes exact.
        resume: load ``path`` at start.
        resume_learning_rate: on resume, set every optimiser's learning rate to this value (a
            manual decay for a continued run), and make it the base of any learning-rate schedule
            in ``optional_dict``; ``None`` keeps the saved rates.
        optional_dict: more objects saved the same way but not required on resume (e.g. the
            best-checkpoint saver, whose record older state files lack).
    """

    def __init__(
        self,
        path: str,
        save_dict: Mapping[str, object],
        save_interval: int = 100,
        resume: bool = False,
        resume_learning_rate: float | None = None,
        optional_dict: Mapping[str, object] | None = None,
    ):
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        self.path, self.save_interval, self.resume = str(path), save_interval, resume
        self.resume_learning_rate = resume_learning_rate
        # plain module state dicts (no "module." prefix), so single- and multi-GPU runs resume each other
        self.save_dict = {k: _unwrap(v) for k, v in save_dict.items()}
        self.optional_dict = {k: _unwrap(v) for k, v in (optional_dict or {}).items()}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._check_writable)
        engine.add_event_handler(Events.STARTED, self.load if self.resume else self._refuse_overwrite)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self._save_mid_epoch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_at_epoch_end)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def _save_mid_epoch(self, engine: Engine) -> None:
        if engine.state.iteration % (engine.state.epoch_length or 1):
            self.save(engine)

    def _save_at_epoch_end(self, engine: Engine) -> None:
        if engine.state.iteration % self.save_interval == 0:
            self.save(engine)

    def _check_writable(self, engine: Engine) -> None:
        """Find an unwritable state folder when training starts, not at the first save an hour later."""
        if idist.get_rank() > 0:  # in a distributed run rank 0 alone writes
            return
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise PermissionError(f"{folder}: cannot write checkpoints there ({err.strerror or err})") from err

    def _refuse_overwrite(self, engine: Engine) -> None:
        if os.path.exists(self.path):
            raise FileExistsError(
                f"{self.path}: a training state exists; resume it (resume=true / --resume) or move it away first."
            )

    def load(self, engine: Engine) -> None:
        """Restore every object from the state file; a missing or corrupt file fails with its reason."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            # temporary state files a killed run left (they never replaced the state); several ranks
            # may share the folder, so only a lone process tidies it
            remove_partials(os.path.dirname(os.path.abspath(self.path)), self.path)
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for truncated or foreign files
            raise RuntimeError(f"cannot resume from {self.path}: {type(err).__name__}: {err}".splitlines()[0]) from err
        missing = [k for k in (*self.save_dict, "trainer") if k not in state]
        if missing:
            raise RuntimeError(f"cannot resume from {self.path}: it lacks {missing}.")
        unused = sorted(set(state) - {*self.save_dict, *self.optional_dict, "trainer"})
        if unused:
            logger.warning("%s holds %s, which this run does not configure: not restored", self.path, unused)
        for key, obj in self.optional_dict.items():
            if key in state:
                obj.load_state_dict(state[key])
            else:
                logger.warning("%s has no %r record; it starts afresh", self.path, key)
            if self.resume_learning_rate is not None and isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
                # a schedule sets the rate from its base every step, so the new rate must become that base
                obj.base_lrs = [float(self.resume_learning_rate)] * len(obj.base_lrs)
        for key, obj in self.save_dict.items():
            try:
                obj.load_state_dict(state[key])
            except (RuntimeError, ValueError, KeyError) as err:
                raise RuntimeError(
                    f"cannot resume from {self.path}: its {key} does not fit this run ({_mismatch(err)}); "
                    "resume with the settings it was trained with (channels, widths)"
                ) from err
            if self.resume_learning_rate is not None and isinstance(obj, torch.optim.Optimizer):
                for group in obj.param_groups:
                    group["lr"] = float(self.resume_learning_rate)
        counters = state["trainer"]
        engine.state.iteration = int(counters["iteration"])
        engine.state.epoch = int(counters["iteration"]) // int(engine.state.epoch_length or counters["epoch_length"])
        logger.info("resumed from %s at iteration %d", self.path, engine.state.iteration)

    def save(self, engine: Engine) -> None:
        """Write the state atomically (temporary file + rename); in a distributed run only rank 0 writes."""
        if idist.get_rank() > 0:  # in a distributed run rank 0 alone writes
            return
        state = {k: v.state_dict() for k, v in {**self.save_dict, **self.optional_dict}.items()}
        state["trainer"] = {"iteration": engine.state.iteration, "epoch_length": engine.state.epoch_length}
        with atomic_path(self.path, suffix=".tmp", durable=True) as tmp:
            torch.save(state, tmp)


def _mismatch(err: BaseException) -> str:
    """The first specific line of a ``load_state_dict`` error (torch's first line only names the class)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
    return detail if len(detail) <= 200 else detail[:197] + "..."


class BestMetricRecord:
    """A MONAI workflow's best key metric and its epoch, as an object :class:`TrainingState` can save.

    The evaluator keeps ``state.best_metric`` only in memory, so after a resume it would log a
    session-local "best value" while the checkpoint saver (whose record is restored) still holds
    the better model from before the kill. Saving this record with the state keeps the two in step.
    """

    def __init__(self, workflow: Engine) -> None:
        self.workflow = workflow

    def state_dict(self) -> dict[str, float | int]:
        state = self.workflow.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, record: Mapping[str, float | int]) -> None:
        self.workflow.state.best_metric = float(record["best_metric"])
        self.workflow.state.best_metric_epoch = int(record["best_metric_epoch"])


def best_model_records(saver: object | None, evaluator: Engine) -> dict[str, object]:
    """What :class:`TrainingState` keeps of the best model so far (its ``optional_dict``).

    The key-metric checkpoint record of MONAI's ``CheckpointSaver`` ``saver`` (which file is the best,
    at what score) and ``evaluator``'s :class:`BestMetricRecord`, so a resumed run neither replaces a
    better ``model.pt`` nor logs a session-local best. Nothing where no saver runs (``None``: every
    rank but 0 of a multi-GPU run).
    """
    if saver is None:
        return {}
    return {"best_checkpoint": saver._key_metric_checkpoint, "best_metric": BestMetricRecord(evaluator)}


def averaged_model_records(ema: object | None) -> dict[str, object]:
    """The generator's moving average that ignite's ``EMAHandler`` ``ema`` keeps, for :class:`TrainingState`.

    Kept as an optional record: a state saved without one resumes with the average starting afresh
    from the resumed generator. Nothing without ``ema`` (``ema_momentum`` unset).
    """
    return {"ema_network": ema.ema_model} if ema is not None else {}


def enabled_handlers(handlers: Iterable[object | None] | None) -> list[object]:
    """The handlers of a config list that are switched on, in their order.

    A named handler whose ``_disabled_`` is true (the logging and saving ones on every rank but 0 of
    a multi-GPU run, the progress bar without ``progress``) resolves to ``None`` where a list refers
    to it, and ignite cannot attach ``None``.
    """
    return [handler for handler in handlers or () if handler is not None]


class WeightsRecord:
    """Keep the bundle's digest records (``large_files.json``, ``metadata.json``'s ``model_digests``) in step
    with the weights the checkpoint saver writes.

    Attach it to the evaluator after ``CheckpointSaver``. When training writes into the bundle's
    own ``models/``, the new best ``model.pt`` is recorded (so ``inference.json`` and
    ``evaluate.json`` load it without a digest refusal) and the exports of the old weights lose
    their records (so no backend runs them). Weights saved anywhere else are left alone.
    """

    def __init__(self, bundle_root: str | os.PathLike, path: str | os.PathLike) -> None:
        self.bundle_root, self.path = bundle_root, path

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        retired = record_retrained_weights(self.bundle_root, self.path)
        if retired:
            logger.warning(
                "%s: new weights recorded in large_files.json and metadata.json; %s, exported from the old weights, "
                "no longer recorded (re-export with `make export`)", self.path, ", ".join(retired)
            )


class EpochSeeder:
    """Reseed every random source from ``(seed, epoch)`` when each training epoch starts.

    Global torch, numpy and Python generators and the dataset's random transforms (MONAI's
    ``set_rnd``) are reseeded; data-loader workers, recreated each epoch (use
    ``persistent_workers=False``), take their seeds from the reseeded torch generator. An
    epoch's data and noise therefore depend only on the seed and the epoch number, so a run
    resumed at an epoch boundary (see :class:`TrainingState`) continues exactly as the
    uninterrupted run would have, whatever happened before the kill.

    MONAI's ``set_determinism`` also switches cuDNN to deterministic kernels with autotuning
    off, which makes GPU convolutions several times slower; ``cudnn_benchmark=True`` turns the
    autotuner back on after each reseed (data and noise stay seeded, GPU sums do not).

    Args:
        seed: base seed (give each distributed rank its own).
        dataset: the training dataset whose random transforms are reseeded (optional).
        cudnn_benchmark: re-enable cuDNN autotuning (and non-deterministic kernels) after reseeding.
    """

    def __init__(self, seed: int, dataset: object | None = None, cudnn_benchmark: bool = False) -> None:
        self.seed, self.dataset, self.cudnn_benchmark = int(seed), dataset, bool(cudnn_benchmark)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def epoch_seed(self, epoch: int) -> int:
        """A 31-bit seed mixed from the base seed and the epoch (no collisions between nearby pairs)."""
        return int(np.random.SeedSequence([self.seed, int(epoch)]).generate_state(1)[0] & 0x7FFFFFFF)

    def __call__(self, engine: Engine) -> None:
        from monai.data.utils import set_rnd
        from monai.utils import set_determinism

        seed = self.epoch_seed(engine.state.epoch)
        set_determinism(seed=seed)
        if self.cudnn_benchmark:
            torch.backends.cudnn.deterministic = False
            torch.backends.cudnn.benchmark = True
        if self.dataset is not None:
            set_rnd(self.dataset, seed)


def _unwrap(obj: object) -> object:
    parallel = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    return obj.module if isinstance(obj, parallel) else obj


class TimeLimit:
    """Stop training cleanly after ``limit_sec`` seconds of wall-clock time, on every process at once.

    Attachable from a bundle config, so a run can be sized to a fixed budget (a lent GPU, a
    nightly slot); the best checkpoint and the resumable state written so far are kept. Ignite's
    ``TimeLimit`` times each process alone: under DistributedDataParallel one rank would stop
    while the others wait in the next gradient all-reduce. Here the ranks agree (any expired
    clock stops all of them) after every iteration, at the cost of one scalar all-reduce.
    """

    def __init__(self, limit_sec: int) -> None:
        self.limit_sec = int(limit_sec)
        self.started = time.monotonic()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _start(self, engine: Engine) -> None:
        self.started = time.monotonic()

    def _check(self, engine: Engine) -> None:
        expired = int(time.monotonic() - self.started > self.limit_sec)
        if idist.get_world_size() > 1:
            expired = int(idist.all_reduce(expired, op="MAX"))
        if expired:
            engine.logger.info("time limit of %d s reached: stopping", self.limit_sec)
            engine.terminate()


class TrainingProgressBar:
    """Ignite's tqdm progress bar (counts, rate, ETA) with the loss in the postfix, attachable from a config."""

    def __init__(self, output_transform: Callable | None = None, persist: bool = False, show_loss: bool = True) -> None:
        self.output_transform = output_transform or (lambda out: {"loss": float(out["loss"])})
        self.persist, self.show_loss = persist, show_loss

    def attach(self, engine: Engine) -> None:
        ProgressBar(persist=self.persist).attach(engine, output_transform=self.output_transform if self.show_loss else None)
