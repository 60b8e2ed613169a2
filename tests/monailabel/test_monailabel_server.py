"""A real MONAI Label server serves the bundle, unchanged, through MONAI Label's BundleInferTask.

Runs in MONAI Label's own environment (``make test-monailabel``). The test lays out what a user
would: MONAI Label's own sample ``monaibundle`` app (the ``monailabel`` wheel installs it under
``<prefix>/monailabel/sample-apps``), copied, with the bundle under ``model/monai_dpe``, and a studies
folder holding one real MR volume (nibabel's ``anatomical.nii``) and one grey radiograph (the
shipped X-ray sample, cropped to a non-square PNG). It starts ``monailabel start_server`` on
127.0.0.1, asks for an inference of each over HTTP, and checks each result against the bundle's own
inference (``python -m monai.bundle run``) on the same file with the same weights.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from PIL import Image, ImageOps
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle"
APP = Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"  # MONAI Label's own app, as its wheel installs it
# local bundles only (no model-zoo listing: this machine is offline) and no SAM2 models (they download weights)
CONF = {"zoo_source": "github", "sam2": "false"}
MODEL = "monai_dpe"  # the bundle's folder name under <app>/model, and the model name in /infer/<model>
IMAGE_ID = "anatomical"  # MONAI Label's local datastore names an image by its file name without extension
PICTURE_ID = "xray_limb"
BRIGHT_ID = "xray_limb_bright"  # the same crop stretched to full scale: well exposed, so it keeps its own level
STARTUP_S = 300  # the server imports torch and MONAI on a shared 2-core machine
INFER_S = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_weights(dest: Path) -> None:
    """The trained weights if there are any (copied, so a training run writing them is not disturbed),
    else a random-init state dict of the bundle's own ``network_def``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    trained = BUNDLE / "models" / "model.pt"
    for _ in range(3):  # a training run may be replacing the file at this moment
        if not trained.is_file():
            break
        shutil.copyfile(trained, dest)
        try:
            torch.load(dest, map_location="cpu", weights_only=True)
            return
        except Exception:
            time.sleep(2)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), dest)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def layout(tmp_path):
    """App with the bundle under model/, a studies folder with one volume, and a reference input folder."""
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "model", "logs"))
    bundle = app / "model" / MODEL
    # the bundle as shipped (configs, docs, licence); not its training runs or other checkpoints
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("models", "runs", "eval", "__pycache__"))
    _copy_weights(bundle / "models" / "model.pt")
    shutil.copyfile(BUNDLE / "models" / "level_prior.json", bundle / "models" / "level_prior.json")

    # a real MR volume shipped in nibabel's wheel (33 x 41 x 25, 2 mm, int16), stored little-endian
    source = nib.load(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii")
    volume = nib.Nifti1Image(np.asarray(source.dataobj).astype("<i2"), source.affine)
    studies = tmp_path / "studies"
    studies.mkdir()
    nib.save(volume, studies / f"{IMAGE_ID}.nii.gz")
    reference_in = tmp_path / "reference_in"
    reference_in.mkdir()
    nib.save(volume, reference_in / f"{IMAGE_ID}.nii.gz")
    # a grey 8-bit radiograph, cropped so that a transposed result cannot pass for the input
    picture = Image.open(REPO / "examples" / "data" / f"{PICTURE_ID}.png").crop((0, 0, 448, 320))
    bright = ImageOps.autocontrast(picture)
    for folder in (studies, reference_in):
        picture.save(folder / f"{PICTURE_ID}.png")
        bright.save(folder / f"{BRIGHT_ID}.png")
    return {"tmp": tmp_path, "app": app, "bundle": bundle, "studies": studies, "reference_in": reference_in}


def _bundle_inference(bundle: Path, dataset_dir: Path, output_dir: Path) -> dict[str, Path]:
    """The bundle's own inference on the same files, as a user runs it: output path by input name."""
    configs = bundle / "configs"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(configs / "inference.json"),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
        "--bundle_root", str(bundle),
        "--dataset_dir", str(dataset_dir),
        "--output_dir", str(output_dir),
        "--progress", "false",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=INFER_S)
    assert run.returncode == 0, f"bundle inference failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    outputs = {p.name.split(".")[0]: p for p in output_dir.rglob("*") if p.is_file()}
    assert sorted(outputs) == sorted([IMAGE_ID, PICTURE_ID, BRIGHT_ID]), f"bundle inference wrote {outputs}"
    return outputs


