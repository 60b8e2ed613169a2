"""multi_gpu_train.json: the bundle's training under torchrun + DistributedDataParallel, here 2 CPU processes (gloo)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from monai_dpe.networks import DPEDiscriminator
from helpers import REPO, TINY, TORCHRUN, run_in_own_group, shipped_network, write_tiny_data
from bundle_copies import copy_configs, written_models

ITERATIONS = 3
RANK_LOSS = re.compile(r"Iter: (\d+)/\d+ -- train_loss_rank(\d+): ([-+0-9.eE]+)")


@pytest.mark.slow
def test_torchrun_gloo_two_ranks_train_and_only_rank0_saves(tmp_path):
    data = write_tiny_data(tmp_path / "data")
    bundle = tmp_path / "bundle"
    copy_configs(bundle / "configs", REPO / "bundle" / "configs")
    configs = bundle / "configs"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "--config_file", json.dumps([str(configs / "train.json"), str(configs / "multi_gpu_train.json")]),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(bundle), "--dataset_dir", str(data), "--datalist", str(data / "datalist.json")]
    for key, value in {**TINY, "epoch_length": ITERATIONS}.items():
        cmd += [f"--{key}", json.dumps(value)]
    cmd += ["--backend", "gloo", "--rank_log_interval", "1"]
    result = run_in_own_group(cmd, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]

    losses: dict[int, dict[int, float]] = {0: {}, 1: {}}
    for iteration, rank, loss in RANK_LOSS.findall(result.stdout):
        losses[int(rank)][int(iteration)] = float(loss)
    for rank in (0, 1):
        assert sorted(losses[rank]) == list(range(1, ITERATIONS + 1)), f"rank {rank} did not train every iteration"
    assert losses[0] != losses[1], "each rank must train on its own share of the data"

    state = torch.load(bundle / "models" / "training_state.pt", weights_only=True)
    assert state["trainer"]["iteration"] == ITERATIONS
    # plain module state dicts: a multi-GPU state resumes on one device and vice versa
    shipped_network(channels=TINY["channels"]).load_state_dict(state["network"])
    DPEDiscriminator(channels=TINY["disc_channels"]).load_state_dict(state["disc_network"])
    shipped_network(channels=TINY["channels"]).load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    assert written_models(bundle) == ["model.pt", "training_state.pt"]

    writers = {p.name.split(".")[-2] for p in (bundle / "runs").iterdir() if p.name.startswith("events.out")}
    assert len(writers) == 1, f"TensorBoard logs from more than one process: {writers}"
    assert "val_psnr" in result.stdout, "rank 0 must log the validation metrics"


def test_leave_process_group_waits_for_every_rank_then_lets_gloo_finish(tmp_path, monkeypatch):
    """The training config's last step: no rank shuts Python down while Gloo still releases a collective."""
    import torch.distributed as dist

    import monai_dpe.engines.distributed as distributed

    calls = []
    for name in ("barrier", "destroy_process_group"):
        real = getattr(dist, name)
        monkeypatch.setattr(dist, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    monkeypatch.setattr(distributed.time, "sleep", lambda seconds: calls.append(("sleep", seconds)))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        distributed.leave_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert calls == ["barrier", "destroy_process_group", ("sleep", 0.5)], "Gloo's threads finish while Python runs"
    distributed.leave_process_group()  # without a process group there is nothing to leave
    assert len(calls) == 3
    config = json.loads((REPO / "bundle" / "configs" / "multi_gpu_train.json").read_text())
    assert config["finalize"] == ["$monai_dpe.engines.distributed.leave_process_group()"]
