"""Training runs of the bundle: determinism, resume, refusals, bad datalists, `monai-dpe train`, evaluate.json.

Every run uses a copy of ``bundle/configs`` in a temporary folder as ``bundle_root`` (the
shipped bundle's ``models/`` and ``runs/`` are never touched), tiny widths and 2-4 real images
from installed packages.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image
from scipy import optimize
from skimage import color, data as skdata, exposure, metrics

from monai_dpe.engines.baselines import clahe
from monai_dpe.networks import record_large_files, recorded_sha256, sha256_of
from bundle_copies import copy_configs, written_models
from helpers import (
    MONAI_DPE, PYTHON, REPO, TINY, TINY_CHANNELS, TRAIN_ITEMS, bundle_command, bundle_run, datalist_item as _item,
    reference_wiener, shipped_network, smooth, state_path, write_tiny_data,
)

@pytest.fixture
def bundle(tmp_path) -> Path:
    """A bundle folder in tmp_path holding a copy of the repository's configs (nothing else)."""
    root = tmp_path / "bundle"
    copy_configs(root / "configs", REPO / "bundle" / "configs")
    return root


def workflow(bundle: Path, data: Path, **overrides) -> ConfigWorkflow:
    """The bundle's train.json as an in-process, initialised ConfigWorkflow with tiny settings."""
    settings = {
        **TINY,
        "bundle_root": str(bundle),
        "dataset_dir": str(data),
        "datalist": str(data / "datalist.json"),
        # the config's own initialize also sets torch's thread count for the whole process
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        **overrides,
    }
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **settings,
    )
    wf.initialize()
    return wf


def chain(err: BaseException) -> list[BaseException]:
    out = []
    while err is not None:
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


# ---------------------------------------------------------------------------------------------- determinism


def first_losses(bundle: Path, data: Path, seed: int, n: int = 3) -> list[tuple[float, float]]:
    wf = workflow(bundle, data, seed=seed, epoch_length=n, val_interval=100, state_interval=100)
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: list[tuple[float, float]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: losses.append((float(e.state.output["loss"]), float(e.state.output["disc_loss"]))),
    )
    wf.run()
    return losses


def test_each_epoch_logs_its_mean_training_loss(bundle, tiny_data):
    """The text log (not only the progress bar and TensorBoard) shows how training goes."""
    import logging

    from monai.handlers import StatsHandler

    wf = workflow(bundle, tiny_data, max_epochs=2, epoch_length=3, val_interval=100, state_interval=100)
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    # MONAI's StatsHandler logs through its own stdout handler, which keeps the stream that was sys.stdout when
    # another test first made that logger: read its records instead of the captured output
    records: list[str] = []
    collector = logging.Handler()
    collector.emit = lambda record: records.append(record.getMessage())
    loggers = {h.logger for h in wf.parser.get_parsed_content("train#handlers")
               if isinstance(h, StatsHandler) and h.tag_name == "train_loss"}
    for logger in loggers:
        logger.addHandler(collector)
    try:
        wf.run()
    finally:
        for logger in loggers:
            logger.removeHandler(collector)
    text = "\n".join(records)
    logged = [float(line.split("train_loss: ")[1].split()[0]) for line in text.split("Epoch[")[1:] if "train_loss: " in line]
    assert logged == pytest.approx([np.mean(losses[:3]), np.mean(losses[3:])], abs=1e-4)
    assert trainer.state.metrics["train_loss"] == pytest.approx(np.mean(losses[3:]))


def test_same_seed_gives_same_first_losses(tiny_data, tmp_path):
    runs = []
    for i, seed in enumerate((0, 0, 1)):
        root = tmp_path / f"bundle{i}"
        copy_configs(root / "configs", REPO / "bundle" / "configs")
        runs.append(first_losses(root, tiny_data, seed))
    assert len(runs[0]) == 3
    assert runs[0] == runs[1], "the same seed must reproduce generator and discriminator losses exactly"
    assert runs[0] != runs[2], "another seed should draw other patches, degradations and weights"


# ------------------------------------------------------------------------------------- state file refusals


def test_fresh_run_refuses_existing_state(bundle, tiny_data):
    path = state_path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"an earlier run's state")
    wf = workflow(bundle, tiny_data)
    with pytest.raises(Exception) as err:
        wf.run()
    message = str(next(e for e in chain(err.value) if isinstance(e, FileExistsError)))
    assert str(path) in message and "\n" not in message and "resume" in message
    assert path.read_bytes() == b"an earlier run's state"
    assert not (bundle / "models" / "model.pt").exists()


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04 truncated zip"], ids=["empty", "text", "zip"])
def test_corrupt_state_on_resume_fails_with_one_line_and_is_kept(bundle, tiny_data, content):
    path = state_path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    wf = workflow(bundle, tiny_data, resume=True)
    with pytest.raises(RuntimeError) as err:
        wf.run()
    reason = next(e for e in chain(err.value) if str(e).startswith("cannot resume"))
    assert str(reason).startswith(f"cannot resume from {path}: ") and "\n" not in str(reason)
    assert path.read_bytes() == content, "a corrupt state must never be overwritten"


def test_resume_with_other_widths_names_the_mismatch_and_keeps_the_state(bundle, tiny_data):
    workflow(bundle, tiny_data, val_interval=100).run()
    path = state_path(bundle)
    before = path.read_bytes()
    wf = workflow(bundle, tiny_data, resume=True, channels=[8, 24], max_epochs=2, val_interval=100)
    with pytest.raises(RuntimeError) as err:
        wf.run()
    reason = str(next(e for e in chain(err.value) if str(e).startswith("cannot resume")))
    assert reason.startswith(f"cannot resume from {path}: its network does not fit this run (size mismatch for ")
    assert "\n" not in reason and "settings it was trained with" in reason
    assert path.read_bytes() == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, which even root cannot write")
