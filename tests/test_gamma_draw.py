"""The radiology family's gamma draw: uniform as MONAI draws it, or uniform in log space (gamma and 1/gamma alike)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast

from monai_dpe.transforms import RandPerceptualDegradation


def _gammas(log_uniform: bool, n: int = 1500) -> np.ndarray:
    t = RandPerceptualDegradation(preset="radiology", gamma_log_uniform=log_uniform)
    t.set_random_state(0)
    drawn = []
    for _ in range(n):
        t(torch.rand(1, 8, 8))
        drawn.append(t.last_params["gamma"])
    return np.array(drawn)


@pytest.mark.parametrize(("log_uniform", "share_above_one"), [(False, 2 / 3), (True, 1 / 2)], ids=["monai", "log"])
def test_gamma_draw_within_range_and_balanced_in_log_space_when_asked(log_uniform, share_above_one):
    gammas = _gammas(log_uniform)
    assert gammas.min() >= 0.5 and gammas.max() <= 2.0
    assert (gammas > 1).mean() == pytest.approx(share_above_one, abs=0.04)
    if log_uniform:
        assert abs(np.log(gammas).mean()) < 0.03, "no bias towards darkening curves"


def test_the_log_draw_is_reproducible_and_applied():
    first, second = (RandPerceptualDegradation(preset="radiology", gamma_log_uniform=True, bias_coeff=0.0,
                                               radiology_noise_std=0.0) for _ in range(2))
    first.set_random_state(5)
    second.set_random_state(5)
    img = torch.rand(1, 16, 16)
    out = first(img)
    torch.testing.assert_close(out, second(img))
    expected = AdjustContrast(gamma=first.last_params["gamma"])(img).clamp(0, 1)  # MONAI's curve, with the drawn gamma
    torch.testing.assert_close(out, torch.as_tensor(expected), atol=1e-5, rtol=1e-5)
