"""One-line error reasons for users: the real error under MONAI's transform and config-parser wrappers."""
from __future__ import annotations

__all__ = ["one_line"]

# messages MONAI uses when it re-raises an error from inside a transform or a config expression
_WRAPPERS = ("applying transform", "Failed to evaluate", "Failed to instantiate", "Component to instantiate")


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of the first error in ``err``'s chain that is not a wrapper (its type if it has no text)."""
    seen: set[int] = set()
    while str(err).lstrip().startswith(_WRAPPERS) and id(err) not in seen:
        seen.add(id(err))
        inner = err.__cause__ or err.__context__
        if inner is None:
            break
        err = inner
    text = str(err).strip().splitlines()
    reason = text[0].strip() if text and text[0].strip() else type(err).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."