def test_unwritable_checkpoint_folder_fails_at_start_naming_it(bundle, tiny_data):
    """Not at the first save, which on a CPU may come an hour in."""
    ckpt_dir = "/proc/self"  # exists, so every constructor accepts it; unwritable, also for root (CI runs as root)
    wf = workflow(bundle, tiny_data, ckpt_dir=ckpt_dir)
    trainer = wf.parser.get_parsed_content("train#trainer")
    iterations = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    with pytest.raises(Exception) as err:
        wf.run()
    reason = str(next(e for e in chain(err.value) if isinstance(e, PermissionError)))
    assert reason.startswith(f"{ckpt_dir}: cannot write checkpoints there (") and "\n" not in reason
    assert iterations == [], "refused before the first iteration"


def test_resume_flag_given_as_text_false_does_not_resume(bundle, tiny_data):
    """`--resume false` on the command line arrives as the string 'false' and must mean no."""
    wf = workflow(bundle, tiny_data, resume="false", skip_bad="false", val_interval=100)
    wf.run()
    assert torch.load(state_path(bundle), weights_only=True)["trainer"]["iteration"] == 2


# ------------------------------------------------------------------------------------------ bad datalist


def bad_entry(folder: Path, kind: str) -> str:
    """Make one unusable image in folder and return its datalist path."""
    if kind == "missing":
        return "no_such_image.nii.gz"
    if kind == "truncated":
        whole = (folder / "ct_small.nii.gz").read_bytes()
        (folder / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
        return "truncated.nii.gz"
    series = np.random.default_rng(0).random((16, 16, 4, 5)).astype(np.float32)  # x, y, z, time
    nib.save(nib.Nifti1Image(series, np.eye(4)), str(folder / "series4d.nii.gz"))
    return "series4d.nii.gz"


@pytest.fixture
def bad_data(tiny_data, tmp_path, request):
    """A copy of the tiny data whose training datalist has one bad entry (the kind is the test's parameter)."""
    folder = tmp_path / "bad_data"
    shutil.copytree(tiny_data, folder)
    name = bad_entry(folder, request.param)
    datalist = json.loads((folder / "datalist.json").read_text())
    datalist["training"].insert(1, {**datalist["training"][0], "image": name, "source": "bad"})
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return folder, name


@pytest.mark.parametrize("bad_data", ["missing", "truncated", "4d"], indirect=True)
def test_bad_datalist_entry_fails_before_training_with_one_line(bundle, bad_data):
    folder, name = bad_data
    wf = workflow(bundle, folder)
    with pytest.raises(Exception) as err:
        wf.run()
    reasons = [e for e in chain(err.value) if isinstance(e, ValueError) and "datalist entry" in str(e)]
    assert reasons, f"no datalist error in {chain(err.value)}"
    assert str(reasons[0]).startswith(f"datalist entry 1 ({folder / name}): ")
    assert "\n" not in str(reasons[0])
    assert not written_models(bundle) and not (bundle / "runs").exists(), "nothing may start before the check"


@pytest.mark.parametrize("bad_data", ["missing", "truncated", "4d"], indirect=True)
def test_skip_bad_drops_the_entry_with_a_warning(bundle, bad_data, caplog):
    folder, name = bad_data
    wf = workflow(bundle, folder, skip_bad=True)
    with caplog.at_level("WARNING", logger="monai_dpe.data.datalist"):
        items = wf.parser.get_parsed_content("train#datalist")
    assert [Path(i["image"]).name for i in items] == [n for n, _, _ in TRAIN_ITEMS]
    assert any(name in r.getMessage() and "datalist entry 1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("key", ["training", "validation"])
@pytest.mark.parametrize("how", ["empty", "all dropped by skip_bad"])
def test_a_split_left_empty_is_refused_before_training(bundle, tiny_data, tmp_path, key, how):
    """No training entries would fail deep in the sampler; no validation entries would never save model.pt."""
    folder = tmp_path / "data"
    shutil.copytree(tiny_data, folder)
    datalist = json.loads((folder / "datalist.json").read_text())
    datalist[key] = [] if how == "empty" else [{**datalist[key][0], "image": "no_such_image.nii.gz"}]
    (folder / "datalist.json").write_text(json.dumps(datalist))
    wf = workflow(bundle, folder, skip_bad=how != "empty")
    with pytest.raises(Exception) as err:
        wf.run()
    reasons = [str(e) for e in chain(err.value) if isinstance(e, ValueError) and "no usable" in str(e)]
    expected = f"{folder / 'datalist.json'}: no usable '{key}' entries"
    assert reasons and reasons[0] == expected + ("" if how == "empty" else " (1 dropped as unusable)")
    assert not written_models(bundle) and not (bundle / "runs").exists(), "nothing may start before the check"


def test_a_validation_image_too_small_for_ssim_is_refused_before_training(bundle, tiny_data, tmp_path):
    """SSIM's 11-pixel window cannot score an image 8 pixels tall: say so up front, not at the first validation."""
    folder = tmp_path / "data"
    shutil.copytree(tiny_data, folder)
    Image.fromarray((skdata.camera()[:8, :40]).astype(np.uint8)).save(folder / "strip.png")
    datalist = json.loads((folder / "datalist.json").read_text())
    datalist["validation"].append(_item("strip.png", "microscopy", 1))
    datalist["training"].append(_item("strip.png", "microscopy", 1))  # training pads it to a patch: fine there
    (folder / "datalist.json").write_text(json.dumps(datalist))
    wf = workflow(bundle, folder)
    assert len(wf.parser.get_parsed_content("train#datalist")) == len(TRAIN_ITEMS) + 1
    with pytest.raises(Exception) as err:
        wf.run()
    reasons = [str(e) for e in chain(err.value) if isinstance(e, ValueError) and "datalist entry" in str(e)]
    assert reasons == [f"datalist entry 2 ({folder / 'strip.png'}): in-plane shape 40x8 (MONAI's x, y) "
                       "is under this split's 11 pixels per side"]
    assert not written_models(bundle), "nothing may start before the check"


# ------------------------------------------------------------------------------------------------ resume


@pytest.mark.slow
def test_resume_after_kill_continues_from_saved_iteration_with_optimiser_state(bundle, tiny_data):
    path = state_path(bundle)
    proc = subprocess.Popen(bundle_run(bundle, tiny_data, "--max_epochs", "1000", "--val_interval", "1000"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.exists(), "the run saved no state"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    saved = torch.load(path, weights_only=True)
    start = saved["trainer"]["iteration"]
    assert 1 <= start < 2000

    total = 2 * (start // 2 + 2)
    wf = workflow(bundle, tiny_data, resume=True, max_epochs=total // 2, val_interval=1000, state_interval=1000)
    trainer = wf.parser.get_parsed_content("train#trainer")
    seen: dict = {"iterations": []}

    def at_start(engine):  # runs after TrainingState's loader, which was attached first
        seen["iteration"] = engine.state.iteration
        seen["optimizer"] = copy.deepcopy(wf.parser.get_parsed_content("optimizer").state_dict())
        seen["disc_optimizer"] = copy.deepcopy(wf.parser.get_parsed_content("disc_optimizer").state_dict())
        seen["disc"] = {k: v.clone() for k, v in wf.parser.get_parsed_content("disc_network").state_dict().items()}

    trainer.add_event_handler(Events.STARTED, at_start)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen["iterations"].append(e.state.iteration))
    wf.run()

    assert seen["iteration"] == start
    assert seen["iterations"] == list(range(start + 1, total + 1)), "must continue from the saved iteration, not 0"
    for name in ("optimizer", "disc_optimizer"):
        loaded, stored = seen[name]["state"], saved[name]["state"]
        assert loaded.keys() == stored.keys() and len(loaded) > 0
        for key in stored:
            assert int(loaded[key]["step"]) == int(stored[key]["step"]) == start
            torch.testing.assert_close(loaded[key]["exp_avg"], stored[key]["exp_avg"], rtol=0, atol=0)
    for key, value in saved["disc_network"].items():
        torch.testing.assert_close(seen["disc"][key], value, rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["trainer"]["iteration"] == total


# ----------------------------------------------------------------------------------------- monai-dpe train


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    tiny = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    return subprocess.run([MONAI_DPE, "train", *args, *tiny], capture_output=True, text=True, timeout=timeout)


def test_images_smaller_than_half_a_patch_become_full_training_patches(bundle, tiny_data, tmp_path):
    """Reflection refuses a pad wider than the image; a 30x36 thumbnail must still give 128x128 patches."""
    Image.fromarray(np.asarray(Image.open(tiny_data / "cell.png"))[:30, :36]).save(tmp_path / "thumb.png")
    preprocessing = workflow(bundle, tiny_data, patch_size=[128, 128]).parser.get_parsed_content("train#preprocessing")
    patches = preprocessing({**_item("thumb.png", "microscopy", 1), "image": str(tmp_path / "thumb.png")})
    assert len(patches) == TINY["patches_per_image"]
    assert all(p["image"].shape == p["target"].shape == (3, 128, 128) for p in patches)


@pytest.mark.slow
def test_cli_trains_on_a_folder(bundle, tiny_data, tmp_path):
    folder = tmp_path / "my_images"
    folder.mkdir()
    for name in ("ct_small.nii.gz", "cell.png", "mr_small.nii.gz", "astronaut.png"):
        shutil.copy(tiny_data / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    result = cli("--bundle", str(bundle), "--folder", str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    datalist = json.loads((bundle / "runs" / "folder_datalist.json").read_text())
    names = sorted(i["image"] for i in datalist["training"] + datalist["validation"])
    assert names == ["astronaut.png", "cell.png", "ct_small.nii.gz", "mr_small.nii.gz"]
    assert len(datalist["validation"]) == 1
    assert torch.load(state_path(bundle), weights_only=True)["trainer"]["iteration"] == 2
    shipped_network(channels=TINY["channels"]).load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))


@pytest.mark.slow
@pytest.mark.parametrize("bad_data", ["truncated"], indirect=True)
def test_cli_bad_entry_one_line_then_skip_bad_trains(bundle, bad_data):
    folder, name = bad_data
    refused = cli("--bundle", str(bundle), "--dataset-dir", str(folder), "--datalist", str(folder / "datalist.json"))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(
        f"monai-dpe train: error: datalist entry 1 ({folder / name}): unreadable by LoadImage")
    assert not written_models(bundle)

    skipped = cli("--bundle", str(bundle), "--dataset-dir", str(folder), "--datalist", str(folder / "datalist.json"),
                  "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert f"dropping datalist entry 1 ({folder / name})" in skipped.stdout + skipped.stderr
    assert torch.load(state_path(bundle), weights_only=True)["trainer"]["iteration"] == 2


@pytest.mark.slow
def test_cli_corrupt_state_on_resume_one_line_and_kept(bundle, tiny_data):
    path = state_path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x80\x02garbage")
    result = cli("--bundle", str(bundle), "--dataset-dir", str(tiny_data), "--datalist",
                 str(tiny_data / "datalist.json"), "--resume")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"monai-dpe train: error: cannot resume from {path}: ")
    assert path.read_bytes() == b"\x80\x02garbage"


# ------------------------------------------------------------------------------------------- evaluate.json


def _haar_noise(picture: np.ndarray) -> float:
    """Donoho's noise estimate by PyWavelets' Haar transform, over the 2x2 blocks that are not constant."""
    pywt = pytest.importorskip("pywt")
    _, (horizontal, vertical, diagonal) = pywt.dwt2(picture[: picture.shape[0] // 2 * 2, : picture.shape[1] // 2 * 2], "haar")
    varying = (horizontal != 0) | (vertical != 0) | (diagonal != 0)
    return float(np.median(np.abs(diagonal[varying])) / 0.6745) if varying.any() else 0.0


def _line_in_range(image: np.ndarray, gain: float, constant: float, margin: float) -> tuple[float, float]:
    """The least-squares nearest line keeping ``[min + margin, max - margin]`` of ``image`` in [0, 1], found by
    scipy as a bounded problem in the line's values at the two ends, over every pixel."""
    low, high = image.min() + margin, image.max() - margin
    x = image.ravel()
    assert high > low, "a range narrowed to nothing: not a case this reference covers"
    ends = np.stack([(high - x) / (high - low), (x - low) / (high - low)], 1)
    at_low, at_high = optimize.lsq_linear(ends, gain * x + constant, bounds=(0, 1), tol=1e-12).x
    new_gain = (at_high - at_low) / (high - low)
    return new_gain, at_low - new_gain * low


@pytest.mark.slow
def test_evaluate_json_scores_checkpoint_against_independent_reference(bundle, tiny_data, tmp_path):
    torch.manual_seed(3)
    net = shipped_network(channels=TINY["channels"])  # the bundle's network_def
    weights = tmp_path / "weights.pt"
    torch.save(net.state_dict(), weights)
    out_dir = tmp_path / "eval"
    configs = bundle / "configs"
    config_files = [str(configs / "train.json"), str(configs / "evaluate.json")]
    cmd = [PYTHON, "-m", "monai.bundle", "run", "--config_file", json.dumps(config_files),
           "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf"),
           "--bundle_root", str(bundle), "--dataset_dir", str(tiny_data), "--datalist", str(tiny_data / "datalist.json"),
           "--channels", "[8,16]", "--weights_path", str(weights), "--output_dir", str(out_dir),
           "--baselines", "['stretch','histogram_equalisation','clahe']", "--progress", "False",
           "--validate#split", "validation", "--level_prior_path", "$None"]  # the prior: test_level_prior.py
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out_dir / "metrics.json").read_text())
    pairs = sorted((r["source"], r["preset"]) for r in report["images"])
    assert pairs == sorted((s, p) for s in ("mr_small", "astronaut") for p in ("paper", "radiology", "clean"))
    assert report["weights"] == str(weights)
    assert not written_models(bundle), "evaluation must not train or save"

    # the same items, rebuilt in-process, scored with scikit-image
    parser = ConfigParser()
    parser.read_config(config_files)
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tiny_data), "channels": [8, 16],
                   "datalist": str(tiny_data / "datalist.json"), "weights_path": str(weights),
                   "validate#split": "validation", "level_prior_path": None})
    dataset = parser.get_parsed_content("validate#dataset")
    net.eval()
    share, noise_scale = parser["network_share"], parser["wiener_noise_scale"]  # the output users get: a blend
    level_range = parser["own_level_range"]
    by_key = {(r["source"], r["preset"]): r for r in report["images"]}
    for item in dataset:
        record = by_key[(item["source"], item["preset"])]
        with torch.no_grad():  # as inference's ChannelAdapter: input clamped into [0, 1], grey through all three channels
            level = {"level": item["level"][None]} if "level" in item else {}  # a level-aware network's input
            image = item["image"]
            inside = image.clamp(0, 1)
            raw = net(inside.expand(3, -1, -1)[None], **level)[0].mean(0, keepdim=True) if image.shape[0] == 1 else \
                net(inside[None], **level)[0]
            raw = (raw + image - inside).numpy().astype(np.float64)  # what lay outside [0, 1] is given back
        network_input = item["image"].numpy().astype(np.float64)
        slope, offset = np.polyfit(network_input.ravel(), raw.ravel(), 1)
        fitted = slope * network_input + offset
        filtered = network_input
        if share is None:  # the input Wiener-filtered, the network's output mapped onto its units as the pilot
            filtered = reference_wiener(network_input, (raw - offset) / slope,
                                        noise_scale * _haar_noise(network_input.mean(0)))
        display, low, high = (float(v) for v in item["level"]) if "level" in item else (0.0, 0.0, 1.0)
        # a well-exposed display image keeps its own level, a quantitative one its units' (the line (0, 1))
        own = np.clip((high - level_range[0]) / (level_range[1] - level_range[0]), 0, 1) if display else 1.0
        detail = 0.0 if share is None else share * (raw - fitted)
        colour = bool(np.ptp(network_input, axis=0).any())  # channels that differ somewhere: not grey replicated
        stretch_share = parser["colour_stretch_share"] if colour and own < 1 else 0.0  # a colour input's level
        line_slope, line_offset = (1 - stretch_share) * slope + stretch_share, (1 - stretch_share) * offset
        # the fit's line (a colour input's moved toward its stretch), or a well-exposed display image's own,
        # applied to the (filtered) input
        gain = (1 - own) * line_slope + own * (high - low)
        constant = (1 - own) * line_offset + own * low
        if share is None and parser["range_margin"] is not None and display:  # the range kept in [0, 1]
            gain, constant = _line_in_range(filtered, gain, constant,
                                            parser["range_margin"] * _haar_noise(network_input.mean(0)))
        pred = detail + gain * filtered + constant
        pred = torch.as_tensor(np.clip(pred, 0, 1)).expand(3, -1, -1)  # scored as RGB (grey replicated)
        target = item["target"].expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float64)
        pred_np = pred.permute(1, 2, 0).numpy().astype(np.float64)
        assert record["psnr"] == pytest.approx(metrics.peak_signal_noise_ratio(target, pred_np, data_range=1.0), abs=1e-3)
        reference_de = color.deltaE_ciede2000(color.rgb2lab(target), color.rgb2lab(pred_np)).mean()
        assert record["delta_e"] == pytest.approx(reference_de, abs=1e-2)
        assert record["rgb"] == (item["source"] == "astronaut")
        fit = np.linalg.lstsq(np.stack([pred_np.ravel(), np.ones(pred_np.size)], 1), target.ravel(), rcond=None)[0]
        assert record["structure_psnr"] == pytest.approx(
            metrics.peak_signal_noise_ratio(target, fit[0] * pred_np + fit[1], data_range=1.0), abs=1e-3)
        assert item["degradation"]["family"] == record["degradation"]["family"] == item["preset"]
        if item["preset"] == "clean":
            assert "baselines" not in record
            continue
        untouched = item["degraded"].expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float64)
        if item["bits"] == 8:  # an 8-bit source's degraded image holds an 8-bit file's levels
            assert np.allclose(untouched * 255, np.round(untouched * 255), atol=1e-4)
        assert record["baselines"]["input"]["psnr"] == pytest.approx(
            metrics.peak_signal_noise_ratio(target, untouched, data_range=1.0), abs=1e-3)
        degraded = item["image"].clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float64)
        expected = clahe(degraded, record["rgb"])
        assert record["baselines"]["clahe"]["psnr"] == pytest.approx(
            metrics.peak_signal_noise_ratio(target, np.clip(expected, 0, 1), data_range=1.0), abs=1e-3)
        grey = exposure.equalize_hist(degraded[..., 0])
        if not record["rgb"]:
            assert record["baselines"]["histogram_equalisation"]["psnr"] == pytest.approx(
                metrics.peak_signal_noise_ratio(target[..., 0], grey, data_range=1.0), abs=1e-3)
    paper = [r["psnr"] for r in report["images"] if r["preset"] == "paper"]
    assert report["per_preset"]["paper"]["model"]["psnr"] == pytest.approx(np.mean(paper))


