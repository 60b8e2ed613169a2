"""Training under SIGKILL: ten kills at random moments, each resume continues, and the result equals an unkilled run.

Resumes restart at the last epoch boundary (``TrainingState``) and every epoch's randomness
comes from ``(seed, epoch)`` (``EpochSeeder``), so the interrupted run must end with the same
weights as the uninterrupted one. The state file must load after every kill.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from helpers import REPO, bundle_run, state_path
from bundle_copies import copy_configs

pytestmark = pytest.mark.slow

EPOCH_LENGTH, EPOCHS = 2, 30
RUN = ("--epoch_length", str(EPOCH_LENGTH), "--max_epochs", str(EPOCHS), "--state_interval", str(EPOCH_LENGTH),
       "--val_interval", "5",
       "--num_workers", "1", "--seed", "5")  # one data worker, recreated each epoch, as the shipped config


def saved_iteration(bundle) -> int:
    """Iteration of the saved state (0 if none); the file is replaced atomically, so it always loads."""
    path = state_path(bundle)
    return int(torch.load(path, weights_only=True)["trainer"]["iteration"]) if path.exists() else 0


def train(bundle, data, resume: bool) -> None:
    """Run the bundle's training to the end."""
    cmd = bundle_run(bundle, data, *RUN, "--resume", "true" if resume else "false")
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]


def train_and_kill(bundle, data, rng: np.random.Generator) -> int:
    """Start (or resume) training, wait until it saves new progress, then SIGKILL it at a random moment after."""
    before = saved_iteration(bundle)
    cmd = bundle_run(bundle, data, *RUN, "--resume", "true" if before else "false")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while saved_iteration(bundle) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 0.6)))  # mid-iteration, mid-validation or mid-save
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return saved_iteration(bundle)


def final_weights(bundle) -> dict[str, torch.Tensor]:
    state = torch.load(state_path(bundle), weights_only=True)
    assert state["trainer"]["iteration"] == EPOCH_LENGTH * EPOCHS
    return state["network"]


@pytest.mark.timeout(1800)
def test_ten_kills_then_resume_match_an_uninterrupted_run(tiny_data, tmp_path):  # noqa: F811
    reference_bundle = tmp_path / "reference"
    killed_bundle = tmp_path / "killed"
    for root in (reference_bundle, killed_bundle):
        copy_configs(root / "configs", REPO / "bundle" / "configs")
    train(reference_bundle, tiny_data, resume=False)
    reference = final_weights(reference_bundle)

    rng = np.random.default_rng(3)
    progress = [train_and_kill(killed_bundle, tiny_data, rng) for _ in range(10)]
    assert all(i % EPOCH_LENGTH == 0 for i in progress)  # every kill left a complete state at an epoch end
    assert progress == sorted(progress) and progress[-1] < EPOCH_LENGTH * EPOCHS
    train(killed_bundle, tiny_data, resume=True)
    for key, value in final_weights(killed_bundle).items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6, msg=key)
    leftovers = [p.name for p in (killed_bundle / "models").iterdir() if ".partial-" in p.name]
    assert not leftovers


def test_epoch_seeder_can_keep_cudnn_autotuning_on():
    """MONAI's set_determinism turns cuDNN autotuning off; the GPU overlay asks the seeder to turn it back on."""
    from ignite.engine import Engine

    from monai_dpe.engines import EpochSeeder

    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        for keep, expected in ((False, (False, True)), (True, (True, False))):
            engine = Engine(lambda e, b: None)
            EpochSeeder(seed=3, cudnn_benchmark=keep).attach(engine)
            engine.run([0], max_epochs=1)
            assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) == expected
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