class Server:
    """``monailabel start_server`` in its own process group, logging to a file."""

    def __init__(self, app: Path, studies: Path, log: Path, conf: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        bin_dir = Path(sys.executable).parent
        env = dict(
            os.environ,
            # MONAI Label's launcher runs `python -m monailabel.main`: this environment's python
            PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            MONAILABEL_PYEXE=sys.executable,
            MONAI_LABEL_SESSION_PATH=str(log.parent / "sessions"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",
        )
        cmd = [str(bin_dir / "monailabel"), "start_server", "--app", str(app), "--studies", str(studies)]
        for key, value in conf.items():
            cmd += ["--conf", key, value]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"MONAI Label server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = requests.get(f"{self.url}/info/", timeout=5)
                if r.status_code == 200:
                    return r.json()
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        pytest.fail(f"MONAI Label server not ready after {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test started: the server and any workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log_file.close()


@pytest.mark.slow
def test_monailabel_serves_the_bundle(layout):
    tmp, bundle = layout["tmp"], layout["bundle"]
    references = _bundle_inference(bundle, layout["reference_in"], tmp / "reference_out")
    reference_path = references[IMAGE_ID]
    shipped = _files(bundle)

    server = Server(layout["app"], layout["studies"], tmp / "server.log", {"models": MODEL, **CONF})
    try:
        info = server.wait_ready(STARTUP_S)
        served = info["models"].get(MODEL)
        r = requests.post(f"{server.url}/infer/{MODEL}", params={"image": IMAGE_ID, "output": "image"}, timeout=INFER_S)
        r2d = requests.post(f"{server.url}/infer/{MODEL}", params={"image": PICTURE_ID, "output": "image"},
                            timeout=INFER_S)
        bright = requests.post(f"{server.url}/infer/{MODEL}", params={"image": BRIGHT_ID, "output": "image"},
                               timeout=INFER_S)
    finally:
        server.stop()  # before reading its log, so the log is complete

    assert served is not None, f"{MODEL} not served; /info/ lists {list(info['models'])}:\n{server.tail()}"
    assert served["version"] == ConfigParser.load_config_file(bundle / "configs" / "metadata.json")["version"]
    assert not served["labels"], "an enhancement announces no labels (the output channel_def is empty)"
    assert r.status_code == 200, f"infer returned {r.status_code}: {r.text[:300]}\nserver log:\n{server.tail()}"
    result_path = tmp / "monailabel_result.nii.gz"
    result_path.write_bytes(r.content)

    source = nib.load(layout["studies"] / f"{IMAGE_ID}.nii.gz")
    result = nib.load(result_path)
    reference = nib.load(reference_path)
    x = np.asarray(source.dataobj, dtype=np.float64)
    y = np.asarray(result.dataobj, dtype=np.float64)
    ref = np.asarray(reference.dataobj, dtype=np.float64)

    # the returned volume is the input's volume: same shape, placement in space and dtype (int16 MR stays int16)
    assert y.shape == x.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-4)
    assert result.get_data_dtype() == source.get_data_dtype()
    # it is the enhancement, not the input sent back: most voxels differ from the input (a quantitative volume
    # keeps its units' level, so what changes is its filtered detail) ...
    assert (y != x).mean() > 0.5
    # ... and it is what the bundle's own inference gives for the same file (equal on a CPU; one unit of the
    # output dtype allowed for nondeterministic GPU kernels)
    assert ref.shape == x.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1.0)
    # serving wrote nothing into the bundle (the bundle's file writer is for its own batch runs)
    assert _files(bundle) == shipped

    # the grey PNG comes back as the PNG it was: same width and height, 8-bit grey, the bundle's own result
    assert r2d.status_code == 200, f"infer returned {r2d.status_code}: {r2d.text[:300]}\nserver log:\n{server.tail()}"
    (tmp / "monailabel_result.png").write_bytes(r2d.content)
    picture, returned = Image.open(layout["studies"] / f"{PICTURE_ID}.png"), Image.open(tmp / "monailabel_result.png")
    assert (returned.size, returned.mode) == (picture.size, picture.mode) == ((448, 320), "L")
    expected = np.asarray(Image.open(references[PICTURE_ID]), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(returned, dtype=np.float64), expected, rtol=0, atol=1.0)

    # a well-exposed picture keeps its own level, served as the bundle runs it: the level reached the blend
    assert bright.status_code == 200, f"infer returned {bright.status_code}: {bright.text[:300]}"
    (tmp / "monailabel_bright.png").write_bytes(bright.content)
    sent = np.asarray(Image.open(layout["studies"] / f"{BRIGHT_ID}.png"), dtype=np.float64)
    served_bright = np.asarray(Image.open(tmp / "monailabel_bright.png"), dtype=np.float64)
    np.testing.assert_allclose(served_bright, np.asarray(Image.open(references[BRIGHT_ID]), dtype=np.float64),
                               rtol=0, atol=1.0)
    assert abs(served_bright.mean() - sent.mean()) < 2.0, "the level of a well-exposed picture is its own"
