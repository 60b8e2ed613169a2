"""The evaluation report (monai_dpe.engines.evaluation): means and margins per preset and modality, the
structure margin (the model's structure PSNR against the untouched input's), and baselines reused."""
from __future__ import annotations

import pytest
import torch

from monai_dpe.engines.evaluation import EnhancementReport, summarise


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

    from monai_dpe.engines import evaluation

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
    assert "level" not in first.records[0]  # an item without one
    second.records.clear()
    batch["level"] = torch.tensor([[1.0, 0.125, 0.625]])  # a display image's, as the intensity policy records it
    second.score(engine)
    assert second.records[0]["level"] == [1.0, 0.125, 0.625]
    with pytest.raises(ValueError, match="seed"):
        EnhancementReport(tmp_path / "third.json", baselines=["clahe"], info={"seed": 1},
                          reuse_baselines=tmp_path / "first.json")
    assert json.loads((tmp_path / "first.json").read_text())["images"][0]["name"] == "ct_a"


def test_reused_baselines_are_computed_again_where_the_untouched_input_scores_otherwise(tmp_path, monkeypatch, caplog):
    """An earlier report made with another loader or target frame scored other inputs: its baselines would be
    silently wrong, so that image's are computed again, and a warning names it."""
    import json
    from types import SimpleNamespace

    from monai_dpe.engines import evaluation

    target = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))

    def engine(untouched: torch.Tensor) -> SimpleNamespace:
        batch = {"image": target * 0.5, "image_id": ["mr_a"], "source": ["mr_a"], "modality": ["mr"],
                 "preset": ["paper"], "channels": torch.tensor([3]), "degraded": untouched}
        return SimpleNamespace(state=SimpleNamespace(batch=batch, output={"pred": target, "label": target,
                                                                          "image": target * 0.5}))

    first = EnhancementReport(tmp_path / "first.json", baselines=["clahe"], info={"seed": 0})
    first.score(engine(target * 0.5))
    first.write()
    monkeypatch.setattr(evaluation, "apply_baseline", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    same = EnhancementReport(tmp_path / "same.json", baselines=["clahe"], info={"seed": 0},
                             reuse_baselines=tmp_path / "first.json")
    same.score(engine(target * 0.5))  # the same untouched input: reused, not recomputed
    assert same.records[0]["baselines"] == first.records[0]["baselines"]
    calls = []
    monkeypatch.setattr(evaluation, "apply_baseline", lambda name, image, *a, **k: calls.append(1) or image * 0.9)
    other = EnhancementReport(tmp_path / "other.json", baselines=["clahe"], info={"seed": 0},
                              reuse_baselines=tmp_path / "first.json")
    with caplog.at_level("WARNING", logger=evaluation.__name__):
        other.score(engine(target * 0.7))
    assert calls == [1] and other.records[0]["baselines"]["clahe"] != first.records[0]["baselines"]["clahe"]
    assert "mr_a (paper)" in caplog.text and "computed again" in caplog.text
    # an earlier record without an untouched input, or identical to its target where this one is not
    report = json.loads((tmp_path / "first.json").read_text())
    for earlier_input in (None, {"psnr": None}):
        report["images"][0]["baselines"]["input"] = earlier_input
        (tmp_path / "edited.json").write_text(json.dumps(report))
        edited = EnhancementReport(tmp_path / "x.json", baselines=["clahe"], info={"seed": 0},
                                   reuse_baselines=tmp_path / "edited.json")
        calls.clear()
        edited.score(engine(target * 0.5))
        assert calls == [1]


def test_reused_baselines_are_computed_again_where_the_stretch_they_work_on_differs(tmp_path, monkeypatch, caplog):
    """The same degraded file stretched otherwise (a volume stretched by its whole range rather than one slice's)
    gives every baseline another input: its untouched input alone would not tell, the stretch's score does."""
    from types import SimpleNamespace

    from monai_dpe.engines import evaluation

    target = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))

    def engine(stretched: torch.Tensor) -> SimpleNamespace:
        batch = {"image": stretched, "image_id": ["mr_a"], "source": ["mr_a"], "modality": ["mr"],
                 "preset": ["paper"], "channels": torch.tensor([3]), "degraded": target * 0.3}
        return SimpleNamespace(state=SimpleNamespace(batch=batch, output={"pred": target, "label": target,
                                                                          "image": stretched}))

    first = EnhancementReport(tmp_path / "first.json", baselines=["stretch", "clahe"], info={"seed": 0})
    first.score(engine(target * 0.5))
    first.write()
    calls = []
    monkeypatch.setattr(evaluation, "apply_baseline", lambda name, image, *a, **k: calls.append(name) or image)
    again = EnhancementReport(tmp_path / "again.json", baselines=["stretch", "clahe"], info={"seed": 0},
                              reuse_baselines=tmp_path / "first.json")
    again.score(engine(target * 0.5))
    assert calls == [] and again.records[0]["baselines"] == first.records[0]["baselines"]
    with caplog.at_level("WARNING", logger=evaluation.__name__):
        again.score(engine(target * 0.8))
    assert calls == ["clahe"] and "mr_a (paper): the reused report's stretch" in caplog.text


