"""The quality comparison: classical baselines added for it, and the report built from evaluation JSONs."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from monai_dpe.engines.baselines import BASELINES, apply_baseline, auto_gamma, bm3d_clahe
from monai_dpe.engines.evaluation import summarise
from monai_dpe.reports.quality import METHODS, crop_figure, method_scores, psnr_chart, write_markdown


@pytest.fixture
def dark_noisy():
    from skimage.data import camera

    clean = camera().astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    degraded = np.clip(0.35 * clean + rng.normal(0.0, 0.04, clean.shape), 0.0, 1.0)
    return clean, degraded[..., None].repeat(3, axis=-1)


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


def test_auto_gamma_maps_mean_to_mid_grey_and_keeps_hue(dark_noisy):
    _, degraded = dark_noisy
    out = auto_gamma(degraded, rgb=False)
    assert out.shape == degraded.shape
    assert out[..., 0].mean() == pytest.approx(0.5, abs=0.08)  # the mean maps to 0.5 exactly before averaging
    assert out[..., 0].mean() > degraded[..., 0].mean() + 0.2
    rgb = np.stack([0.3 * degraded[..., 0], 0.15 * degraded[..., 0], 0.1 * degraded[..., 0]], axis=-1)
    bright = auto_gamma(rgb, rgb=True)
    assert bright.mean() > rgb.mean()
    ratio_in, ratio_out = rgb[..., 1].sum() / rgb[..., 0].sum(), bright[..., 1].sum() / bright[..., 0].sum()
    assert ratio_out == pytest.approx(ratio_in, rel=0.05), "hue and saturation stay; only the value changes"
    flat = np.zeros((8, 8, 3))
    np.testing.assert_array_equal(auto_gamma(flat, rgb=False), flat)


@pytest.mark.skipif(importlib.util.find_spec("bm3d") is None, reason="bm3d not installed (the baselines extra)")
def test_bm3d_clahe_denoises_before_equalising(dark_noisy):
    clean, degraded = dark_noisy
    crop = degraded[:128, :128]
    with_bm3d = bm3d_clahe(crop, rgb=False)[..., 0]
    plain = BASELINES["clahe"](crop, False)[..., 0]
    assert with_bm3d.shape == crop.shape[:2]
    assert np.std(np.diff(with_bm3d, axis=0)) < 0.7 * np.std(np.diff(plain, axis=0)), "BM3D removed noise"


@pytest.mark.skipif(importlib.util.find_spec("bm3d") is None, reason="bm3d not installed (the baselines extra)")
def test_bm3d_clahe_on_a_grey_image_stored_as_rgb_matches_grey(dark_noisy):
    """bm3d_rgb divides by zero on three equal channels; the report calls such a file RGB."""
    _, degraded = dark_noisy
    crop = degraded[:96, :96, :1]
    as_rgb = np.repeat(crop, 3, axis=-1)
    out = bm3d_clahe(as_rgb, rgb=True)
    assert np.isfinite(out).all() and out.mean() < 0.95, "not the all-white image of a NaN result"
    np.testing.assert_allclose(out, np.repeat(bm3d_clahe(crop, rgb=False), 3, axis=-1), atol=1e-6)


def test_bm3d_clahe_says_how_to_install_when_missing(monkeypatch, dark_noisy):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # what `import bm3d` does when the package is absent
    with pytest.raises(ImportError, match=r"pip install 'monai-dpe\[baselines\]'"):
        bm3d_clahe(dark_noisy[1][:16, :16], rgb=False)


def test_apply_baseline_is_channel_first_and_clipped():
    image = torch.rand(3, 20, 24) * 1.5
    out = apply_baseline("stretch", image, rgb=True)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert float(out.max()) <= 1.0
    torch.testing.assert_close(out, image.clamp(0, 1))


def _record(preset, modality, psnr, rgb=False, baselines=None):
    out = {"source": modality, "modality": modality, "preset": preset, "channels": 3 if rgb else 1, "rgb": rgb,
           "psnr": psnr, "ssim": 0.8, "delta_e": 2.5}
    if baselines:
        out["baselines"] = {k: {"psnr": v, "ssim": 0.5, "delta_e": 6.0} for k, v in baselines.items()}
    return out


@pytest.fixture
def reports():
    base = {"stretch": 27.0, "clahe": 20.0, "bm3d_clahe": 24.0, "auto_gamma": 18.0}
    dpe = summarise([_record("paper", "corpus/ct", 31.0, baselines=base), _record("paper", "fundus", 33.0, True, base),
                     _record("radiology", "corpus/ct", 21.0, baselines=base), _record("clean", "corpus/ct", 38.0)])
    unet = summarise([_record("paper", "corpus/ct", 29.0), _record("paper", "fundus", 30.0, True),
                      _record("radiology", "corpus/ct", 20.0), _record("clean", "corpus/ct", 36.0)])
    return dpe, unet


def test_method_scores_merge_both_reports(reports):
    table = method_scores(*reports)
    assert set(table) == {"paper", "radiology", "clean"}
    assert set(table["paper"]) == {"mean", "ct", "fundus"}, "modality folders are reduced to their names"
    assert table["paper"]["mean"]["dpe"]["psnr"] == pytest.approx(32.0)
    assert table["paper"]["mean"]["basicunet"]["psnr"] == pytest.approx(29.5)
    assert table["paper"]["ct"]["bm3d_clahe"]["psnr"] == pytest.approx(24.0)
    assert set(table["paper"]["mean"]) <= set(METHODS)


def test_markdown_states_margins_and_verdicts(reports, tmp_path):
    table = method_scores(*reports)
    write_markdown(table, tmp_path / "quality.md", {"DPE": "x"})
    text = (tmp_path / "quality.md").read_text()
    assert "best classical BM3D + CLAHE 24.00 dB: margin +8.00 dB (target +5 dB: met)" in text
    assert "margin over BasicUNet (trained for 0.2.0's budget) +2.50 dB (met)" in text
    assert "paper's 30.7 dB: met" in text
    assert "| MONAI BasicUNet | 36.00 |" in text  # fidelity row
    radiology = text.split("## radiology")[1].split("##")[0]
    assert "margin -3.00 dB (target +5 dB: not met)" in radiology


def test_chart_and_crops_are_written(reports, tmp_path):
    psnr_chart(method_scores(*reports), tmp_path / "chart.png")
    assert Image.open(tmp_path / "chart.png").size[0] > 600
    target = torch.rand(3, 40, 48)
    pairs = [{"name": "ct", "rgb": False, "degraded": 0.3 * target[:1], "image": target * 0.9, "target": target},
             {"name": "fundus", "rgb": True, "degraded": 0.3 * target, "image": target * 0.9, "target": target}]
    identity = torch.nn.Identity()
    crop_figure(pairs, {"dpe": identity}, "clahe", tmp_path / "crops.png", crop=32)
    width, height = Image.open(tmp_path / "crops.png").size
    assert height > width * 0.4, "two rows of four panels"


def test_crops_enhance_a_volume_whole_and_show_its_centre_slice(tmp_path):
    """A volume reaches the network slice by slice, as evaluation and inference give it, and its centre slice is shown."""
    target = torch.rand(3, 40, 48, 7)
    pair = {"name": "mr", "rgb": False, "degraded": 0.3 * target[:1], "image": target * 0.9, "target": target}
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, **kwargs):
            seen.append(x.shape)
            return x

    crop_figure([pair], {"dpe": Probe()}, "clahe", tmp_path / "crops.png", crop=32)
    assert len(seen) == 7 and all(shape == (1, 3, 40, 48) for shape in seen)
    assert Image.open(tmp_path / "crops.png").size[0] > 0


@pytest.mark.parametrize("content", [None, "{not json"], ids=["missing", "corrupt"])
def test_cli_refuses_an_unusable_metrics_file_with_one_line(tmp_path, capsys, content):
    from monai_dpe.reports.quality import main

    metrics = tmp_path / "metrics.json"
    if content is not None:
        metrics.write_text(content)
    with pytest.raises(SystemExit) as stop:
        main(["--dpe-metrics", str(metrics), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--dpe-metrics {metrics}: " in err and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "nothing written"


def test_the_report_says_what_it_scored_and_leaves_out_a_baseline_of_another_split(reports, tmp_path, monkeypatch):
    from monai_dpe.reports import quality

    dpe, unet = reports
    records = [_record("paper", "corpus/ct", 31.0), _record("paper", "fundus", 33.0, True), _record("clean", "corpus/ct", 38.0)]
    dpe = {**dpe, "split": "test", "presets": ["paper", "radiology", "clean"], "images": records}
    text = quality.about(dpe)
    assert text.startswith("The test split (2 images from 2 sources: ct, fundus;") and "Structure PSNR" in text
    metrics, other = tmp_path / "dpe.json", tmp_path / "unet.json"
    metrics.write_text(json.dumps(dpe))
    other.write_text(json.dumps({**unet, "split": "validation"}))
    monkeypatch.setattr(quality, "crop_figure", lambda *a, **k: None)  # no networks or corpus here
    monkeypatch.setattr(quality, "_network", lambda *a, **k: torch.nn.Identity())
    monkeypatch.setattr(quality, "_validation_pairs", lambda *a, **k: [])
    assert quality.main(["--dpe-metrics", str(metrics), "--basicunet-metrics", str(other), "--output", str(tmp_path)]) == 0
    report = (tmp_path / "quality.md").read_text()
    assert "MONAI BasicUNet" not in report.split("## paper")[1], "a validation-split BasicUNet is not compared with test"
    assert "BasicUNet: not evaluated on the test split" in report and "means over the test images" in report
