"""Crash-safe file writing: outputs are written under a hidden temporary name and renamed when complete.

The temporary name carries its owner, the writing process's id and a tag of its host
(``.<name>.partial-<pid>-<host>-<random>``), so a resumed run removes only what a process that
is gone left behind, never a file another live run is still writing into the same folder.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FilesNotRestoredError", "atomic_path", "partial_prefix", "remove_partials", "partial_owner_alive",
           "replace_files", "write_json"]

logger = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # fixed width: host names hold "-"
_OWNER = re.compile(re.escape(PARTIAL_MARK) + r"(\d+)-([0-9a-f]{8})-")


def partial_prefix(path: str | os.PathLike) -> str:
    """Prefix of the hidden temporary name used while ``path`` is being written by this process:
    ``.<name>.partial-<pid>-<host tag>-``."""
    return f".{Path(path).name}{PARTIAL_MARK}{os.getpid()}-{HOST_TAG}-"


def partial_owner_alive(path: str | os.PathLike) -> bool:
    """Whether the process that named the temporary file ``path`` may still be writing it.

    True for a live process on this host and for any owner on another host (a shared folder:
    its liveness cannot be seen from here, so its file is left alone). False for a process of
    this host that is gone, and for names without an owner (written before owners were recorded).
    """
    match = _OWNER.search(Path(path).name)
    if match is None:
        return False
    pid, host = int(match.group(1)), match.group(2)
    if host != HOST_TAG or pid == os.getpid() or os.name == "nt":  # Windows' os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_partials(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files and folders that writers which are gone left under ``folder``; return them.

    Only names made by :func:`partial_prefix` are touched (with ``name``, only those of that
    file), and only those whose owner process has ended (:func:`partial_owner_alive`), so a
    resumed run starts from complete outputs while another run writing into the same folder
    keeps its temporary files.
    """
    pattern = f".{glob.escape(Path(name).name)}{PARTIAL_MARK}*" if name else f".*{PARTIAL_MARK}*"
    found = sorted(Path(folder).rglob(pattern)) if Path(folder).is_dir() else []
    live = [p for p in found if partial_owner_alive(p)]
    leftovers = [p for p in found if p not in live and not any(p.is_relative_to(q) for q in live)]
    if live:
        logger.info("%d temporary file(s) of running writers left in place under %s", len(live), folder)
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


class FilesNotRestoredError(OSError):
    """:func:`replace_files` failed and could not put these ``paths`` back as they were."""

    def __init__(self, message: str, paths: list[str]) -> None:
        super().__init__(message)
        self.paths = paths


def replace_files(contents: Mapping[str | os.PathLike, bytes]) -> None:
    """Replace existing files with new bytes, all or none (files that must agree, like a bundle's prior
    and the configs that weigh it).

    Each goes through :func:`atomic_path`, so none is ever half written, and keeps its mode; a link is
    followed (the file it points at is replaced). If one cannot be replaced, those already replaced get
    their previous bytes back and the error is raised; :class:`FilesNotRestoredError` names any that
    could not be put back. All or none holds against errors, not against a kill between two renames.
    """
    files = {Path(path).resolve(): data for path, data in contents.items()}
    previous = {path: (path.read_bytes(), path.stat().st_mode) for path in files}
    replaced: list[Path] = []
    try:
        for path, data in files.items():
            _replace(path, data, previous[path][1])
            replaced.append(path)
    except BaseException as err:
        unrestored = []
        for path in replaced:
            try:
                _replace(path, *previous[path])
            except OSError:
                unrestored.append(str(path))
        if unrestored:
            raise FilesNotRestoredError(f"{err}; not put back: {', '.join(unrestored)}", unrestored) from err
        raise


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` through a temporary file, then give it ``mode``."""
    with atomic_path(path, suffix=".partial") as partial:
        partial.write_bytes(data)
    os.chmod(path, stat.S_IMODE(mode))


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON via a temporary file and a rename, so readers never see half a file."""
    with atomic_path(path, suffix=".partial") as partial, open(partial, "w") as handle:
        json.dump(data, handle, indent=2, allow_nan=False, default=_jsonable)
        handle.write("\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return str(value)
