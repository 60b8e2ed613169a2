"""Copies of the shipped bundle's configs for tests that put their own weights beside them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from monai_dpe.cli import MODEL_EXTRAS  # what the configs read from models/ besides the weights (the level prior)

SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "bundle" / "configs"


def copy_configs(destination: Path, source: Path = SHIPPED_CONFIGS) -> Path:
    """Copy ``configs/`` without its ``model_digests`` record: the shipped digests describe the shipped
    weights, and a copy with other weights (random-init, trained in a test) would be refused by them. The
    files the configs read beside the weights (:data:`MODEL_EXTRAS`) go to ``models/`` next to the copy,
    where a bundle holds them."""
    shutil.copytree(source, destination)
    models = destination.parent / "models"
    models.mkdir(exist_ok=True)
    for name in MODEL_EXTRAS:
        shutil.copy2(source.parent / "models" / name, models / name)
    meta = destination / "metadata.json"
    metadata = json.loads(meta.read_text())
    metadata.pop("model_digests", None)
    meta.write_text(json.dumps(metadata, indent=4) + "\n")
    return destination


def written_models(bundle: Path) -> list[str]:
    """What a run wrote to ``bundle/models`` beyond what :func:`copy_configs` put there (weights, checkpoints)."""
    models = bundle / "models"
    return sorted(p.name for p in models.iterdir() if p.name not in MODEL_EXTRAS) if models.is_dir() else []
