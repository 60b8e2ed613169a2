"""The variant rows of the model card: the command lines, the table, and one variant run for real."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from monai_dpe.reports.variants import VARIANTS, main, variant_command, variant_table, write_table

from bundle_copies import copy_configs
from helpers import REPO, TINY, shipped_network


@pytest.fixture
def bundle(tmp_path):
    """A bundle folder holding a copy of the repository's configs (nothing else)."""
    root = tmp_path / "bundle"
    copy_configs(root / "configs", REPO / "bundle" / "configs")
    return root


def _report(psnr: float) -> dict:
    scores = {"psnr": psnr, "structure_psnr": psnr + 10, "ssim": 0.8, "delta_e_rgb": None}
    return {"split": "test", "seed": 0, "weights": "model.pt",
            "per_preset": {"paper": {"model": scores}, "radiology": {"model": dict(scores, psnr=psnr - 5)},
                           "clean": {"model": {"psnr": 60.0}}}}


def test_each_variant_is_the_card_command_with_its_overrides():
    command = variant_command({"range_margin": "$None", "network_share": "0.3"}, "ref.json", "out/clip")
    joined = " ".join(command)
    assert "-m monai.bundle run" in joined and "--reuse_baselines ref.json" in joined and "--output_dir out/clip" in joined
    assert command[-4:] == ["--range_margin", "$None", "--network_share", "0.3"]
    assert len(VARIANTS) == len({label.split("(")[0] for label in VARIANTS})  # one folder per variant


def test_the_table_puts_the_shipped_row_first_and_leaves_out_clean(tmp_path):
    table = variant_table(_report(26.0), {"a variant": _report(24.0)})
    assert list(table) == ["paper", "radiology"]
    assert list(table["paper"]) == ["DPE (shipped)", "a variant"]
    assert table["radiology"]["a variant"]["psnr"] == 19.0
    write_table(table, tmp_path / "variants.md", "info")
    text = (tmp_path / "variants.md").read_text()
    assert "| a variant | 24.00 | 34.00 | 0.800 | - |" in text and "## radiology preset" in text


@pytest.mark.slow
def test_a_variant_runs_and_is_tabled(bundle, tiny_data, tmp_path):
    """A reference evaluation of a tiny network, then the clipping variant through the report's command: its
    row is the variant's own evaluation, and a missing reference is refused with one line."""
    torch.manual_seed(3)
    weights = tmp_path / "weights.pt"
    torch.save(shipped_network(channels=TINY["channels"]).state_dict(), weights)
    extra = ["--datalist", str(tiny_data / "datalist.json"), "--channels", "[8,16]", "--weights_path", str(weights),
             "--baselines", "['stretch']", "--validate#split", "validation"]
    reference = tmp_path / "reference"
    first = subprocess.run(variant_command({}, "$None", str(reference), str(bundle), str(tiny_data), extra),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    output = tmp_path / "variants"
    args = ["--reference", str(reference / "metrics.json"), "--output", str(output), "--bundle_root", str(bundle),
            "--dataset_dir", str(tiny_data), "--only", "clip", *extra]
    assert main(args) == 0
    table = json.loads((output / "variants.json").read_text())
    own = json.loads((output / "the_line_allowed_to_clip" / "metrics.json").read_text())
    (label,) = [k for k in table["paper"] if k != "DPE (shipped)"]
    assert "clip" in label and table["paper"][label]["psnr"] == own["per_preset"]["paper"]["model"]["psnr"]
    assert main(["--reference", str(tmp_path / "none.json"), "--output", str(output)]) == 2
