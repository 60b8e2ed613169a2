"""The level prior: its features, its JSON trees, its fit, and how the blend uses its line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monai_dpe.engines.level_prior_fit import (calibrate_level_prior, collect_rows, fit_level_prior, line_scores, main,
                                              score_table, set_prior_weight)
from monai_dpe.transforms import BlendInputFit, FEATURE_NAMES, LevelPrior, level_features, load_level_prior
from monai_dpe.transforms.level_prior import LEVEL_PRIOR_FORMAT

from helpers import BUNDLE


def _stump(feature: int, threshold: float, left: float, right: float, missing_left: bool = True) -> dict:
    return {"feature": [feature, 0, 0], "threshold": [threshold, 0.0, 0.0], "left": [1, 0, 0], "right": [2, 0, 0],
            "value": [0.0, left, right], "leaf": [False, True, True], "missing_left": [missing_left, False, False]}


def _spec(black: dict, white: dict) -> dict:
    return {"format": LEVEL_PRIOR_FORMAT, "features": list(FEATURE_NAMES), "models": {"black": black, "white": white}}


class _FixedPrior:
    """A prior whose line is fixed, and which counts how often it was asked."""

    def __init__(self, gain: float, offset: float) -> None:
        self.gain, self.offset, self.calls = gain, offset, 0

    def line(self, image, level):
        self.calls += 1
        return self.gain, self.offset


def test_features_read_level_quantiles_and_colour():
    rng = np.random.default_rng(0)
    grey = torch.as_tensor(rng.uniform(0, 1, (1, 64, 64)), dtype=torch.float32)
    x = level_features(grey, [1.0, 0.1, 0.4])
    assert x.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(x))
    named = dict(zip(FEATURE_NAMES, x))
    assert named["black"] == pytest.approx(0.1) and named["white"] == pytest.approx(0.4)
    assert named["span"] == pytest.approx(0.3) and named["colour"] == 0.0
    assert named["quantile_0.5"] == pytest.approx(0.5, abs=0.03)
    # grey replicated to three channels is grey; a blue cast is colour, and shows in the cast
    assert dict(zip(FEATURE_NAMES, level_features(grey.repeat(3, 1, 1), [1.0, 0.1, 0.4])))["colour"] == 0.0
    tinted = grey.repeat(3, 1, 1) * torch.tensor([0.8, 0.9, 1.0]).view(3, 1, 1)
    tinted_named = dict(zip(FEATURE_NAMES, level_features(tinted, [1.0, 0.1, 0.4])))
    assert tinted_named["colour"] == 1.0 and tinted_named["cast_blue"] > 0 > tinted_named["cast_red"]


def test_a_large_image_is_read_at_the_size_the_prior_was_fitted_at():
    from monai_dpe.transforms import LimitSize
    from monai_dpe.transforms.level_prior import WORKING_SIZE

    configured = [t for t in json.loads((BUNDLE / "configs" / "train.json").read_text())["validate"]["preprocessing"]
                  ["transforms"] if isinstance(t, dict) and t.get("_target_", "").endswith("LimitSized")]
    assert [t["max_size"] for t in configured] == [WORKING_SIZE]
    big = torch.rand(3, 2 * WORKING_SIZE, WORKING_SIZE)
    np.testing.assert_array_equal(level_features(big, [1.0, 0.1, 0.4]),
                                  level_features(LimitSize(WORKING_SIZE)(big), [1.0, 0.1, 0.4]))


def test_features_of_a_volume():
    volume = torch.rand(1, 32, 32, 12)
    assert np.all(np.isfinite(level_features(volume, torch.tensor([[1.0, 0.0, 0.5]]))))


def test_trees_walk_as_scikit_learn_does():
    # x <= threshold goes left, as scikit-learn's predictor; a missing value goes where the node says
    prior = LevelPrior(_spec({"baseline": 0.1, "trees": [_stump(1, 0.3, -0.05, 0.05)]},
                             {"baseline": 0.9, "trees": [_stump(1, 0.3, 0.0, 0.1, missing_left=False)]}))
    x = np.zeros(len(FEATURE_NAMES))
    x[1] = 0.3
    assert prior.predict(x) == pytest.approx((0.05, 0.9))
    x[1] = 0.31
    assert prior.predict(x) == pytest.approx((0.15, 1.0))
    x[1] = np.nan
    assert prior.predict(x) == pytest.approx((0.05, 1.0))
    gain, offset = prior.line(torch.rand(1, 16, 16), [1.0, 0.05, 0.2])  # white 0.2 <= 0.3: the left leaves
    assert (gain, offset) == pytest.approx((0.9 - 0.05, 0.05))


def test_fit_exports_trees_that_reproduce_scikit_learn(tmp_path):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(1)
    features = rng.uniform(0, 1, (600, len(FEATURE_NAMES)))
    targets = np.stack([0.3 * (features[:, 1] > 0.5), 0.6 + 0.3 * features[:, 4]], 1)
    features[::7, 2] = np.nan  # missing values take the side each node learnt (checked against scikit-learn)
    spec = fit_level_prior(features, targets, ["a"] * 300 + ["b"] * 300)  # raises where the trees differ
    path = tmp_path / "prior.json"
    path.write_text(json.dumps(spec))
    prior = load_level_prior(path)
    predicted = np.array([prior.predict(x) for x in features])
    assert np.abs(predicted - targets).mean() < 0.03  # it learnt the relation, not just the mean
    assert spec["training"]["rows"] == 600 and spec["training"]["sources"] == {"a": 300, "b": 300}


def test_load_refuses_what_is_not_a_prior(tmp_path):
    assert load_level_prior(None) is None
    with pytest.raises(ValueError, match="missing.json"):
        load_level_prior(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="bad.json.*format"):
        load_level_prior(bad)
    other = _spec({"baseline": 0.0, "trees": []}, {"baseline": 1.0, "trees": []})
    other["features"] = ["black", "white"]
    bad.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="other features"):
        load_level_prior(bad)


def test_blend_takes_a_display_images_level_from_the_prior():
    image = torch.rand(1, 32, 32)
    pred = 0.5 * image + 0.2  # the network's line: 0.5, 0.2
    prior = _FixedPrior(0.7, 0.1)
    blend = BlendInputFit(network_weight=0.0, level_prior=prior)
    out = blend(pred.clone(), image, torch.tensor([1.0, 0.05, 0.3]))
    torch.testing.assert_close(out, 0.7 * image + 0.1)
    assert prior.calls == 1


@pytest.mark.parametrize("prior_weight", [0.0, 0.25, 1.0])
def test_blend_weighs_the_priors_line_against_the_networks(prior_weight):
    image = torch.rand(1, 32, 32)
    pred = 0.5 * image + 0.2  # the network's line: 0.5, 0.2; the prior's: 0.7, 0.1
    blend = BlendInputFit(network_weight=0.0, level_prior=_FixedPrior(0.7, 0.1), level_prior_weight=prior_weight)
    out = blend(pred.clone(), image, torch.tensor([1.0, 0.05, 0.3]))
    gain, offset = 0.5 + prior_weight * (0.7 - 0.5), 0.2 + prior_weight * (0.1 - 0.2)
    torch.testing.assert_close(out, gain * image + offset)


@pytest.mark.parametrize("prior_weight", [-0.1, 1.5, float("nan")])
def test_blend_refuses_a_prior_weight_outside_the_unit_range(prior_weight):
    with pytest.raises(ValueError, match="level_prior_weight"):
        BlendInputFit(level_prior_weight=prior_weight)


@pytest.mark.parametrize("level", [None, [0.0, 0.0, 1.0], [1.0, 0.3, 0.9]], ids=["unknown", "quantitative", "bright"])
def test_blend_keeps_its_level_where_the_prior_does_not_apply(level):
    image = torch.rand(1, 32, 32)
    pred = 0.5 * image + 0.2
    prior = _FixedPrior(0.7, 0.1)
    with_prior = BlendInputFit(network_weight=0.0, level_range=(0.55, 0.56), level_prior=prior)
    without = BlendInputFit(network_weight=0.0, level_range=(0.55, 0.56))
    level = None if level is None else torch.tensor(level)
    torch.testing.assert_close(with_prior(pred.clone(), image, level), without(pred.clone(), image, level))
    assert prior.calls == 0


def test_the_bundles_blend_takes_the_priors_line_within_range():
    """The shipped settings (Wiener-filtered detail, range margin, own-level rule) with a prior: a smooth,
    noise-free dark image comes back as the prior's line; a line that would send its top past white is
    brought back so that nothing the input resolves is clipped."""
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 40), indexing="ij")
    image = (torch.sin(6 * rows) * torch.cos(5 * cols) + 1)[None] / 2  # the stretched input, in [0, 1]
    pred = 0.4 * image + 0.3
    settings = {"network_weight": None, "wiener_noise_scale": 0.2, "range_margin": 1.0, "level_range": (0.55, 0.56)}
    level = torch.tensor([1.0, 0.05, 0.3])
    out = BlendInputFit(level_prior=_FixedPrior(0.7, 0.1), **settings)(pred.clone(), image, level)
    torch.testing.assert_close(out, 0.7 * image + 0.1, atol=1e-3, rtol=0)  # the network's line is 0.3 away
    bright = BlendInputFit(level_prior=_FixedPrior(1.2, 0.1), **settings)(pred.clone(), image, level)
    # the prior's own line reaches 1.3; the nearest inside keeps the range less one noise (a smooth image: ~0) in [0, 1]
    assert 0.99 < float(bright.max()) < 1.01 and float(bright.min()) > -0.01


def test_blend_asks_the_prior_once_for_a_volume():
    volume = torch.rand(1, 16, 16, 5)
    prior = _FixedPrior(0.6, 0.2)
    out = BlendInputFit(network_weight=0.0, level_prior=prior)(volume.clone(), volume, torch.tensor([1.0, 0.0, 0.4]))
    torch.testing.assert_close(out, 0.6 * volume + 0.2)
    assert prior.calls == 1


def test_collect_rows_and_the_command(tiny_data, tmp_path):
    # the tiny corpus' training split holds one display image (cell.png); its clean draw's line is the
    # identity in absolute terms: the truth at stretched 0 and 1 is where the stretch put them
    features, targets, sources = collect_rows(str(BUNDLE), str(tiny_data), [("clean", 0), ("paper", 3)],
                                              datalist=str(tiny_data / "datalist.json"), progress=False)
    assert features.shape == (2, len(FEATURE_NAMES)) and sources == ["cell", "cell"]
    named = dict(zip(FEATURE_NAMES, features[0]))
    assert targets[0] == pytest.approx((named["black"], named["white"]), abs=1e-4)
    assert features[1, FEATURE_NAMES.index("white")] < named["white"]  # the paper draw darkened it
    pytest.importorskip("sklearn")
    output = tmp_path / "prior.json"
    args = ["--bundle_root", str(BUNDLE), "--dataset_dir", str(tiny_data), "--datalist", str(tiny_data / "datalist.json"),
            "--output", str(output), "--draws", "clean:0", "paper:3", "--no-progress"]
    assert main(args) == 0
    assert load_level_prior(output).info["rows"] == 2
    for draws in (["clean"], ["paper:0:1"], ["sunset:0"]):
        assert main(args[:-4] + ["--draws", *draws, "--no-progress"]) == 2
    nowhere = args[:args.index("--output") + 1] + [str(tmp_path / "missing" / "prior.json")] + args[args.index("--output") + 2:]
    assert main(nowhere) == 2  # refused before ten minutes of reading, not after
    assert not (tmp_path / "missing").exists() and not list(tmp_path.glob("*.partial"))


def test_line_scores_put_the_prior_between_the_stretch_and_the_best_line(tiny_data, capsys):
    # the tiny validation split's display image is an RGB photo (the MR volume keeps its units' level)
    shipped = BUNDLE / "models" / "level_prior.json"
    rows = line_scores(str(BUNDLE), str(tiny_data), {"shipped": load_level_prior(shipped)},
                       [("clean", 0), ("paper", 3)], datalist=str(tiny_data / "datalist.json"), progress=False)
    assert [row["preset"] for row in rows] == ["clean", "paper"]
    clean, paper = (row["scores"] for row in rows)
    assert clean["best line"][0] > 40.0  # a clean draw is its truth stretched: a line undoes it, up to rounding
    assert paper["stretch"][0] < paper["best line"][0] and paper["best line"][1] < paper["stretch"][1]
    assert all(np.isfinite(score[1]) for score in paper.values())  # DeltaE: the photo is colour
    assert list(paper) == ["stretch", "shipped", "source mean", "best line"]
    # one image of its source under each preset: its source's mean line is its own best line
    assert paper["source mean"] == pytest.approx(paper["best line"], abs=1e-3)
    table = score_table(rows)
    assert "| paper | all display images | 1 |" in table and "| stretch | shipped | source mean | best line |" in table
    args = ["--bundle_root", str(BUNDLE), "--dataset_dir", str(tiny_data),
            "--datalist", str(tiny_data / "datalist.json"), "--draws", "paper:3", "--no-progress", "--score", str(shipped)]
    assert main(args) == 0
    assert "| paper | all display images | 1 |" in capsys.readouterr().out
    assert main(args[:-1] + [str(tiny_data / "missing.json")]) == 1  # one line, before any reading
    assert main(args + ["--split", "nowhere"]) != 0


def test_the_source_mean_line_is_the_mean_true_line_of_the_sources_images(tiny_data, tmp_path):
    # two photos of one source, one a dim original: the source's mean line fits neither exactly
    from PIL import Image

    from monai_dpe.engines.level_prior_fit import _line_score, _validation_pipeline

    photo = np.asarray(Image.open(tiny_data / "astronaut.png"), dtype=np.float64)
    Image.fromarray(photo.astype(np.uint8)).save(tmp_path / "bright.png")
    Image.fromarray((photo * 0.6).round().astype(np.uint8)).save(tmp_path / "dim.png")
    items = [{"image": name, "modality": "histology", "source": "photos", "channels": 3, "spatial_dims": 2}
             for name in ("bright.png", "dim.png")]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [], "validation": items}))
    rows = line_scores(str(BUNDLE), str(tmp_path), {}, [("paper", 1)], datalist=str(datalist), progress=False)
    _, targets, _ = collect_rows(str(BUNDLE), str(tmp_path), [("paper", 1)], split="validation",
                                 datalist=str(datalist), progress=False)
    assert targets[1, 1] < targets[0, 1] - 0.2  # the dim original's truth is dim
    black, white = targets.mean(0)
    validation, preprocessing = _validation_pipeline(str(BUNDLE), str(tmp_path), str(datalist), "validation", "paper", 1)
    for row, item in zip(rows, validation):
        loaded = preprocessing(item)
        expected = _line_score(loaded["image"].as_subclass(torch.Tensor), torch.as_tensor(loaded["target"]),
                               float(white - black), float(black))
        assert row["scores"]["source mean"] == pytest.approx(expected, abs=1e-4)
        assert row["scores"]["source mean"][0] < row["scores"]["best line"][0] - 3.0


def test_calibration_removes_the_priors_mean_error_on_its_rows():
    spec = json.loads((BUNDLE / "models" / "level_prior.json").read_text())
    prior = LevelPrior(spec)
    rng = np.random.default_rng(0)
    rows = np.stack([level_features(torch.rand(3, 32, 32) * scale, [1.0, 0.0, scale]) for scale in (0.2, 0.5, 0.9)])
    predicted = np.array([prior.predict(row) for row in rows])
    truth = predicted + np.array([0.1, -0.2]) + rng.normal(0.0, 0.01, predicted.shape)
    calibrated = calibrate_level_prior(spec, rows, truth, {"images": 3})
    moved = np.array([LevelPrior(calibrated).predict(row) for row in rows]) - predicted
    assert moved == pytest.approx(np.tile((truth - predicted).mean(0), (3, 1)), abs=1e-12)  # one shift for all rows
    assert calibrated["training"]["calibrations"] == [{"rows": 3, "black_shift": pytest.approx(moved[0, 0]),
                                                       "white_shift": pytest.approx(moved[0, 1]), "images": 3}]
    assert len(spec["models"]["black"]["trees"]) + 1 == len(calibrated["models"]["black"]["trees"])  # spec untouched
    again = calibrate_level_prior(calibrated, rows, truth)
    assert again["training"]["calibrations"][-1]["white_shift"] == pytest.approx(0.0, abs=1e-12)
    assert len(again["training"]["calibrations"]) == 2


def test_set_prior_weight_replaces_the_one_definition_and_refuses_others():
    text = '{\n    "level_prior_weight": 0.5,\n    "blend": {"level_prior_weight": "@level_prior_weight"}\n}'
    assert set_prior_weight(text, 1.0) == text.replace("0.5", "1.0")
    with pytest.raises(ValueError, match="one numeric"):
        set_prior_weight('{"blend": {"level_prior_weight": "@level_prior_weight"}}', 1.0)
    with pytest.raises(ValueError, match="top-level"):
        set_prior_weight('{"blend": {"level_prior_weight": 0.5}}', 1.0)


def test_bundle_calibrate_fits_an_exported_bundles_prior_to_a_folder(tmp_path):
    from PIL import Image
    from skimage import data as skdata

    from monai_dpe.cli import main as cli

    bundle, images = tmp_path / "bundle", tmp_path / "clean"
    assert cli(["bundle", "export", str(bundle)]) == 0
    prior_file = bundle / "models" / "level_prior.json"
    shipped = prior_file.read_bytes()
    images.mkdir()
    photo = skdata.astronaut()
    for index, (row, column) in enumerate([(0, 0), (200, 100), (300, 300)]):
        Image.fromarray(photo[row:row + 160, column:column + 160]).save(images / f"crop{index}.png")
    checksums = sorted((p.name, p.read_bytes()) for p in images.iterdir())
    assert cli(["bundle", "calibrate", str(bundle), "--images", str(images), "--no-progress"]) == 0
    assert sorted((p.name, p.read_bytes()) for p in images.iterdir()) == checksums  # inputs never modified
    calibrated = load_level_prior(prior_file)
    (record,) = calibrated.info["calibrations"]
    assert record["images"] == 3 and record["rows"] == 15 and prior_file.read_bytes() != shipped
    assert not list(prior_file.parent.glob("*.partial"))
    for name in ("inference.json", "train.json"):  # a calibrated prior gives the whole level (RULE10)
        config = (bundle / "configs" / name).read_text()
        assert json.loads(config)["level_prior_weight"] == 1.0
        shipped_config = (BUNDLE / "configs" / name).read_text()
        assert config.replace('"level_prior_weight": 1.0', '"level_prior_weight": 0.5') == shipped_config
    (images / "crop2.png").unlink()
    written = prior_file.read_bytes()
    assert cli(["bundle", "calibrate", str(bundle), "--images", str(images), "--no-progress"]) == 2  # two images
    assert cli(["bundle", "calibrate", str(BUNDLE), "--images", str(images)]) == 2  # the shipped bundle
    assert cli(["bundle", "calibrate", str(bundle), "--images", str(tmp_path / "nowhere")]) == 2
    assert cli(["bundle", "calibrate", str(images), "--images", str(images)]) == 2  # not a bundle
    assert prior_file.read_bytes() == written


def test_bundle_calibrate_refuses_what_it_cannot_use_and_leaves_the_bundle_as_it_was(tmp_path, monkeypatch, capsys):
    import os
    import shutil

    from PIL import Image
    from skimage import data as skdata

    from helpers import failing_replace
    from monai_dpe import locations
    from monai_dpe.cli import main as cli

    bundle = tmp_path / "bundle"
    assert cli(["bundle", "export", str(bundle)]) == 0
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    photo = skdata.astronaut()

    def folder(name: str, *extra: tuple[str, np.ndarray | bytes]) -> str:
        images = tmp_path / name
        images.mkdir()
        for index, (row, column) in enumerate([(0, 0), (200, 100), (300, 300)]):
            Image.fromarray(photo[row:row + 96, column:column + 96]).save(images / f"crop{index}.png")
        for file, content in extra:
            (images / file).parent.mkdir(exist_ok=True)
            if isinstance(content, bytes):
                (images / file).write_bytes(content)
            else:
                Image.fromarray(content).save(images / file)
        return str(images)

    def refused(images: str, reason: str) -> None:
        capsys.readouterr()
        assert cli(["bundle", "calibrate", str(bundle), "--images", images, "--no-progress"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], lines
        assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before

    black = np.zeros((64, 64, 3), np.uint8)
    refused(folder("flat", ("black.png", black)), "black.png: no contrast to calibrate on")
    nested = folder("nested", ("a/crop.png", photo[:96, :96]), ("b/crop.png", black))
    refused(nested, "b/crop.png: no contrast")  # the same name in two folders: the flat one is named
    few = tmp_path / "few"  # one good image and a flat one: the flat one is named first, not the count
    few.mkdir()
    Image.fromarray(photo[:96, :96]).save(few / "good.png")
    Image.fromarray(black).save(few / "flat.png")
    refused(str(few), "flat.png: no contrast")
    truncated = (tmp_path / "cut.png")
    Image.fromarray(photo[:96, :96]).save(truncated)
    truncated = truncated.read_bytes()[:200]
    refused(folder("damaged", ("cut.png", truncated)), "cut.png")
    refused(folder("tiny", ("one.png", photo[:1, :1])), "one.png")
    (tmp_path / "empty").mkdir()
    refused(str(tmp_path / "empty"), "no images to calibrate on")
    # a copy counts once: three files, two images
    copies = folder("copies")
    os.remove(os.path.join(copies, "crop2.png"))
    shutil.copy(os.path.join(copies, "crop0.png"), os.path.join(copies, "again.png"))
    refused(copies, "2 display image(s)")
    # the prior and both weights are written together, or none of them
    with monkeypatch.context() as patch:
        failing_replace(patch, "train.json")
        refused(folder("good"), "the bundle is as it was")
    # a bundle whose models or configs folder is the shipped bundle's, through a link, is the shipped bundle
    shipped = tmp_path / "shipped"
    shutil.copytree(bundle, shipped)
    monkeypatch.setattr(locations, "shipped_bundle", lambda: shipped)
    shipped_files = {p: p.read_bytes() for p in shipped.rglob("*") if p.is_file()}
    for linked_part, copied_part in (("models", "configs"), ("configs", "models")):
        linked = tmp_path / f"linked_{linked_part}"
        shutil.copytree(bundle / copied_part, linked / copied_part)
        (linked / linked_part).symlink_to(shipped / linked_part, target_is_directory=True)
        capsys.readouterr()
        assert cli(["bundle", "calibrate", str(linked), "--images", str(tmp_path / "good"), "--no-progress"]) == 2
        assert "the shipped bundle is not calibrated in place" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in shipped.rglob("*") if p.is_file()} == shipped_files


def test_enhance_gives_a_dark_image_the_priors_level(tmp_path, tiny_bundle):
    """``monai-dpe enhance --network-share 0`` on a bundle whose prior has the whole level share: a smooth,
    noise-free dark grey image comes back as the prior's line applied to its stretch, whatever the (random,
    tiny) network's level. A bundle without its prior is refused before any output, unless asked to go
    without it (``--no-level-prior``, or ``--network-level``, the network's level alone)."""
    import shutil

    from PIL import Image

    from helpers import run_cli
    from monai_dpe.transforms.intensity_policy import robust_range

    rows, cols = np.mgrid[0:48, 0:40]
    dark = (20 + 50 * (np.sin(rows / 6.0) * np.cos(cols / 5.0) + 1) / 2).round().astype(np.uint8)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "models" / "level_prior.json").unlink()
    refused = run_cli("dark.png", "-o", "out", "--bundle", str(bundle), cwd=tmp_path)
    assert refused.returncode == 2 and "level_prior.json: no such file" in refused.stderr
    assert "--no-level-prior" in refused.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
    for flag in ("--no-level-prior", "--network-level"):
        without = run_cli("dark.png", "-o", f"out{flag}", "--bundle", str(bundle), "--no-progress", flag, cwd=tmp_path)
        assert without.returncode == 0, without.stderr[-3000:]
    spec = _spec({"baseline": 0.1, "trees": []}, {"baseline": 0.7, "trees": []})  # black 0.1, white 0.7
    (bundle / "models" / "level_prior.json").write_text(json.dumps(spec))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["level_prior_weight"] = 1.0
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    proc = run_cli("dark.png", "-o", "out", "--bundle", str(bundle), "--no-progress", "--network-share", "0",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    low, high = robust_range(dark.astype(np.float64), 0.5, 99.5)
    expected = np.clip(0.1 + 0.6 * (dark - low) / (high - low), 0, 1) * 255
    out = np.asarray(Image.open(tmp_path / "out" / "dark.png"), dtype=np.float64)
    assert np.abs(out - expected).max() <= 1.0


def test_the_shipped_configs_give_the_prior_half_the_level():
    """The validation split's choice (RULE8 in the changelog): the bundle's own prior, weight 0.5, in
    inference and in the trainer's validation alike."""
    from monai.bundle import ConfigParser

    for name in ("inference.json", "train.json"):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / name))
        parser["bundle_root"] = str(BUNDLE)
        blend = parser.get_parsed_content("blend")
        assert isinstance(blend.level_prior, LevelPrior) and blend.level_prior_weight == 0.5, name


def test_the_shipped_prior_loads_and_was_fitted_on_the_training_split():
    prior = load_level_prior(BUNDLE / "models" / "level_prior.json")  # refused if its features are not these
    assert prior.info["split"] == "training" and prior.info["rows"] > 1000
    gain, offset = prior.line(torch.rand(3, 64, 64), [1.0, 0.1, 0.3])
    assert np.isfinite(gain) and np.isfinite(offset) and gain > 0
