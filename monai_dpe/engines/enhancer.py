"""EnhancementEvaluator: run the bundle's inference over many files, one failure never stopping the rest.

The run is planned before it starts (:mod:`monai_dpe.engines.planning`); this module runs the plan.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import Dataset, decollate_batch
from monai.engines import SupervisedEvaluator
from monai.transforms import Compose, apply_transform
from monai.utils import str2bool
from ignite.engine import Events

from monai_dpe.data.discovery import display_path
from monai_dpe.formats import image_suffix, is_dicom_file
from monai_dpe.errors import one_line
from monai_dpe.files import atomic_path
from monai_dpe.keys import ItemKeys
from monai_dpe.native_output import native_output_logged
from monai_dpe.processor import has_spare_core
from monai_dpe.engines.planning import NOT_IMAGE

__all__ = [
    "SafeDataset",
    "EnhancementEvaluator",
    "can_fork",
    "run_summary",
    "write_summary",
    "one_line",
    "raise_on_failures",
    "require_images",
]

logger = logging.getLogger(__name__)

class SafeDataset(Dataset):
    """A MONAI ``Dataset`` that turns a failure to load or preprocess one item into an error record.

    The record ``{"error": reason, "image": path, "relpath": ...}`` flows through the data loader
    to the evaluator, which reports it and moves on to the next file.
    """

    def _transform(self, index: int) -> dict:
        item = self.data[index]
        if ItemKeys.ERROR in item or ItemKeys.SKIPPED in item or NOT_IMAGE in item:  # decided before any work (plan_outputs)
            return dict(item)
        path = item.get(ItemKeys.IMAGE, "")
        if not os.path.isdir(path) and not image_suffix(path) and not is_dicom_file(path):
            return {**item, ItemKeys.ERROR: f"unsupported file type '{os.path.splitext(path)[1] or path}'"}
        try:
            with native_output_logged(item.get(ItemKeys.SOURCE_PATH, display_path(path))):  # ITK/GDCM chatter: --verbose
                return super()._transform(index)
        except Exception as err:  # any reader or transform failure is one file's problem, not the run's
            return {**item, ItemKeys.ERROR: one_line(err)}


class EnhancementEvaluator(SupervisedEvaluator):
    """Enhance every item of a data loader (batch size 1), post-process and save each one in isolation.

    Postprocessing (inversion of the intensity policy, writing) is isolated per file, so an error
    while writing one file is reported for that file only. ``state.enhanced`` lists the outputs
    written and ``state.failed`` the ``(input, reason)`` pairs; each failure is logged once as
    ``"<input>: <reason>"``.

    With ``write_behind`` a forked child process post-processes and writes each file while the
    network works on the next one; at most one such child exists, so at most one finished volume
    waits in memory. A process, not a thread: the native-output capture points file descriptor 2
    elsewhere for the whole process, which would swallow the main thread's log lines.

    Args:
        item_postprocessing: transform applied to each decollated item (e.g. ``Invertd`` then ``SaveEnhancedd``).
        summary_path: if given, a JSON summary (done, skipped, failed, reasons) is written there
            (atomically) at the end.
        write_behind: write in a child process (``None``: on the CPU where the platform can fork and a
            core is free beside the network's threads, :func:`~monai_dpe.processor.has_spare_core`; text
            as MONAI's ``str2bool``).
        others: as MONAI's ``SupervisedEvaluator``.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader,
        network: torch.nn.Module,
        inferer=None,
        item_postprocessing: Callable | None = None,
        summary_path: str | None = None,
        val_handlers: Sequence | None = None,
        write_behind: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device, val_data_loader=val_data_loader, network=network, inferer=inferer,
            val_handlers=val_handlers, decollate=False, **kwargs,
        )
        self.item_postprocessing = item_postprocessing
        self.summary_path = summary_path
        if write_behind is None:  # a forked child of a CUDA process must not touch CUDA: untried there, so off
            write_behind = can_fork() and torch.device(device).type == "cpu" and has_spare_core()
        self.write_behind = str2bool(write_behind)  # also "false" from a command line
        self._writing: tuple[str, Any, Any] | None = None  # (input, child process, its result pipe)
        self.add_event_handler(Events.STARTED, self._reset_records)
        self.add_event_handler(Events.COMPLETED, self._collect_writing)
        self.add_event_handler(Events.COMPLETED, self._summarise)
        self.add_event_handler(Events.EXCEPTION_RAISED, self._collect_writing)
        self.add_event_handler(Events.EXCEPTION_RAISED, self._summarise_stopped)

    def _reset_records(self, engine) -> None:
        engine.state.enhanced, engine.state.failed, engine.state.skipped = [], [], []
        engine.state.not_images = []  # (input, reason): skipped, not failed

    def _fail(self, path: str, reason: str) -> None:
        self.state.failed.append((path, reason))
        logger.error("%s: %s", path, reason)

    def _iteration(self, engine, batchdata: dict) -> dict:
        path = _first(batchdata.get("image_path", batchdata.get(ItemKeys.RELPATH, "")))
        if ItemKeys.SKIPPED in batchdata:
            engine.state.skipped.append(_first(batchdata[ItemKeys.SKIPPED]))
            return {}
        if NOT_IMAGE in batchdata:
            source, reason = _first(batchdata.get(ItemKeys.SOURCE_PATH, path)), _first(batchdata[NOT_IMAGE])
            engine.state.not_images.append((source, reason))
            logger.warning("%s: %s", source, reason)
            return {}
        if ItemKeys.ERROR in batchdata:
            self._fail(_first(batchdata.get(ItemKeys.SOURCE_PATH, path)), _first(batchdata[ItemKeys.ERROR]))
            return {}
        source = _first(batchdata.get(ItemKeys.SOURCE_PATH, path))
        try:
            inputs = batchdata[ItemKeys.IMAGE].to(engine.state.device)
            engine.network.eval()
            with torch.inference_mode():
                pred = engine.inferer(inputs, engine.network)
            items = decollate_batch({**batchdata, "pred": pred.cpu()})
            del pred, inputs
        except Exception as err:  # a failure while enhancing one file must not stop the run
            self._fail(source, one_line(err))
            return {}
        self._collect_writing()
        if self.write_behind:
            try:
                self._writing = self._start_writing(source, items)
                return {}
            except OSError as err:  # no process to spare (memory, process limits): this file is written in turn
                logger.debug("%s: writing in turn, no child process (%s)", source, err)
        try:
            engine.state.enhanced.extend(self._write(source, items))
        except Exception as err:  # nor must a failure while writing it
            self._fail(source, one_line(err))
        return {}

    def _write(self, source: str, items: list) -> list[str]:
        """Post-process and save the decollated ``items`` of one input; the output paths written."""
        written = []
        while items:
            with native_output_logged(source):
                out = self._postprocess(items.pop(0))
            written.append(out.get(ItemKeys.OUTPUT_PATH, source) if isinstance(out, dict) else source)
        return written

    def _start_writing(self, source: str, items: list) -> tuple[str, Any, Any]:
        """Fork a child that writes ``items`` (inherited, not copied) and sends back its outputs or its error."""
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # else the child flushes a copy of what is buffered, printing it twice
            if stream is not None:
                stream.flush()
        child = context.Process(target=self._write_in_child, args=(source, items, sender), daemon=True)
        child.start()
        sender.close()
        return source, child, receiver

    def _write_in_child(self, source: str, items: list, sender) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent; the file being written is finished
        torch.set_num_threads(1)  # the parent's threads keep the network; forked OpenMP pools must not be reused
        try:
            sender.send(("written", self._write(source, items)))
        except Exception as err:
            sender.send(("failed", one_line(err)))
        finally:
            sender.close()

    def _collect_writing(self, engine=None, *_) -> None:
        """Wait for the child writing the previous file and record its outputs or its failure."""
        if self._writing is None:
            return
        source, child, receiver = self._writing
        try:  # a Ctrl-C while waiting leaves the record, and the stopped run's handler waits again
            status, value = receiver.recv()
        except EOFError:  # the child died before it could answer (killed, out of memory)
            status, value = "failed", "the process writing it ended before it finished"
        self._writing = None
        receiver.close()
        child.join()
        if status == "written":
            self.state.enhanced.extend(value)
        else:
            self._fail(source, value)

    def _postprocess(self, item: dict) -> Any:
        """Apply ``item_postprocessing`` transform by transform, holding no reference to earlier stages.

        A ``Compose`` keeps its input alive until its last transform returns, so the network's
        float32 output of a volume would stay in memory while the inverted copy is written;
        stepping through the flattened transforms frees each stage's output once the next exists.
        """
        if self.item_postprocessing is None:
            return item
        if not isinstance(self.item_postprocessing, Compose):
            return self.item_postprocessing(item)
        for transform in self.item_postprocessing.flatten().transforms:
            item = apply_transform(transform, item)
        return item

    def _summarise(self, engine) -> None:
        summary = run_summary(engine.state)
        logger.info("enhanced %d file(s), %d skipped (%d done before, %d not images), %d failed", summary["done"],
                    summary["skipped"], len(summary["skipped_outputs"]), len(summary["not_images"]), summary["failed"])
        if self.summary_path:
            write_summary(self.summary_path, summary)

    def _summarise_stopped(self, engine, error: BaseException) -> None:
        """A run stopped by Ctrl-C or an error still leaves its own summary, saying so; then the error goes on."""
        if self.summary_path:
            write_summary(self.summary_path, run_summary(engine.state, stopped=stop_reason(error)))
        raise error