def test_resume_keeps_the_best_checkpoint_record(bundle, tiny_data):
    """After a resume the saver still knows the best score, so a worse model cannot replace models/model.pt."""
    wf = workflow(bundle, tiny_data, max_epochs=2, val_interval=1, state_interval=TINY["epoch_length"])
    wf.run()
    saved = torch.load(state_path(bundle), weights_only=True)["best_checkpoint"]["_saved"]
    assert len(saved) == 1 and saved[0][0] > 0  # (best validation PSNR, name) of the model saved as model.pt

    wf = workflow(bundle, tiny_data, resume=True, max_epochs=3, val_interval=1000, state_interval=1000)
    saver = wf.parser.get_parsed_content("validate#checkpoint_saver")
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    restored = {}
    trainer.add_event_handler(Events.STARTED, lambda e: restored.update(saver._key_metric_checkpoint.state_dict()))
    trainer.add_event_handler(Events.STARTED, lambda e: restored.update(
        best=evaluator.state.best_metric, epoch=evaluator.state.best_metric_epoch))
    wf.run()
    assert [tuple(x) for x in restored["_saved"]] == [tuple(x) for x in saved]
    # the evaluator's logged "best value" continues from the same record, not from a fresh -1
    assert restored["best"] == pytest.approx(saved[0][0]) and 1 <= restored["epoch"] <= 2


