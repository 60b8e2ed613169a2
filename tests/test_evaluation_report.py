"""The evaluation report's structure margin: the model's structure PSNR against the untouched input's."""
from __future__ import annotations

import pytest

from monai_dpe.engines.evaluation import summarise


def _record(name: str, model: float, untouched: float) -> dict:
    return {"source": "s", "name": name, "modality": "ct", "preset": "paper", "channels": 1, "rgb": False,
            "psnr": 20.0, "structure_psnr": model, "ssim": 0.5, "delta_e": 1.0,
            "baselines": {"input": {"psnr": 10.0, "structure_psnr": untouched, "ssim": 0.3, "delta_e": 9.0}}}


def test_structure_margin_mean_and_worst_image_are_named():
    summary = summarise([_record("a", 40.0, 38.0), _record("b", 35.0, 36.0)])["per_preset"]["paper"]
    assert summary["structure_margin_db"] == pytest.approx(0.5)
    assert summary["worst_structure_margin_db"] == pytest.approx(-1.0)
    assert summary["worst_structure_image"] == "b"
    assert summary["input"]["structure_psnr"] == pytest.approx(37.0)


def test_no_margin_without_the_untouched_input():
    record = _record("a", 40.0, 38.0)
    del record["baselines"]["input"]
    assert "structure_margin_db" not in summarise([record])["per_preset"]["paper"]
