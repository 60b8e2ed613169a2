"""The dictionary twins' bases: the dictionary owns prob (MONAI's convention), one draw serves every key,
and every random transform reports its draw in ``last_params``."""
from __future__ import annotations

import pytest
import torch
from monai.transforms import RandomizableTransform

import monai_dpe.transforms as T
from monai_dpe.transforms.wrappers import ArrayMapd, RandArrayMapd

TWINS = [
    pytest.param(lambda p: T.RandLowBrightnessd(["a", "b"], prob=p), id="brightness"),
    pytest.param(lambda p: T.RandLowContrastd(["a", "b"], prob=p), id="contrast"),
    pytest.param(lambda p: T.RandAcquisitionNoised(["a", "b"], prob=p, std=(0.01, 0.05)), id="noise"),
    pytest.param(lambda p: T.RandColourJitterd(["a", "b"], prob=p), id="colour"),
    pytest.param(lambda p: T.RandStainJitterd(["a", "b"], prob=p, modalities=None), id="stain"),
]


def _item() -> dict:
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    return {"a": img, "b": img.clone()}


@pytest.mark.parametrize("make", TWINS)
def test_one_draw_serves_every_key_and_is_reported(make):
    t = make(1.0)
    t.set_random_state(3)
    out = t(_item())
    torch.testing.assert_close(out["a"], out["b"])
    assert not torch.equal(torch.as_tensor(out["a"]), _item()["a"])
    assert t.last_params, "a random transform that applied reports its draw"


@pytest.mark.parametrize("make", TWINS)
def test_the_dictionary_owns_prob(make):
    t = make(0.0)
    item = _item()
    out = t(item)
    assert out["a"] is item["a"] and out["b"] is item["b"]
    assert t.last_params == {}
    assert t.transform.prob == 1.0


@pytest.mark.parametrize("make", TWINS)
def test_a_seed_reproduces_the_draw(make):
    first, second = make(1.0), make(1.0)
    first.set_random_state(11)
    second.set_random_state(11)
    torch.testing.assert_close(first(_item())["a"], second(_item())["a"])
    assert first.last_params == second.last_params


def test_a_wrapped_transform_must_leave_prob_to_the_wrapper():
    with pytest.raises(ValueError, match="prob"):
        RandArrayMapd("a", T.RandLowBrightness(prob=0.5))


def test_missing_keys_are_skipped_when_allowed():
    t = RandArrayMapd(["a", "c"], T.RandLowBrightness(prob=1.0, factor=0.5), allow_missing_keys=True)
    out = t({"a": torch.ones(1, 4, 4)})
    torch.testing.assert_close(out["a"], torch.full((1, 4, 4), 0.5))
    assert ArrayMapd(["a", "c"], T.GreyToRGB(), allow_missing_keys=True)({"a": torch.ones(1, 4, 4)})["a"].shape[0] == 3


# every random transform the package exports, built and run once on a small item
RANDOM = {
    "RandLowBrightness": lambda: T.RandLowBrightness(), "RandLowContrast": lambda: T.RandLowContrast(),
    "RandAcquisitionNoise": lambda: T.RandAcquisitionNoise(), "RandColourJitter": lambda: T.RandColourJitter(1.0),
    "RandStainJitter": lambda: T.RandStainJitter(1.0), "RandPerceptualDegradation": lambda: T.RandPerceptualDegradation(),
    "RandJPEG": lambda: T.RandJPEG(1.0),
    "RandLowBrightnessd": lambda: T.RandLowBrightnessd("a"), "RandLowContrastd": lambda: T.RandLowContrastd("a"),
    "RandAcquisitionNoised": lambda: T.RandAcquisitionNoised("a"), "RandColourJitterd": lambda: T.RandColourJitterd("a", prob=1.0),
    "RandStainJitterd": lambda: T.RandStainJitterd("a", prob=1.0, modalities=None),
    "RandPerceptualDegradationd": lambda: T.RandPerceptualDegradationd("a", target_keys=None),
    "RandJPEGd": lambda: T.RandJPEGd("a", prob=1.0), "RandSliced": lambda: T.RandSliced("a", min_size=4),
}


def test_the_table_covers_every_exported_random_transform():
    exported = {n for n in T.__all__ if isinstance(getattr(T, n), type) and issubclass(getattr(T, n), RandomizableTransform)}
    assert exported == set(RANDOM)


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_every_random_transform_reports_last_params(name):
    t = RANDOM[name]()
    t.set_random_state(0)
    volume = name == "RandSliced"
    img = torch.rand((3, 8, 8, 8) if volume else (3, 16, 16), generator=torch.Generator().manual_seed(1))
    t({"a": img, "bits": 8} if name.endswith("d") else img)
    assert isinstance(t.last_params, dict) and t.last_params, f"{name} reports no draw"


def test_last_params_describe_the_last_item_even_when_it_was_left_alone():
    t = T.RandStainJitterd("a", prob=1.0)  # histology only
    t.set_random_state(0)
    t({"a": _item()["a"], "modality": "histology"})
    assert t.last_params
    t({"a": _item()["a"], "modality": "ct"})
    assert t.last_params == {}, "not the previous item's draw"
    brightness = T.RandLowBrightnessd(["a"], prob=1.0, allow_missing_keys=True)
    brightness({"a": torch.ones(1, 4, 4)})
    brightness({"b": torch.ones(1, 4, 4)})
    assert brightness.last_params == {}