def test_weights_trained_into_the_bundle_serve_and_retire_the_old_exports(bundle, tiny_data):
    """`make train` then `make demo`: the new models/model.pt loads through inference.json's digest check."""
    models = bundle / "models"
    models.mkdir(exist_ok=True)
    old = shipped_network(channels=TINY["channels"])
    torch.save(old.state_dict(), models / "model.pt")
    torch.jit.script(old.eval()).save(str(models / "model.ts"))
    (models / "model.onnx").write_bytes(b"an export of the old weights")
    record_large_files(bundle, ["models/model.pt", "models/model.ts", "models/model.onnx"])
    old_digest = recorded_sha256(bundle, models / "model.pt")

    workflow(bundle, tiny_data).run()
    assert sha256_of(models / "model.pt") != old_digest, "training saved its best model into the bundle"
    assert recorded_sha256(bundle, models / "model.pt") == sha256_of(models / "model.pt")
    assert [e["path"] for e in json.loads((bundle / "large_files.json").read_text())["large_files"]] == ["models/model.pt"]

    def network(backend: str):
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.update({"bundle_root": str(bundle), "channels": TINY["channels"], "backend": backend, "device": "cpu"})
        return parser.get_parsed_content("network")

    trained = torch.load(models / "model.pt", weights_only=True)
    served = network("auto")
    assert all(torch.equal(served.state_dict()[k].cpu(), v.cpu()) for k, v in trained.items())
    with pytest.raises(Exception) as refused:
        network("torchscript")
    assert any("model.ts was not made from these weights" in str(e) for e in chain(refused.value))


