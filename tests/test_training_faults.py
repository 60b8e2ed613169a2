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

from test_training import REPO, bundle_run, state_path, tiny_data  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

RUN = ("--epoch_length", "3", "--max_epochs", "8", "--state_interval", "3", "--val_interval", "2",
       "--num_workers", "1", "--seed", "5")


def train(bundle, data, resume: bool, kill_after: float | None = None) -> int | None:
    """Run the bundle's training; with ``kill_after``, SIGKILL it (and its data workers) after that many seconds."""
    cmd = bundle_run(bundle, data, *RUN, "--resume", "true" if resume else "false")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if kill_after is None:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()[-3000:]
            return 0
        try:
            proc.wait(timeout=kill_after)
            return proc.returncode  # finished before the kill
        except subprocess.TimeoutExpired:
            return None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def final_weights(bundle) -> dict[str, torch.Tensor]:
    state = torch.load(state_path(bundle), weights_only=True)
    assert state["trainer"]["iteration"] == 24
    return state["network"]


def test_ten_kills_then_resume_match_an_uninterrupted_run(tiny_data, tmp_path):  # noqa: F811
    reference_bundle = tmp_path / "reference"
    killed_bundle = tmp_path / "killed"
    for root in (reference_bundle, killed_bundle):
        shutil.copytree(REPO / "bundle" / "configs", root / "configs")

    start = time.monotonic()
    train(reference_bundle, tiny_data, resume=False)
    duration = time.monotonic() - start
    reference = final_weights(reference_bundle)

    rng = np.random.default_rng(3)
    kills = 0
    for attempt in range(40):
        if kills == 10:
            break
        resume = state_path(killed_bundle).exists()
        outcome = train(killed_bundle, tiny_data, resume=resume, kill_after=float(rng.uniform(2.0, duration)))
        if outcome is None:
            kills += 1
        if state_path(killed_bundle).exists():  # after every kill the state file is complete and loadable
            saved = torch.load(state_path(killed_bundle), weights_only=True)
            assert saved["trainer"]["iteration"] % 3 == 0
    assert kills == 10
    train(killed_bundle, tiny_data, resume=True)
    for key, value in final_weights(killed_bundle).items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-6, msg=key)
    leftovers = [p.name for p in (killed_bundle / "models").iterdir() if ".partial-" in p.name]
    assert not leftovers
