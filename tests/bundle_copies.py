"""Copies of the shipped bundle's configs for tests that put their own weights beside them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "bundle" / "configs"


def copy_configs(destination: Path, source: Path = SHIPPED_CONFIGS) -> Path:
    """Copy ``configs/`` without its ``model_digests`` record: the shipped digests describe the shipped
    weights, and a copy with other weights (random-init, trained in a test) would be refused by them."""
    shutil.copytree(source, destination)
    meta = destination / "metadata.json"
    metadata = json.loads(meta.read_text())
    metadata.pop("model_digests", None)
    meta.write_text(json.dumps(metadata, indent=4) + "\n")
    return destination