def test_basicunet_baseline_trains_through_the_same_config(bundle, tiny_data):
    """The MONAI BasicUNet baseline (similar parameter count) is the same recipe with network_def swapped."""
    configs = bundle / "configs"
    settings = {**TINY, "bundle_root": str(bundle), "dataset_dir": str(tiny_data),
                "datalist": str(tiny_data / "datalist.json"), "initialize": ["$monai.utils.set_determinism(seed=@seed)"]}
    wf = ConfigWorkflow(config_file=[str(configs / "train.json"), str(configs / "basicunet_baseline.json")],
                        meta_file=str(configs / "metadata.json"), logging_file=False, workflow_type="train", **settings)
    wf.initialize()
    wf.run()
    from monai.networks.nets import BasicUNet

    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, BasicUNet)
    assert 1.0e6 < sum(p.numel() for p in net.parameters()) < 1.25e6  # DPE's shipped width: 1,123,243
    saved = torch.load(bundle / "baselines" / "basicunet" / "training_state.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == TINY["epoch_length"]


def test_paper_width_overlay_builds_the_paper_networks_and_stops_on_its_time_limit(bundle, tiny_data):
    """train_paper_width.json: the paper's generator and discriminator widths, bf16, and a wall-clock cap."""
    configs = bundle / "configs"
    settings = {**TINY, "bundle_root": str(bundle), "dataset_dir": str(tiny_data),
                "datalist": str(tiny_data / "datalist.json"), "initialize": ["$monai.utils.set_determinism(seed=@seed)"]}
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "train_paper_width.json")])
    parser.update({k: v for k, v in settings.items() if k not in ("channels", "disc_channels")})
    assert sum(p.numel() for p in parser.get_parsed_content("network_def").parameters()) == 4_486_987
    from monai_dpe.networks import DPEDiscriminator

    paper_disc = DPEDiscriminator(spatial_dims=2, in_channels=3)  # its defaults are the paper's widths
    disc = parser.get_parsed_content("disc_network_def")
    assert [p.shape for p in disc.parameters()] == [p.shape for p in paper_disc.parameters()]
    assert parser["autocast_dtype"] == "bfloat16" and parser["time_limit"] is None

    # with a time limit set, the trainer carries ignite's TimeLimit and stops before max_epochs
    wf = ConfigWorkflow(config_file=[str(configs / "train.json"), str(configs / "train_paper_width.json")],
                        meta_file=str(configs / "metadata.json"), logging_file=False, workflow_type="train",
                        **{**settings, "time_limit": 1, "max_epochs": 1000, "autocast_dtype": None,
                           "num_workers": 0, "images_per_batch": 1, "patches_per_image": 1, "val_interval": 1000})
    wf.initialize()
    started = time.monotonic()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch < 1000, "the time limit must end the run long before max_epochs"
    assert time.monotonic() - started < 120
    assert state_path(bundle).exists(), "the resumable state is written when the time limit stops the run"


