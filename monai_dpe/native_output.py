"""What C and C++ libraries print straight to the process's stderr, routed to Python logging instead.

ITK, GDCM and their codecs write warnings such as "Unsupported JPEG data precision 12" on file
descriptor 2, past Python's ``sys.stderr``, ``warnings`` and ``logging``: a successful run printed
a dozen such lines with no file named. Around each file's reading and writing, descriptor 2 is
pointed at a temporary file, and what arrives there is logged, one record per line, on the
``monai_dpe.native`` logger at INFO: the command line shows it with ``--verbose`` only, and a
bundle run's logging configuration decides as for any other message.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["native_output_logged"]

logger = logging.getLogger("monai_dpe.native")


@contextmanager
def native_output_logged(context: str = "", level: int = logging.INFO) -> Iterator[None]:
    """Log what is written to file descriptor 2 inside the block, prefixed by ``context`` (a file name).

    Python-level writes to ``sys.stderr`` inside the block are caught too; log records emitted
    inside go through the handlers as usual, but a handler writing to stderr lands in the capture
    and is logged again at ``level`` on exit, so callers log their own results after the block.
    """
    try:
        stderr_fd = sys.stderr.fileno() if sys.stderr is not None else 2
    except (AttributeError, OSError, ValueError):  # a replaced stderr without a descriptor: nothing to route
        yield
        return
    _flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), stderr_fd)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            prefix = f"{context}: " if context else ""
            for line in text.splitlines():
                if line.strip():
                    logger.log(level, "%s%s", prefix, line.rstrip())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
