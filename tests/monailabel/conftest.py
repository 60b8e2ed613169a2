"""tests/monailabel runs in MONAI Label's own pinned environment (``make test-monailabel``).

MONAI Label needs torchvision and pydicom 2, which the project's .venv does not have, so where
MONAI Label is not installed (the main suite) this folder's tests are not collected at all.
"""
import importlib.util

# pytest puts tests/ on sys.path, where this folder is itself a namespace package called
# "monailabel": only an installed package (a spec with a file of its own) counts
_spec = importlib.util.find_spec("monailabel")
collect_ignore_glob = [] if _spec is not None and _spec.origin is not None else ["test_*.py"]