def test_stain_prob_restains_histology_training_images_only(tmp_path):
    """`stain_prob` reaches the training pipeline through the datalist: with the same seeds, stain_prob 1
    changes the clean target of the histology item (stored in a ``histology/`` folder, which MONAI's
    datalist loader once joined onto the modality) and leaves the CT item's draws exactly as stain_prob 0."""
    tiny, data = write_tiny_data(tmp_path / "tiny"), tmp_path / "corpus"
    for modality, name in (("histology", "astronaut.png"), ("ct", "ct_small.nii.gz")):
        (data / modality).mkdir(parents=True)
        shutil.copy(tiny / name, data / modality / name)
    entries = [_item("histology/astronaut.png", "histology", 3), _item("ct/ct_small.nii.gz", "ct", 1)]
    (data / "datalist.json").write_text(json.dumps({"training": entries, "validation": entries}))
    targets = {}
    for stain_prob in (0.0, 1.0):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
        parser.update({**TINY, "stain_prob": stain_prob, "colour_prob": 0.0, "clean_prob": 1.0,
                       "dataset_dir": str(data), "datalist": str(data / "datalist.json")})
        items = parser.get_parsed_content("train#datalist")
        assert [i["modality"] for i in items] == ["histology", "ct"]
        pipeline = parser.get_parsed_content("train#preprocessing")
        for item in items:
            pipeline.set_random_state(seed=3)
            targets[item["modality"], stain_prob] = torch.stack([p["target"] for p in pipeline(dict(item))])
    assert not torch.allclose(targets["histology", 0.0], targets["histology", 1.0], atol=1e-3)
    torch.testing.assert_close(targets["ct", 0.0], targets["ct", 1.0], atol=0, rtol=0)


def test_ema_momentum_validates_and_saves_the_averaged_generator_and_resumes_it(bundle, tiny_data):
    """With ``ema_momentum`` the evaluator scores, and model.pt holds, ignite's exponential moving average."""
    wf = workflow(bundle, tiny_data, ema_momentum=0.5, val_interval=1, state_interval=TINY["epoch_length"])
    wf.run()
    network, ema = wf.parser.get_parsed_content("network"), wf.parser.get_parsed_content("ema")
    assert wf.parser.get_parsed_content("validate#evaluator").network is ema.ema_model
    saved = torch.load(bundle / "models" / "model.pt", weights_only=True)
    averaged = ema.ema_model.state_dict()
    assert all(torch.equal(saved[k], averaged[k].cpu()) for k in saved)
    assert any(not torch.equal(saved[k], v.detach().cpu()) for k, v in network.state_dict().items())
    state = torch.load(state_path(bundle), weights_only=True)
    assert all(torch.equal(state["ema_network"][k], averaged[k].cpu()) for k in averaged)

    wf = workflow(bundle, tiny_data, ema_momentum=0.5, resume=True, max_epochs=2, val_interval=1000)
    resumed = wf.parser.get_parsed_content("ema")
    trainer = wf.parser.get_parsed_content("train#trainer")
    restored = {}
    trainer.add_event_handler(Events.STARTED, lambda e: restored.update(
        {k: v.clone() for k, v in resumed.ema_model.state_dict().items()}))
    wf.run()
    assert all(torch.equal(restored[k].cpu(), averaged[k].cpu()) for k in averaged)


def test_lr_decay_is_saved_with_the_state_and_a_resumed_run_ends_it(bundle, tiny_data):
    """``lr_decay_iterations`` takes both rates down the cosine; the resumed run continues the decay."""
    settings = {"lr_decay_iterations": 2 * TINY["epoch_length"], "lr_final_factor": 0.1, "val_interval": 1000}
    wf = workflow(bundle, tiny_data, **settings)
    wf.run()
    state = torch.load(state_path(bundle), weights_only=False)
    assert state["optimizer_schedule"]["last_epoch"] == TINY["epoch_length"]
    halfway = wf.parser["learning_rate"] * 0.55
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(halfway)
    assert state["disc_optimizer"]["param_groups"][0]["lr"] == pytest.approx(halfway)

    wf = workflow(bundle, tiny_data, resume=True, max_epochs=2, **settings)
    wf.run()
    final = wf.parser["learning_rate"] * 0.1
    for name in ("optimizer", "disc_optimizer"):
        assert wf.parser.get_parsed_content(name).param_groups[0]["lr"] == pytest.approx(final)


