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


def _example():
    import importlib.util

    spec = importlib.util.spec_from_file_location("segmentation_chain", ROOT / "examples" / "segmentation_chain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--batch-size", "0"], ["--lr", "0"], ["--weights", "nope.pt"]])
def test_bad_options_are_refused_before_training(argv, capsys):
    """--steps 0 used to train the default 300 steps; a wrong --weights failed only after training."""
    pytest.importorskip("nilearn")
    with pytest.raises(SystemExit) as exit_info:
        _example().main(["--output-dir", "unused", *argv])
    assert exit_info.value.code == 2 and argv[0] in capsys.readouterr().err


def test_generated_by_line_repeats_every_option_that_differs():
    pytest.importorskip("nilearn")
    example = _example()
    cfg = {"output_dir": "out", "quick": True, "steps": 40, "batch_size": 8, "lr": 3e-3, "seed": 0, "threads": 1,
           "weights": str(example.DEFAULT_WEIGHTS)}
    assert example.reproduce_command(cfg) == "python examples/segmentation_chain.py --output-dir out --quick --threads 1"
    cfg.update(steps=100, lr=0.01, seed=3, weights="tuned.pt")
    assert example.reproduce_command(cfg) == ("python examples/segmentation_chain.py --output-dir out --quick "
                                              "--steps 100 --lr 0.01 --seed 3 --weights tuned.pt --threads 1")
