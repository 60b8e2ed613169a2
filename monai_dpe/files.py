"""Crash-safe file writing: outputs are written under a hidden temporary name and renamed when complete."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "partial_prefix", "remove_partials"]

PARTIAL_MARK = ".partial-"


def partial_prefix(path: str | os.PathLike) -> str:
    """Prefix of the hidden temporary name used while ``path`` is being written: ``.<name>.partial-``."""
    return f".{Path(path).name}{PARTIAL_MARK}"


def remove_partials(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files and folders a killed writer left under ``folder``; return them.

    Only names made by :func:`partial_prefix` are touched (with ``name``, only those of that
    file), so a resumed run starts from complete outputs only. Never call it while another
    process writes into ``folder``.
    """
    pattern = f"{partial_prefix(name)}*" if name else f".*{PARTIAL_MARK}*"
    leftovers = sorted(Path(folder).rglob(pattern)) if Path(folder).is_dir() else []
    for path in reversed(leftovers):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return leftovers


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on failure removed.

    A process killed at any moment therefore leaves the previous complete file or the new one,
    never half of one. ``suffix`` ends the temporary name (writers that pick the format from the
    name need it); ``durable`` flushes the file to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=partial_prefix(path), suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
