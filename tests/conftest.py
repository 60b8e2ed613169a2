"""Shared pytest setup: deterministic, small-footprint torch on shared CPU machines."""
from __future__ import annotations

import numpy as np
import pytest
import torch

# the test machines are shared: two intra-op threads are enough for the tiny tensors used here
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same torch and numpy global random state."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield
