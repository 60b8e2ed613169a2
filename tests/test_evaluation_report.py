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


def test_baselines_are_reused_from_an_earlier_report_of_the_same_split(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    import torch

    from monai_dpe.engines import evaluation
    from monai_dpe.engines.evaluation import EnhancementReport

    target = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    batch = {"image": target * 0.5, "image_id": ["ct_a"], "source": ["ct_a"], "modality": ["ct"], "preset": ["paper"],
             "channels": torch.tensor([3])}
    engine = SimpleNamespace(state=SimpleNamespace(batch=batch, output={"pred": target, "label": target,
                                                                          "image": target * 0.5}))
    first = EnhancementReport(tmp_path / "first.json", baselines=["clahe"], info={"seed": 0})
    first.score(engine)
    first.write()
    monkeypatch.setattr(evaluation, "apply_baseline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    second = EnhancementReport(tmp_path / "second.json", baselines=["clahe"], info={"seed": 0},
                               reuse_baselines=tmp_path / "first.json")
    second.score(engine)
    assert second.records[0]["baselines"] == first.records[0]["baselines"]
    with pytest.raises(ValueError, match="seed"):
        EnhancementReport(tmp_path / "third.json", baselines=["clahe"], info={"seed": 1},
                          reuse_baselines=tmp_path / "first.json")
    assert json.loads((tmp_path / "first.json").read_text())["images"][0]["name"] == "ct_a"
