"""The downstream segmentation example runs as a user would run it (quick mode) and segments for real."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_segmentation_chain_quick(tmp_path):
    """Quick mode writes the table, JSON and figure; the UNet segments clean test slices far above chance."""
    pytest.importorskip("nilearn")
    if not (ROOT / "bundle" / "models" / "model.pt").exists():
        pytest.skip("no shipped weights")
    result = subprocess.run(
        [sys.executable, "examples/segmentation_chain.py", "--output-dir", str(tmp_path), "--quick", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean Dice (GM, WM)" in result.stdout
    for name in ("downstream.md", "downstream.json", "downstream.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "downstream.json").read_text())
    assert not set(report["split"]["train"]) & set(report["split"]["test"])
    gap = min(abs(a - b) for a in report["split"]["train"] for b in report["split"]["test"])
    assert gap > report["config"]["guard"]  # no training slice next to a test slice
    clean, chance = report["results"]["clean"]["none"], report["chance_dice"]
    for tissue in ("gm", "wm"):
        # chance: random labels with the test class frequencies (about 0.25 GM, 0.15 WM)
        assert clean[tissue] > 0.6 and clean[tissue] > chance[tissue] + 0.3, (tissue, clean, chance)
    for source in ("clean", "radiology", "paper"):
        assert set(report["results"][source]) == {"none", "dpe", "clahe"}
        assert all(0.0 <= r["mean"] <= 1.0 for r in report["results"][source].values())
    assert "| radiology | DPE (shipped weights) |" in (tmp_path / "downstream.md").read_text()
