"""multi_gpu_inference.json: the bundle's enhancement sharded over ``torchrun`` ranks, here 2 CPU processes (gloo).

A folder of small real images (PNG, JPEG, TIFF, NIfTI) and one corrupt file is enhanced by two
ranks and, for reference, by the single-process ``inference.json``; the outputs must be the same
files, bit for bit, each written once.
"""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from monai_dpe.engines.distributed import shard
from helpers import AFFINE, BUNDLE, TORCHRUN, bundle_command, file_hashes, run_in_own_group, smooth, tiny_weights

CONFIGS = BUNDLE / "configs"
TIMEOUT = 420


def write_folder(root: Path, corrupt: bool = True) -> set[str]:
    """Eight good images (2D and volumes) and optionally a corrupt PNG; returns the good relative paths."""
    rng = np.random.default_rng(1)
    (root / "2d").mkdir(parents=True)
    (root / "volumes").mkdir()
    grey = (smooth((36, 44), rng) * 255).astype(np.uint8)
    rgb = (np.stack([smooth((36, 44), rng) for _ in range(3)], -1) * 255).astype(np.uint8)
    Image.fromarray(grey).save(root / "2d" / "grey.png")
    Image.fromarray(rgb).save(root / "2d" / "rgb.png")
    Image.fromarray(np.concatenate([rgb, grey[..., None]], -1), "RGBA").save(root / "2d" / "rgba.png")
    Image.fromarray((smooth((36, 44), rng) * 40000 + 1000).astype(np.uint16)).save(root / "2d" / "grey16.png")
    Image.fromarray(rgb).save(root / "2d" / "rgb.jpg", quality=95)
    tifffile.imwrite(root / "2d" / "grey8.tif", grey)
    vol = smooth((20, 24, 4), rng)
    nib.save(nib.Nifti1Image((vol * 1500 - 1000).astype(np.int16), AFFINE), root / "volumes" / "ct_hu.nii.gz")
    nib.save(nib.Nifti1Image(vol.astype(np.float32) * 3.5, AFFINE), root / "volumes" / "mr_float.nii")
    if corrupt:
        (root / "2d" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200, np.uint8)))
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "corrupt.png"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(src: Path, out: Path, weights: Path, summary: Path) -> list[str]:
    """``bundle_command`` under torchrun with 2 processes and the multi-process config merged over inference.json."""
    cmd = bundle_command(src, out, weights, "--summary_path", str(summary))
    cmd[cmd.index("--config_file") + 1] = json.dumps([str(CONFIGS / "inference.json"),
                                                      str(CONFIGS / "multi_gpu_inference.json")])
    return [TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *cmd[1:]]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Two-rank and single-process runs over one folder: (good inputs, out, reference out, result, summary)."""
    tmp = tmp_path_factory.mktemp("sharded")
    src, out, ref = tmp / "in", tmp / "out", tmp / "ref"
    good = write_folder(src)
    weights = tiny_weights(tmp / "tiny.pt")
    result = run_in_own_group(torchrun_command(src, out, weights, tmp / "summary.json"), timeout=TIMEOUT)
    single = run_in_own_group(bundle_command(src, ref, weights), timeout=TIMEOUT)
    assert "corrupt.png" in single.stdout, single.stdout[-3000:]
    return good, out, ref, result, json.loads((tmp / "summary.json").read_text())


@pytest.mark.slow
def test_one_failure_fails_the_run_and_is_reported_once(sharded):
    _, _, _, result, summary = sharded
    assert result.returncode != 0, result.stdout[-3000:]
    assert [Path(f["input"]).name for f in summary["failures"]] == ["corrupt.png"]
    assert len(re.findall(r"ERROR - \S*corrupt\.png: ", result.stdout)) == 1, result.stdout[-3000:]


@pytest.mark.slow
def test_both_ranks_enhance_their_own_share(sharded):
    good, _, _, result, summary = sharded
    assert [r["rank"] for r in summary["ranks"]] == [0, 1]
    assert all(r["done"] > 0 for r in summary["ranks"]), summary["ranks"]
    assert sum(r["done"] + r["failed"] for r in summary["ranks"]) == len(good) + 1
    assert len(summary["outputs"]) == len(set(summary["outputs"])) == summary["done"] == len(good)
    assert "all ranks: enhanced 8 file(s), 0 skipped (done before), 1 failed" in result.stdout


@pytest.mark.slow
def test_every_good_input_has_one_output_identical_to_single_process(sharded):
    good, out, ref, _, _ = sharded
    written = file_hashes(out)
    assert set(written) == good, "one output per good input, nothing else (no temporary files)"
    assert written == file_hashes(ref), "two ranks must write the single-process outputs bit for bit"


@pytest.mark.slow
def test_clean_run_exits_zero_with_an_empty_shard(tmp_path):
    """One image for two ranks: rank 1 gets nothing, still joins the collectives, and the run succeeds."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray((smooth((36, 44), np.random.default_rng(2)) * 255).astype(np.uint8)).save(src / "only.png")
    cmd = torchrun_command(src, out, tiny_weights(tmp_path / "tiny.pt"), tmp_path / "summary.json")
    result = run_in_own_group(cmd, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ranks"] == [{"rank": 0, "done": 1, "skipped": 0, "failed": 0},
                                {"rank": 1, "done": 0, "skipped": 0, "failed": 0}]
    assert sorted(p.name for p in out.rglob("*")) == ["only.png"]


@pytest.mark.parametrize("n_items", [0, 1, 2, 5, 9])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shards_are_disjoint_and_cover_the_plan(n_items, world_size):
    """Without a process group, ``shard`` splits as every rank would: each item once, ranks past the items empty."""
    plan = [{"image": f"in/{i}.png", "relpath": f"{i}.png"} for i in range(n_items)]
    shards = [shard(plan, rank, world_size) for rank in range(world_size)]
    taken = [item["image"] for part in shards for item in part]
    assert sorted(taken) == sorted(item["image"] for item in plan) and len(set(taken)) == n_items
    assert [len(part) for part in shards] == [len(range(rank, n_items, world_size)) for rank in range(world_size)]