def test_resume_learning_rate_becomes_the_base_of_a_saved_decay(bundle, tiny_data):
    """The schedule sets the rate every step, so a new rate given on resume must rescale the decay, not vanish."""
    settings = {"lr_decay_iterations": 2 * TINY["epoch_length"], "lr_final_factor": 0.1, "val_interval": 1000}
    workflow(bundle, tiny_data, **settings).run()
    wf = workflow(bundle, tiny_data, resume=True, max_epochs=2, resume_learning_rate=1e-5, **settings)
    wf.run()
    assert wf.parser.get_parsed_content("optimizer").param_groups[0]["lr"] == pytest.approx(1e-6)


def test_lr_decay_restart_starts_the_decay_again_at_the_resume(bundle, tiny_data):
    """A warm restart: the saved state's step count is not loaded, so the resumed epoch runs the decay's first
    half; the same command resumed again (after an interruption) goes on to the decay's end."""
    settings = {"lr_decay_iterations": 2 * TINY["epoch_length"], "lr_final_factor": 0.1, "val_interval": 1000}
    workflow(bundle, tiny_data, **settings).run()
    for epochs, factor in ((2, 0.55), (3, 0.1)):
        wf = workflow(bundle, tiny_data, resume=True, max_epochs=epochs, lr_decay_restart="true", **settings)
        wf.run()
        for name in ("optimizer", "disc_optimizer"):
            lr = wf.parser.get_parsed_content(name).param_groups[0]["lr"]
            assert lr == pytest.approx(wf.parser["learning_rate"] * factor)


def test_without_ema_momentum_the_trained_generator_is_validated():
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
    assert parser["ema_momentum"] is None and parser.get_parsed_content("train#ema_handlers") == []
    assert parser.get_parsed_content("validated_network") is parser.get_parsed_content("network")


def test_evaluation_unit_ranges_a_quantitative_slice_after_resizing_it(bundle, tmp_path):
    """A big CT slice is shrunk for evaluation; its target's range is taken from what is scored, so a clean
    slice's network input (stretched by its own range) is the target itself, as inference returns it."""
    rng = np.random.default_rng(4)
    slice_ = np.full((520, 470), -1000.0)
    slice_[60:460, 50:420] = smooth((400, 370), rng) * 1400 - 300
    nib.save(nib.Nifti1Image(slice_.round().astype(np.int16), np.eye(4)), str(tmp_path / "ct.nii.gz"))
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tmp_path)})
    item = parser.get_parsed_content("validate#preprocessing")(
        {"image": str(tmp_path / "ct.nii.gz"), "image_id": "ct", "source": "ct", "modality": "ct", "channels": 1,
         "preset": "clean"})
    assert max(item["target"].shape[1:]) == 384
    error = (item["image"][0].clamp(0, 1) - item["target"][0]).square().mean()
    assert float(10 * torch.log10(1 / error)) > 80  # 16-bit rounding only


@pytest.mark.parametrize("preset", ["clean", "paper"])
def test_evaluation_scores_an_8_bit_volume_in_the_frame_its_output_is_written_in(bundle, tmp_path, preset):
    """An 8-bit NIfTI volume is quantitative: inference writes its output back in its own units, so the
    evaluation's target is the volume in its own robust range (the frame the network's input is stretched to),
    not its level out of 255; a network that leaves a clean volume as it is then scores it so."""
    volume = np.zeros((40, 36, 9), dtype=np.uint8)
    volume[6:34, 5:31] = np.linspace(20, 180, 28 * 26 * 9).reshape(28, 26, 9).round().astype(np.uint8)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "head.nii.gz"))
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tmp_path)})
    item = parser.get_parsed_content("validate#preprocessing")(
        {"image": str(tmp_path / "head.nii.gz"), "image_id": "head", "source": "head", "modality": "mr",
         "channels": 1, "preset": preset})
    assert float(item["level"][0]) == 0.0  # the network is told it is not a display image
    target = item["target"][0]
    assert float(target.max()) == pytest.approx(1.0)  # not 180 / 255
    if preset == "clean":  # the network's input and the target share a frame: leaving it as it is scores it
        error = (item["image"][0].clamp(0, 1) - target).square().mean()
        assert float(10 * torch.log10(1 / error)) > 50


def test_evaluation_degrades_and_enhances_a_volume_whole_and_scores_its_centre_slice(bundle, tmp_path):
    """Inference stretches a degraded volume by its whole range and enhances it slice by slice with one noise
    estimate and one level for the volume; the evaluation degrades, stretches and enhances a volume the same way
    and scores its centre slice. A dim centre slice of a volume keeps its place in the volume's range (a slice
    taken alone would have been stretched to full scale), and the untouched input is that slice of the degraded
    volume."""
    ramp = np.linspace(0.3, 1.0, 9)  # slice z is ramp[z] as bright as the brightest
    pattern = 20 + 160 * smooth((28, 26), np.random.default_rng(5))
    volume = np.zeros((40, 36, 9), dtype=np.uint8)
    volume[6:34, 5:31] = (pattern[..., None] * ramp).round().astype(np.uint8)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "head.nii.gz"))
    torch.manual_seed(0)
    torch.save(shipped_network(channels=[8, 16]).state_dict(), tmp_path / "weights.pt")
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tmp_path), "channels": [8, 16],
                   "weights_path": str(tmp_path / "weights.pt"), "output_dir": str(tmp_path / "eval"),
                   "baselines": ["stretch"], "progress": False,
                   "validate#datalist": [{"image": str(tmp_path / "head.nii.gz"), "image_id": "head", "source": "head",
                                          "modality": "mr", "channels": 1, "preset": p} for p in ("paper", "clean")]})
    parser.get_parsed_content("validate#evaluator").run()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    records = {r["preset"]: r for r in report["images"]}
    for item in parser.get_parsed_content("validate#dataset"):
        assert item["image"].shape == (1, 40, 36, 9)  # the whole volume reaches the network, as in inference
        target = item["target"][..., 4].expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float64)
        if item["preset"] == "clean":
            assert float(item["image"][..., 4].max()) < 0.8  # the volume's stretch, not the slice's own
            assert float(item["image"][..., 8].max()) == pytest.approx(1.0, abs=0.02)
            continue
        untouched = item["degraded"][..., 4].expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float64)
        assert records["paper"]["baselines"]["input"]["psnr"] == pytest.approx(
            metrics.peak_signal_noise_ratio(target, untouched, data_range=1.0), abs=1e-3)
    assert all(np.isfinite(records[p]["ssim"]) for p in records)  # scored as a 2D slice


