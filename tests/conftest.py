"""Shared pytest setup: deterministic, small-footprint torch on shared CPU machines."""
from __future__ import annotations

import numpy as np
import pytest
import torch

# the test machines are shared: two intra-op threads are enough for the tiny tensors used here
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="session")
def _backend_timing_cache(tmp_path_factory):
    """The auto backend's timing cache (monai_dpe.networks.timing) lives in the test run, not the user's home."""
    import os

    os.environ["MONAI_DPE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same torch and numpy global random state."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """The shipped bundle's configs with a tiny network and its random-init weights in models/model.pt."""
    import json

    from bundle_copies import copy_configs
    from helpers import BUNDLE, TINY_CHANNELS, tiny_weights

    bundle = tmp_path_factory.mktemp("tiny") / "bundle"
    copy_configs(bundle / "configs", BUNDLE / "configs")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["channels"] = list(TINY_CHANNELS)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    tiny_weights(bundle / "models" / "model.pt")
    return bundle


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Two training and two validation images and their datalist (helpers.write_tiny_data)."""
    from helpers import write_tiny_data

    return write_tiny_data(tmp_path_factory.mktemp("data"))
