"""What this processor can do fast: its instruction-set features, and the training precision they favour.

Defaults that depend on speed follow the machine they run on, not one earlier measurement:
bf16 autocast pays on CPUs with AVX512-BF16 or AMX (measured on a 2-core AVX512-BF16 EPYC:
0.75 s against 1.4 s per half-width training step of 8 128x128 patches) and costs on AVX2-only ones.
"""
from __future__ import annotations

import functools
import os

import torch

__all__ = ["CPU_FEATURES", "cpu_features", "has_fast_bf16", "has_spare_core", "share_cpu_threads",
           "training_autocast_dtype"]

#: The features that decide speed defaults.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


@functools.cache
def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The :data:`CPU_FEATURES` that ``cpuinfo``'s ``flags`` line lists (empty where there is none)."""
    if not os.path.exists(cpuinfo):
        return frozenset()
    with open(cpuinfo) as handle:
        for line in handle:
            if line.startswith("flags"):
                return frozenset(f for f in line.split(":", 1)[1].split() if f in CPU_FEATURES)
    return frozenset()


def has_fast_bf16(features: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    features = cpu_features() if features is None else features
    return bool({"avx512_bf16", "amx_bf16"} & features)


def has_spare_core() -> bool:
    """Whether the cores this process may run on outnumber the compute threads of all processes of
    its machine (torch's threads times ``torchrun``'s ``LOCAL_WORLD_SIZE``).

    Work beside the network (a forked writer) pays only on such a core: where the network's threads
    hold every core, it takes their time instead (2 cores, 2 threads: a folder of six volumes 22.3
    to 24.4 s written in turn, 23.7 to 25.1 s written behind, in five paired runs). Logical CPUs are
    counted, so a machine with SMT, where torch starts one thread per physical core, has spare ones.
    """
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return available > torch.get_num_threads() * _local_processes()


def training_autocast_dtype(device: str | torch.device = "cpu", features: frozenset[str] | None = None) -> str | None:
    """``"bfloat16"`` where training under bf16 autocast is faster on ``device``, else ``None`` (fp32).

    CUDA: GPUs that support bf16. CPU: processors with AVX512-BF16 or AMX.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    return "bfloat16" if has_fast_bf16(features) else None


def share_cpu_threads() -> int | None:
    """Give this process its share of the CPU cores when it computes on CPU; the thread count set (``None`` with CUDA).

    torch starts a thread per core in every process, so ``torchrun``'s ``LOCAL_WORLD_SIZE`` processes on one
    CPU machine would each start ``os.cpu_count()`` threads and fight over the cores.
    """
    if torch.cuda.is_available():
        return None
    threads = max(1, (os.cpu_count() or 1) // _local_processes())
    torch.set_num_threads(threads)
    return threads


def _local_processes() -> int:
    """How many processes compute on this machine: ``torchrun``'s ``LOCAL_WORLD_SIZE``, else 1."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