@pytest.mark.slow
def test_the_evaluation_scores_what_inference_writes_for_the_degraded_file(tmp_path):
    """The evaluation's output for a degraded item is what the inference bundle writes when a user hands it that
    degraded image as a file (loader, stretch, level, network and blend alike; a volume enhanced whole): for a
    photo to within a level of its 8 bits, for a quantitative 16-bit volume to within 0.1% after one line, the
    window that takes both to the frame the evaluation scores in (its robust range)."""
    torch.manual_seed(1)
    net = shipped_network(channels=list(TINY_CHANNELS))
    with torch.no_grad():  # away from its identity start, so the network's own output shows in the blend
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    torch.save(net.state_dict(), weights := tmp_path / "tiny.pt")
    rng = np.random.default_rng(5)
    (tmp_path / "clean").mkdir()
    volume = np.zeros((40, 36, 9))
    volume[6:34, 5:31] = (20 + 160 * smooth((28, 26), rng))[..., None] * np.linspace(0.3, 1.0, 9)
    volume[..., [0, 1, 2, 3, 5, 6, 7, 8]] += rng.normal(0, 6, (40, 36, 8))  # grain in every slice but the centre
    volume = (volume.clip(0, 255) * 200).round().astype(np.uint16)  # 16 bits: the output resolves the filter's work
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "clean" / "head.nii.gz"))
    photo = np.stack([smooth((48, 56), rng) for _ in range(3)], -1) * 150 + 30
    photo.reshape(-1, 3)[rng.choice(photo.size // 3, 6, replace=False)] = 255  # past the stretch's white: beyond [0, 1]
    Image.fromarray(photo.round().astype(np.uint8)).save(tmp_path / "clean" / "cells.png")
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / "train.json"), str(REPO / "bundle" / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(REPO / "bundle"), "dataset_dir": str(tmp_path), "channels": list(TINY_CHANNELS),
                   "weights_path": str(weights), "output_dir": str(tmp_path / "eval"), "baselines": [],
                   "progress": False, "validate#datalist": [
                       {"image": str(tmp_path / "clean" / name), "image_id": name, "source": name, "modality": modality,
                        "channels": channels, "preset": "paper"}
                       for name, modality, channels in (("head.nii.gz", "mr", 1), ("cells.png", "histology", 3))]})
    evaluator = parser.get_parsed_content("validate#evaluator")
    preds = {}
    evaluator.add_event_handler(Events.ITERATION_COMPLETED,
                                lambda e: preds.update({e.state.batch[0]["image_id"]: e.state.output[0]["pred"].numpy()}))
    evaluator.run()
    (tmp_path / "degraded").mkdir()
    for item in parser.get_parsed_content("validate#dataset"):  # the degraded images as their files hold them
        degraded = item["degraded"].numpy()
        if item["image_id"] == "head.nii.gz":
            levels = (degraded[0] * 65535).round().astype(np.uint16)
            nib.save(nib.Nifti1Image(levels, np.eye(4)), str(tmp_path / "degraded" / "head.nii.gz"))
        else:  # MONAI's reader gives (C, W, H): the file is written back in the layout it reads
            levels = (np.moveaxis(degraded, 0, -1) * 255).round().astype(np.uint8)
            Image.fromarray(levels.transpose(1, 0, 2)).save(tmp_path / "degraded" / "cells.png")
    proc = subprocess.run(bundle_command(tmp_path / "degraded", tmp_path / "out", weights), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = np.asarray(Image.open(tmp_path / "out" / "cells.png")).transpose(1, 0, 2).astype(np.float64)
    assert np.abs(np.moveaxis(preds["cells.png"], 0, -1) * 255 - written).max() <= 1.0
    written = nib.load(str(tmp_path / "out" / "head.nii.gz")).get_fdata()[..., 4].ravel()  # the scored centre slice
    scored = preds["head.nii.gz"].mean(0).ravel()
    gain, offset = np.polyfit(written, scored, 1)
    # within 0.1% of the scored range (a few of the file's 16-bit levels; the whole-volume filter against the centre
    # slice's alone differs by 0.6%)
    assert gain > 0 and np.abs(gain * written + offset - scored).max() <= 1e-3


def test_evaluation_degrades_a_one_slice_volume_as_the_2d_picture_it_holds(bundle, tmp_path):
    """ITK reads a DICOM radiograph as a volume one slice thick: its radiology degradation (a smooth bias field) is
    the 2D picture's, drawn from the same numbers, not a 3D field's."""
    picture = (smooth((48, 40), np.random.default_rng(2)) * 3000).round().astype(np.int16)
    nib.save(nib.Nifti1Image(picture, np.eye(4)), str(tmp_path / "flat.nii.gz"))
    nib.save(nib.Nifti1Image(picture[..., None], np.eye(4)), str(tmp_path / "thin.nii.gz"))
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "evaluate.json")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(tmp_path)})
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    flat, thin = (preprocessing({"image": str(tmp_path / name), "image_id": "radiograph", "source": "radiograph",
                                 "modality": "xray", "channels": 1, "preset": "radiology"})
                  for name in ("flat.nii.gz", "thin.nii.gz"))
    assert thin["image"].shape == flat["image"].shape == (1, 48, 40)
    assert torch.equal(thin["image"], flat["image"]) and torch.equal(thin["degraded"], flat["degraded"])
