"""The backend that runs fastest here, where the processor's features do not say: timed once, then cached.

A CPU with AVX512-BF16 or AMX runs bf16 fastest (its features say so). Elsewhere ONNX Runtime and
eager PyTorch trade places with the processor, the thread count and the library versions, so
``resolve_backend("auto")`` times both on one 256x256 slice and keeps the winner in a small JSON
cache, keyed by everything that changes the answer: the CPU model and features, threads, library
versions and the weights' digest. Later runs read the cache and time nothing.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from hashlib import sha256
from pathlib import Path

import torch
import torch.nn as nn

from monai_dpe.files import write_json

__all__ = ["backend_cache_file", "cpu_model", "fastest_backend"]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder of the timing cache (default ``~/.cache/monai-dpe``).
CACHE_ENV = "MONAI_DPE_CACHE"
_SLICE = (1, 3, 256, 256)


def backend_cache_file() -> Path:
    """Where measured backend choices are kept: ``$MONAI_DPE_CACHE/backend_timings.json``, else under ``~/.cache``."""
    folder = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "monai-dpe")
    return Path(folder) / "backend_timings.json"


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastest_backend(
    candidates: Mapping[str, Callable[[], nn.Module]],
    key: Mapping[str, object],
    cache_file: str | os.PathLike | None = None,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> str:
    """The candidate whose network runs one 256x256 slice fastest: from the cache, else timed now and cached.

    Args:
        candidates: backend name -> a function that builds its network (only called when timing).
        key: what the answer depends on (processor, threads, versions, weights); a change times again.
        cache_file: the JSON cache (default :func:`backend_cache_file`); an unwritable one only
            means timing again next run.
        repeats: timed calls per candidate, after one warm-up call; the median counts.
        clock: the timer (tests pass a fake one).
    """
    cache_file = Path(cache_file) if cache_file is not None else backend_cache_file()
    entry = sha256(json.dumps({**key, "candidates": sorted(candidates)}, sort_keys=True, default=str).encode()).hexdigest()
    cache = _read(cache_file)
    if cache.get(entry, {}).get("backend") in candidates:
        return cache[entry]["backend"]
    timings = {name: _time(build(), repeats, clock) for name, build in candidates.items()}
    choice = min(timings, key=timings.get)
    logger.info("auto backend: %s per 256x256 slice on this processor; %s is used from now on (cached in %s)",
                ", ".join(f"{n} {t * 1e3:.0f} ms" for n, t in timings.items()), choice, cache_file)
    cache[entry] = {"backend": choice, "seconds": timings, "key": {k: str(v) for k, v in key.items()}}
    try:
        write_json(cache, cache_file)
    except (OSError, ValueError) as err:  # ValueError: values JSON cannot hold, written by someone else
        logger.debug("backend timing not cached (%s): it is measured again next run", err)
    return choice


def _time(network: nn.Module, repeats: int, clock: Callable[[], float]) -> float:
    x = torch.rand(_SLICE, generator=torch.Generator().manual_seed(0))
    seconds = []
    with torch.inference_mode():
        network(x)  # warm-up: lazy initialisation and allocations are not the steady speed
        for _ in range(max(1, repeats)):
            start = clock()
            network(x)
            seconds.append(clock() - start)
    return float(statistics.median(seconds))


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: time again and rewrite it
        return {}
    # entries of another shape (or with values JSON cannot write back) are dropped, not trusted
    return {k: v for k, v in data.items() if isinstance(v, dict) and _finite(v)} if isinstance(data, dict) else {}


def _finite(entry: dict) -> bool:
    try:
        json.dumps(entry, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
