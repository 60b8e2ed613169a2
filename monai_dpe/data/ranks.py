"""Each process's share of a datalist when training runs under ``torchrun`` (``multi_gpu_train.json``)."""
from __future__ import annotations

from collections.abc import Sequence

from monai.data import partition_dataset

__all__ = ["training_share", "validation_share"]


def training_share(items: Sequence[dict], rank: int, world_size: int, seed: int = 0) -> list[dict]:
    """This rank's share of the training list: shuffled by ``seed`` (the same order on every rank), equal lengths.

    DistributedDataParallel steps every rank together, so every share has the same length: where the
    list does not divide evenly, the first items of the shuffled list are used twice.
    """
    return partition_dataset(data=items, num_partitions=world_size, shuffle=True, seed=seed, even_divisible=True)[rank]


def validation_share(items: Sequence[dict], rank: int, world_size: int) -> list[dict]:
    """This rank's share of the validation list: items ``rank, rank + world_size, ...``, each scored exactly once.

    Shares may differ by one item: nothing is repeated, so every image counts once in the metrics
    gathered over the ranks.
    """
    return partition_dataset(data=items, num_partitions=world_size, shuffle=False, even_divisible=False)[rank]