def run_summary(state=None, stopped: str | None = None) -> dict:
    """The JSON summary of a run from its evaluator's state: counts, outputs, skipped inputs and failures.

    ``skipped`` counts both outputs a resumed run found done (``skipped_outputs``) and inputs that
    are no images (``not_images``, with the reason); neither is a failure. A run that did not
    finish has ``stopped`` (why), and counts what it did before.
    """
    enhanced, failed = getattr(state, "enhanced", []), getattr(state, "failed", [])
    resumed, not_images = getattr(state, "skipped", []), getattr(state, "not_images", [])
    return {"done": len(enhanced), "skipped": len(resumed) + len(not_images), "failed": len(failed),
            "outputs": [display_path(o) for o in enhanced], "skipped_outputs": [display_path(o) for o in resumed],
            "not_images": [{"input": p, "reason": r} for p, r in not_images],
            "failures": [{"input": p, "reason": r} for p, r in failed], **({"stopped": stopped} if stopped else {})}


def stop_reason(error: BaseException) -> str:
    """Why a run stopped, in one line: Ctrl-C or the error."""
    return "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else f"error: {one_line(error)}"


def write_summary(path: str | os.PathLike, summary: Mapping) -> None:
    """Write a run summary as JSON, atomically: a reader sees the previous file or this one, never half."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(summary, handle, indent=2)


def can_fork() -> bool:
    """Whether this platform forks processes (Linux): the write-behind child needs to inherit the volume."""
    return "fork" in multiprocessing.get_all_start_methods()


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) and value else value


def raise_on_failures(evaluator: EnhancementEvaluator) -> None:
    """End a bundle run with an error (non-zero exit) if any file failed."""
    failed = getattr(evaluator.state, "failed", [])
    if failed:
        raise SystemExit(f"{len(failed)} file(s) failed: " + "; ".join(f"{p}: {r}" for p, r in failed))


def require_images(datalist: Sequence[Mapping], dataset_dir: str | os.PathLike | Sequence) -> None:
    """End a bundle run at once, in one line that says what to pass, when it has no images to enhance:
    ``dataset_dir`` is missing, or holds no supported image (a long traceback would bury the reason)."""
    given = [dataset_dir] if isinstance(dataset_dir, (str, os.PathLike)) else list(dataset_dir)
    missing = [str(p) for p in given if not os.path.lexists(p)]
    if datalist and len(missing) < len(given):
        return
    what = f"{', '.join(missing)}: no such folder or file" if missing else f"no images in {', '.join(map(str, given))}"
    raise SystemExit(f"{what}; pass --dataset_dir IN (a folder of images, or a list of image files) "
                     "and --output_dir OUT (defaults: sample_data/ and eval/ in the bundle folder)")
