"""Enhancement over a datalist with several processes (``torchrun``): one shard of the planned datalist per rank.

``bundle/configs/multi_gpu_inference.json`` uses these functions over ``inference.json``:

* :func:`shard` gives each rank its part of rank 0's plan (:func:`~monai_dpe.engines.planning.plan_outputs`),
  so that every rank agrees on which inputs are refused and no output is written twice;
* :func:`merge_records` gathers every rank's results, and rank 0 logs the totals and writes one summary;
* :func:`raise_on_any_failures` ends every rank with an error if any file failed on any rank.

``bundle/configs/multi_gpu_train.json`` ends every rank with :func:`leave_process_group`.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import torch.distributed as dist
from monai.data import partition_dataset

from monai_dpe.engines.enhancer import raise_on_failures
from monai_dpe.files import write_json
from monai_dpe.keys import ItemKeys

__all__ = ["shard", "merge_records", "raise_on_any_failures", "leave_process_group"]

logger = logging.getLogger(__name__)


def _rank_and_size(rank: int | None, world_size: int | None) -> tuple[int, int]:
    ready = dist.is_available() and dist.is_initialized()
    rank = (dist.get_rank() if ready else 0) if rank is None else int(rank)
    world_size = (dist.get_world_size() if ready else 1) if world_size is None else int(world_size)
    return rank, world_size


def shard(datalist: Sequence[dict], rank: int | None = None, world_size: int | None = None) -> list[dict]:
    """This rank's part of rank 0's planned ``datalist``: items ``rank, rank + world_size, ...``.

    Every rank plans (so none can start writing outputs before all have looked at the output
    folder), then rank 0's plan is broadcast and used by all: the shards are disjoint, cover the
    whole datalist, and every rank marks the same items as refused (collisions, existing
    outputs). A rank that sees other inputs than rank 0 (inputs not on a shared filesystem) is
    warned. With fewer items than ranks, the last ranks get an empty shard.

    Args:
        datalist: the planned items (output of ``plan_outputs``), in the same order on every rank.
        rank: this process's rank; default: from ``torch.distributed`` (0 if not initialised).
        world_size: number of processes; default: from ``torch.distributed`` (1 if not initialised).
    """
    rank, world_size = _rank_and_size(rank, world_size)
    plan = list(datalist)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        shared = [plan if rank == 0 else None]
        dist.broadcast_object_list(shared, src=0)
        if [item[ItemKeys.IMAGE] for item in shared[0]] != [item[ItemKeys.IMAGE] for item in plan]:
            logger.warning("rank %d finds other inputs (%d) than rank 0 (%d): using rank 0's list; are the inputs "
                           "on a filesystem shared by every node?", rank, len(plan), len(shared[0]))
        plan = shared[0]
    if len(plan) >= world_size:
        part = partition_dataset(data=plan, num_partitions=world_size, shuffle=False, even_divisible=False)[rank]
    else:  # partition_dataset refuses fewer items than partitions: the same interleaving, some shards empty
        part = plan[rank::world_size]
    logger.info("rank %d of %d: %d of %d file(s)", rank, world_size, len(part), len(plan))
    return part


def merge_records(evaluator, summary_path: str | os.PathLike | None = None) -> dict:
    """Gather every rank's enhanced outputs and failures (a collective: every rank must call it).

    Rank 0 logs the totals and, if ``summary_path`` is given, writes one JSON summary with the
    keys of the single-process summary (``done``, ``skipped``, ``failed``, ``outputs``,
    ``skipped_outputs``, ``not_images``, ``failures``) and ``ranks``, each rank's counts; every rank
    waits until it is written. The merged summary is returned on every rank and kept as
    ``evaluator.state.merged`` (with ``state.rank``), for use after the process group is gone.
    """
    rank, world_size = _rank_and_size(None, None)
    state = evaluator.state  # a rank with an empty shard never started: no records
    mine = {"rank": rank, "outputs": list(getattr(state, "enhanced", [])),
            "skipped_outputs": list(getattr(state, "skipped", [])),
            "not_images": [{"input": p, "reason": r} for p, r in getattr(state, "not_images", [])],
            "failures": [{"input": p, "reason": r} for p, r in getattr(state, "failed", [])]}
    records = [mine]
    if world_size > 1:
        records = [None] * world_size
        dist.all_gather_object(records, mine)
    merged = {
        "done": sum(len(r["outputs"]) for r in records),
        "skipped": sum(len(r["skipped_outputs"]) + len(r["not_images"]) for r in records),
        "failed": sum(len(r["failures"]) for r in records),
        "outputs": [o for r in records for o in r["outputs"]],
        "skipped_outputs": [o for r in records for o in r["skipped_outputs"]],
        "not_images": [n for r in records for n in r["not_images"]],
        "failures": [f for r in records for f in r["failures"]],
        "ranks": [{"rank": r["rank"], "done": len(r["outputs"]),
                   "skipped": len(r["skipped_outputs"]) + len(r["not_images"]), "failed": len(r["failures"])}
                  for r in records],
    }
    if rank == 0:
        per_rank = "; ".join(f"rank {r['rank']}: {r['done']} done, {r['skipped']} skipped, {r['failed']} failed"
                             for r in merged["ranks"])
        logger.info("all ranks: enhanced %d file(s), %d skipped (done before), %d failed (%s)",
                    merged["done"], merged["skipped"], merged["failed"], per_rank)
        if summary_path:
            write_json(merged, summary_path)
    if world_size > 1:
        dist.barrier()  # no rank ends (and so stops the others) before the summary is written
    state.merged, state.rank = merged, rank
    return merged


def raise_on_any_failures(evaluator) -> None:
    """End this rank with an error (non-zero exit) if any file failed on any rank (see :func:`merge_records`).

    The message lists this rank's own failures, so each failure is reported by one rank only.
    """
    merged = getattr(evaluator.state, "merged", None)
    if not merged or not merged["failed"]:
        return
    raise_on_failures(evaluator)  # this rank's own failures, as a single-process run reports them
    raise SystemExit(f"rank {getattr(evaluator.state, 'rank', 0)}: {merged['failed']} file(s) failed on other ranks")


def leave_process_group(grace: float = 0.5) -> None:
    """Wait for every rank, destroy the default process group, then give Gloo ``grace`` seconds.

    Gloo runs each collective on a worker thread. That thread signals completion first and
    destroys the work afterwards. Destroying a gathered tensor that Python created takes the
    GIL. If the interpreter is already finalising, the thread is unwound and the process aborts
    with "terminate called without an active exception" (gdb: ``~AsyncAllgatherWork`` ->
    ``decref_pyobject`` -> ``take_gil`` -> ``pthread_exit``). A barrier work holds the works
    before it and destroys them the same way. ``destroy_process_group`` leaves those threads
    running once ``DistributedDataParallel`` has used the group (measured here: they outlive
    even deleting the wrapper), so nothing can join them before Python shuts down.

    So the rank sleeps, with the GIL released, while the threads finish. A two-rank script ending
    right after its gathers, on a 2-core CPU kept busy by three other processes, aborted in 4 of
    20 runs. With only the barrier, it aborted in 2 of 40. With the barrier and 0.5 s, it aborted
    in 0 of 40. The barrier also makes the ranks leave together.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    time.sleep(grace)
