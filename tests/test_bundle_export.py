"""MONAI bundle tooling on the shipped configs: verify_net_in_out and ckpt_export to TorchScript."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def configs(tmp_path) -> Path:
    folder = tmp_path / "bundle" / "configs"
    shutil.copytree(REPO / "bundle" / "configs", folder)
    return folder


def bundle_tool(command: str, configs: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", command, "network_def", "--meta_file", str(configs / "metadata.json"),
           "--config_file", str(configs / "inference.json"), "--bundle_root", str(configs.parent), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("size", [None, pytest.param("37", marks=pytest.mark.slow)], ids=["metadata_shape", "odd_size"])
def test_verify_net_in_out(configs, size):
    extra = ["--any", size] if size else []
    result = bundle_tool("verify_net_in_out", configs, "--device", "cpu", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_verify_net_in_out_catches_a_wrong_metadata_channel_count(configs):
    meta = json.loads((configs / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 1
    (configs / "metadata.json").write_text(json.dumps(meta))
    result = bundle_tool("verify_net_in_out", configs, "--device", "cpu")
    assert result.returncode != 0
    assert "output channel number" in result.stderr


def test_ckpt_export_torchscript_matches_eager(configs, tmp_path):
    from monai.bundle import ConfigParser

    meta = json.loads((configs / "metadata.json").read_text())
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")  # the bundle's own network, level inputs and all
    with torch.no_grad():  # weights away from the initialisation, so the comparison sees every layer
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "random_weights.pt"
    torch.save(net.state_dict(), ckpt)
    exported = tmp_path / "model.ts"
    result = bundle_tool("ckpt_export", configs, "--filepath", str(exported), "--ckpt_file", str(ckpt))
    assert result.returncode == 0, result.stderr[-3000:]

    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(exported), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"] == meta["network_data_format"]
    net.eval()
    x = torch.rand(2, meta["network_data_format"]["inputs"]["image"]["num_channels"], 45, 61)
    with torch.no_grad():
        eager, traced = net(x), scripted(x)
    assert traced.shape == x.shape
    assert (eager - x).abs().max() > 1e-2, "random weights should change the image"
    torch.testing.assert_close(traced, eager, atol=1e-4, rtol=0)