def test_report_means_and_margin():
    def rec(preset, modality, psnr, rgb=False, base=None):
        out = {"source": modality, "modality": modality, "preset": preset, "channels": 3 if rgb else 1, "rgb": rgb,
               "psnr": psnr, "ssim": 0.5, "delta_e": 2.0 if rgb else 9.0}
        if base is not None:
            out["baselines"] = {"clahe": {"psnr": base, "ssim": 0.4, "delta_e": 5.0},
                                "stretch": {"psnr": 40.0, "ssim": 0.9, "delta_e": 1.0}}
        return out

    records = [rec("paper", "ct", 30.0, base=20.0), rec("paper", "fundus", 34.0, rgb=True, base=26.0),
               rec("radiology", "ct", 28.0, base=27.0), rec("clean", "ct", 40.0)]
    summary = summarise(records)
    assert summary["per_preset"]["paper"]["model"]["psnr"] == pytest.approx(32.0)
    assert summary["per_preset"]["paper"]["margin_db"] == pytest.approx(32.0 - 23.0)  # stretch is not classical
    assert summary["per_preset"]["paper"]["model"]["delta_e_rgb"] == pytest.approx(2.0)
    assert summary["overall"]["model"]["count"] == 3, "overall averages the degraded presets only"
    assert summary["per_modality"]["ct"]["model"]["psnr"] == pytest.approx(29.0)
    assert summary["per_preset"]["clean"]["model"]["psnr"] == pytest.approx(40.0)
    assert "margin_db" not in summary["per_preset"]["clean"]
    with pytest.raises(ValueError):
        EnhancementReport("x.json", baselines=["gamma_magic"])


def test_report_says_how_many_images_its_psnr_mean_covers(tmp_path, caplog):
    """An output identical to its target has infinite PSNR: left out of that mean, and said so."""
    report = EnhancementReport(tmp_path / "m.json", baselines=[])
    target = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(0))
    exact, poor = report._scores(target, target), report._scores(target * 0.5, target)
    assert exact["psnr"] is None and poor["psnr"] is not None
    report.records = [{"source": s, "modality": "mr", "preset": "clean", "channels": 3, "rgb": True, **sc}
                      for s, sc in (("a", exact), ("b", poor))]
    with caplog.at_level("INFO", logger="monai_dpe.engines.evaluation"):
        written = report.write()
    means = written["per_preset"]["clean"]["model"]
    assert (means["count"], means["psnr_count"]) == (2, 1) and means["psnr"] == pytest.approx(poor["psnr"])
    assert any("1 identical to their targets, infinite PSNR, left out of its mean" in m for m in caplog.messages)


def test_report_scores_the_signed_brightness_error(tmp_path):
    """mean_error says which way an image is off: a uniformly darker prediction gives minus the offset."""
    report = EnhancementReport(tmp_path / "m.json", baselines=[])
    target = torch.rand(3, 32, 32) * 0.5 + 0.25
    scores = report._scores(target - 0.1, target)
    assert scores["mean_error"] == pytest.approx(-0.1, abs=1e-6)
    records = [{"preset": "paper", "modality": "ct", "rgb": False, "psnr": 20.0, "ssim": 0.5, "delta_e": 1.0,
                "mean_error": e} for e in (-0.1, 0.3)]
    assert summarise(records)["per_preset"]["paper"]["model"]["mean_error"] == pytest.approx(0.1)
