"""Errors users see: one-line reasons (the real error under MONAI's transform and config-parser
wrappers), and the refusal of a command before it does any work."""
from __future__ import annotations

import re

from monai_dpe.extras import MissingExtraError, require

__all__ = ["UsageError", "one_line", "require_extra"]


class UsageError(Exception):
    """A request the command refuses before doing any work (exit code 2)."""


def require_extra(module: str, purpose: str) -> None:
    """Refuse, as a :class:`UsageError` naming the extra to install, a command whose ``module`` is missing."""
    try:
        require(module, purpose)
    except MissingExtraError as err:
        raise UsageError(str(err)) from None

# messages MONAI uses when it re-raises an error from inside a transform or a config expression
_WRAPPERS = ("applying transform", "Failed to evaluate", "Failed to instantiate", "Component to instantiate")


# ITK errors start with the C++ source location, then "itk::ERROR: Class(0x...): what failed", then the
# underlying library's trail of messages, whose last line is the actual reason
_SOURCE_LOCATION = re.compile(r"^\S+\.(?:c|cc|cpp|cxx|h|hxx|txx):\d+:?$")
_ITK_PREFIX = re.compile(r"^(?:itk::ERROR|ITK ERROR):\s*\w+\(0x[0-9a-fA-F]+\):\s*")
_LIBRARY_PREFIX = re.compile(r"^\[\w+\]\s*\w+:\s*")


# ITK's Python build holds only some pixel types; its message names the missing type in ITK's own terms
_ITK_UNWRAPPED = re.compile(r"^itk\.\w+ is not wrapped for input type `(.+), \w+`")
# what ITK says when none of its image readers recognises a file's content
_NO_READER = re.compile(r"^Could not create IO object for reading file ")


def _itk_unwrapped_reason(line: str) -> str | None:
    """"pixel type X is not supported by ITK's Python build" for ITK's long wrapping message."""
    match = _ITK_UNWRAPPED.match(line)
    if match is None:
        return None
    pixel = match.group(1).replace("itk.", "")
    if pixel.startswith("Vector"):  # colour stored as a vector of components, not as an RGB pixel
        return (f"pixel type {pixel} is not supported by ITK's Python build (save it with an RGB pixel type, "
                "as PNG or TIFF, or as one grey image per channel)")
    return f"pixel type {pixel} is not supported by ITK's Python build (convert to 8-bit RGB or one grey image per channel)"


def _itk_reason(lines: list[str]) -> list[str]:
    """ITK's message lines as one: what failed, then the underlying library's last word on why."""
    if not lines:
        return lines
    head = _ITK_PREFIX.sub("", lines[0]).rstrip(".: ")
    if len(lines) == 1:
        return [head]
    return [f"{head}: {_LIBRARY_PREFIX.sub('', lines[-1])}"]


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of the first error in ``err``'s chain that is not a wrapper (its type if it has no text)."""
    seen: set[int] = set()
    while str(err).lstrip().startswith(_WRAPPERS) and id(err) not in seen:
        seen.add(id(err))
        inner = err.__cause__ or err.__context__
        if inner is None:
            break
        err = inner
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if lines and _SOURCE_LOCATION.match(lines[0]):
        lines = _itk_reason(lines[1:])
    reason = lines[0] if lines else type(err).__name__
    reason = _itk_unwrapped_reason(reason) or reason
    if _NO_READER.match(reason) and len(lines) == 1:  # ITK says no more where no reader knows the content
        reason = "no image reader recognises its content (truncated, damaged, or not the format its name says)"
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
