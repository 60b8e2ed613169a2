"""Comparing two sets of weights over degradation seeds (monai_dpe.reports.compare): the means a ship
rule reads, the verdict per margin, refusals of reports that do not pair, and the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from monai_dpe.engines.evaluation import EnhancementReport
from monai_dpe.reports.compare import compare_reports, format_comparison, seed_measures


def _image(name, preset, psnr, structure=40.0, untouched=40.0, rgb=False, delta_e=1.0, ssim=0.8):
    record = {"source": name.split("/")[0], "name": name, "modality": "mr", "preset": preset, "channels": 3 if rgb else 1,
              "rgb": rgb, "psnr": psnr, "structure_psnr": structure, "ssim": ssim, "delta_e": delta_e}
    if preset != "clean":
        record["baselines"] = {"input": {"psnr": 10.0, "structure_psnr": untouched, "ssim": 0.4, "delta_e": 20.0}}
    return record


def _report(tmp_path, label, seed, paper=(26.0, 30.0), structure=(41.0, 38.0), delta_e=(5.0, 9.0),
            radiology=19.0, clean=(70.0, None, 50.0)):
    """A report written by the real EnhancementReport, so the comparison reads the schema evaluate.json writes."""
    images = [_image("grey/a", "paper", paper[0], structure=structure[0], untouched=40.0, delta_e=delta_e[0]),
              _image("rgb/b", "paper", paper[1], structure=structure[1], untouched=39.0, rgb=True, delta_e=delta_e[1]),
              _image("grey/a", "radiology", radiology), _image("rgb/b", "radiology", radiology, rgb=True)]
    images += [_image(f"c/{i}", "clean", p) for i, p in enumerate(clean)]
    path = tmp_path / f"{label}_s{seed}" / "metrics.json"
    report = EnhancementReport(path, baselines=[], info={"seed": seed, "split": "validation",
                                                         "presets": ["paper", "radiology", "clean"]})
    report.records = images
    report.write()
    return path


def test_seed_measures_cap_clean_images_count_colour_delta_e_and_name_floor_failures(tmp_path):
    report = json.loads(_report(tmp_path, "ref", 0).read_text())
    measures = seed_measures(report)
    assert measures["paper_psnr"] == pytest.approx(28.0)
    assert measures["paper_structure_psnr"] == pytest.approx(39.5)
    assert measures["paper_delta_e_rgb"] == pytest.approx(9.0), "DeltaE of colour images only"
    assert measures["radiology_psnr"] == pytest.approx(19.0)
    assert measures["clean_psnr_capped"] == pytest.approx((60.0 + 60.0 + 50.0) / 3), "70 dB and infinite count as 60"
    assert measures["floor_failures"] == 1 and measures["failed_images"] == {"rgb/b": pytest.approx(-1.0)}
    assert seed_measures(report, floor_db=1.5)["floor_failures"] == 0


def test_margins_judge_each_measure_in_its_own_direction(tmp_path):
    reference = {str(p): json.loads(p.read_text()) for p in (_report(tmp_path, "ref", s) for s in (0, 1))}
    worse_colour = {str(p): json.loads(p.read_text()) for p in
                    (_report(tmp_path, "cand", s, paper=(26.5, 30.5), structure=(41.0, 39.0), delta_e=(5.0, 9.3))
                     for s in (0, 1))}
    result = compare_reports(reference, worse_colour, {"paper_psnr": -0.1, "paper_delta_e_rgb": 0.1,
                                                       "floor_failures": 0})
    rows = result["measures"]
    assert rows["paper_psnr"]["difference"] == pytest.approx(0.5) and rows["paper_psnr"]["passed"]
    assert rows["paper_delta_e_rgb"]["difference"] == pytest.approx(0.3)
    assert not rows["paper_delta_e_rgb"]["passed"] and rows["paper_delta_e_rgb"]["shortfall"] == pytest.approx(0.2)
    assert (rows["floor_failures"]["reference"], rows["floor_failures"]["candidate"]) == (2, 0), "summed over seeds"
    assert rows["floor_failures"]["passed"]
    assert result["passed"] is False
    text = format_comparison(result, "shipped", "new")
    assert "**fails by 0.200**" in text and "fails the margins" in text and "rgb/b (-1.00 dB, seed 0)" in text
    assert compare_reports(reference, worse_colour, {"paper_delta_e_rgb": 0.35})["passed"] is True
    assert compare_reports(reference, worse_colour)["passed"] is None


def test_reports_that_do_not_pair_are_refused_by_name(tmp_path):
    reference = {str(p): json.loads(p.read_text()) for p in (_report(tmp_path, "ref", s) for s in (0, 1))}
    other_seed = {str(p): json.loads(p.read_text()) for p in (_report(tmp_path, "cand", s) for s in (0, 2))}
    with pytest.raises(ValueError, match=r"the seeds differ"):
        compare_reports(reference, other_seed)
    path = _report(tmp_path, "fewer", 1, clean=(70.0, 50.0))
    fewer = {**{k: v for k, v in reference.items() if "ref_s0" in k}, str(path): json.loads(path.read_text())}
    with pytest.raises(ValueError, match=r"fewer_s1.*other images"):
        compare_reports(reference, fewer)
    with pytest.raises(ValueError, match=r"unknown measures \['psnr'\]"):
        compare_reports(reference, reference, {"psnr": -0.1})


def test_command_line_writes_the_table_and_exits_by_the_verdict(tmp_path):
    refs = [str(_report(tmp_path, "ref", s).parent) for s in (0, 1)]
    cands = [str(_report(tmp_path, "cand", s, delta_e=(5.0, 9.5))) for s in (0, 1)]
    command = [sys.executable, "-m", "monai_dpe.reports.compare", "--reference", *refs, "--candidate", *cands]
    out = tmp_path / "rule.md"
    failing = subprocess.run([*command, "--margins", "paper_delta_e_rgb=0.1", "--output", str(out)],
                             capture_output=True, text=True)
    assert failing.returncode == 1, failing.stderr
    assert "| paper DeltaE, colour images | 9.000 | 9.500 | +0.500 | +0.500 +0.500 | +0.100 | **fails by 0.400** |" \
        in failing.stdout
    assert out.read_text() == failing.stdout
    assert json.loads(out.with_suffix(".json").read_text())["measures"]["paper_delta_e_rgb"]["passed"] is False
    passing = subprocess.run([*command, "--margins", "paper_delta_e_rgb=0.5"], capture_output=True, text=True)
    assert passing.returncode == 0 and "passes the margins" in passing.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    bad = subprocess.run([*command[:-2], str(broken), cands[1]], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "broken.json: not a readable" in bad.stderr
    refused = subprocess.run([*command, "--output", str(tmp_path / "other.json")], capture_output=True, text=True)
    assert refused.returncode == 2 and "Markdown" in refused.stderr and not (tmp_path / "other.json").exists()


def _load(*paths):
    return {str(p): json.loads(p.read_text()) for p in paths}


def test_an_infinite_psnr_counts_at_the_cap_on_both_sides_and_unscored_floors_are_not_a_pass(tmp_path):
    reference = _load(_report(tmp_path, "ref", 0))
    exact = _report(tmp_path, "exact", 0)
    report = json.loads(exact.read_text())
    report["images"][1]["psnr"] = None  # the colour paper image returned exactly: the best score, not a missing one
    exact.write_text(json.dumps(report))
    rows = compare_reports(reference, _load(exact))["measures"]
    assert rows["paper_psnr"]["difference"] == pytest.approx((26.0 + 60.0) / 2 - 28.0)
    stripped = _report(tmp_path, "nobase", 0)
    report = json.loads(stripped.read_text())
    del report["images"][0]["baselines"]  # evaluated without the untouched input: floors cannot be told
    stripped.write_text(json.dumps(report))
    assert "floor_failures" not in compare_reports(reference, _load(stripped))["measures"]
    with pytest.raises(ValueError, match="cannot score"):
        compare_reports(reference, _load(stripped), {"floor_failures": 0})


def test_malformed_reports_and_mixed_weights_are_refused_by_name(tmp_path):
    reference = _load(_report(tmp_path, "ref", 0), _report(tmp_path, "ref", 1))
    for broken, match in ((lambda r: r.pop("seed"), "no 'seed'"),
                          (lambda r: r["images"][0].pop("ssim"), r"image 0 \(grey/a\) has no numeric ssim"),
                          (lambda r: r["images"][0].update(baselines=None) or r["images"][0].update(psnr="40"),
                           "has no numeric psnr")):
        path = _report(tmp_path, "bad", 0)
        report = json.loads(path.read_text())
        broken(report)
        with pytest.raises(ValueError, match=rf"bad_s0.*{match}"):
            compare_reports({str(path): report}, {str(path): report})
    mixed = _load(_report(tmp_path, "ref", 0), _report(tmp_path, "other", 1))
    mixed[next(k for k in mixed if "other_s1" in k)]["weights"] = "another/model.pt"
    with pytest.raises(ValueError, match=r"other_s1.*weights 'another/model.pt'"):
        compare_reports(mixed, reference)


def test_command_line_refuses_output_over_a_report_and_non_finite_margins(tmp_path):
    ref = _report(tmp_path, "ref", 0)
    before = ref.read_text()
    command = [sys.executable, "-m", "monai_dpe.reports.compare", "--reference", str(ref.parent), "--candidate",
               str(_report(tmp_path, "cand", 0))]
    clash = subprocess.run([*command, "--output", str(ref.with_suffix(".md"))], capture_output=True, text=True)
    assert clash.returncode == 2 and "would overwrite the report" in clash.stderr and ref.read_text() == before
    assert clash.stdout == "", "nothing printed for a refused run"
    nan = subprocess.run([*command, "--margins", "paper_psnr=nan"], capture_output=True, text=True)
    assert nan.returncode == 2 and "finite number" in nan.stderr
    twice = subprocess.run([*command, "--margins", "paper_psnr=-0.1", "paper_psnr=5"], capture_output=True, text=True)
    assert twice.returncode == 2 and "more than once" in twice.stderr
    nowhere = subprocess.run([*command, "--output", str(tmp_path / "missing" / "x.md")], capture_output=True, text=True)
    assert nowhere.returncode == 2 and "not a file name in a folder that exists" in nowhere.stderr and not (tmp_path / "missing").exists()
