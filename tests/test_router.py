"""ModalityRouter: each image reaches the network for its modality, in networks, engines and configs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator
from PIL import Image

from monai_dpe.data import load_split
from monai_dpe.engines import PrepareImageTarget
from monai_dpe.networks import (
    DPENet,
    ModalityRouter,
    WeightsError,
    export_onnx,
    load_router,
    record_large_files,
    resolve_backend,
)

REPO = Path(__file__).resolve().parents[1]
CHANNELS = [8, 16]

NO_BF16 = frozenset({"avx2", "avx512f"})  # a CPU without native bf16: auto keeps fp32


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@pytest.fixture
def router() -> ModalityRouter:
    return ModalityRouter(Scale(1.0), {"histology": Scale(2.0), "fundus": Scale(3.0)})


def test_each_image_of_a_mixed_batch_reaches_its_own_network(router):
    x = torch.ones(3, 3, 4, 4)
    out = router(x, modality=["ct", "histology", "fundus"])
    assert [float(v) for v in out.flatten(1).mean(1)] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("modality, factor", [(None, 1.0), ("mr", 1.0), ("histology", 2.0), (["fundus", "fundus"], 3.0)])
def test_one_modality_for_the_batch_or_none(router, modality, factor):
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(router(x, modality=modality), x * factor)


def test_modality_names_must_match_the_batch(router):
    with pytest.raises(ValueError, match="2 modality names for a batch of 3"):
        router(torch.ones(3, 3, 4, 4), modality=["ct", "mr"])


def _weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(DPENet(channels=CHANNELS).state_dict(), path)
    return path


def test_load_router_loads_each_expert_into_its_own_copy(tmp_path):
    general, histology = _weights(tmp_path / "model.pt", 0), _weights(tmp_path / "model_histology.pt", 1)
    router = load_router(DPENet(channels=CHANNELS), general, {"histology": histology}).eval()
    reference = {name: DPENet(channels=CHANNELS).eval() for name in ("general", "histology")}
    reference["general"].load_state_dict(torch.load(general, weights_only=True))
    reference["histology"].load_state_dict(torch.load(histology, weights_only=True))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(router(x, "histology"), reference["histology"](x))
        torch.testing.assert_close(router(x, "xray"), reference["general"](x))
        assert not torch.allclose(router(x, "histology"), router(x, "xray"))


def test_load_router_checks_each_file_against_the_bundle_record(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    general, histology = _weights(models / "model.pt", 0), _weights(models / "model_histology.pt", 1)
    record_large_files(tmp_path, ["models/model.pt", "models/model_histology.pt"])
    _weights(histology, 2)  # replaced after it was recorded
    with pytest.raises(WeightsError, match="model_histology.pt"):
        load_router(DPENet(channels=CHANNELS), general, {"histology": histology}, tmp_path)


def test_prepare_batch_passes_extra_keys_to_the_network():
    batch = {"image": torch.ones(2, 3, 4, 4), "target": torch.ones(2, 3, 4, 4), "modality": ["ct", "histology"]}
    assert len(PrepareImageTarget()(batch)) == 2
    image, target, args, kwargs = PrepareImageTarget(extra_keys={"modality": "modality"})(batch)
    assert args == () and kwargs == {"modality": ["ct", "histology"]}
    router = ModalityRouter(Scale(1.0), {"histology": Scale(2.0)})
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[batch], network=router,
                                    prepare_batch=PrepareImageTarget(extra_keys={"modality": "modality"}), decollate=False)
    evaluator.run()
    assert [float(v) for v in evaluator.state.output["pred"].flatten(1).mean(1)] == [1.0, 2.0]


def test_load_split_keeps_the_modalities_asked_for(tmp_path):
    datalist = {"training": [{"image": f"{m}.png", "modality": m} for m in ("ct", "histology", "fundus")]}
    for item in datalist["training"]:
        Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / item["image"])
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))
    assert [i["modality"] for i in load_split(path, "training", tmp_path)] == ["ct", "histology", "fundus"]
    kept = load_split(path, "training", tmp_path, modalities=["histology"])
    assert [(Path(i["image"]).name, i["modality"]) for i in kept] == [("histology.png", "histology")]
    with pytest.raises(ValueError, match=f"{path}: no 'training' entries of modality mr"):
        load_split(path, "training", tmp_path, modalities=["mr"])


def test_auto_backend_never_runs_the_general_export_for_the_histology_weights(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    general, histology = _weights(models / "model.pt", 0), _weights(models / "model_histology.pt", 1)
    net = DPENet(channels=CHANNELS)
    net.load_state_dict(torch.load(general, weights_only=True))
    export_onnx(net, models / "model.onnx")
    record_large_files(tmp_path, ["models/model.pt", "models/model_histology.pt", "models/model.onnx"])
    onnx = models / "model.onnx"
    assert resolve_backend("auto", "cpu", general, onnx, bundle_root=tmp_path, features=NO_BF16) == "onnx"
    assert resolve_backend("auto", "cpu", histology, onnx, bundle_root=tmp_path, features=NO_BF16) == "eager"


def test_histology_overlay_trains_a_specialist_beside_the_general_model():
    configs = REPO / "bundle" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "train_histology.json")])
    assert parser["modalities"] == ["histology"] and parser["colour_prob"] == 0.0 and parser["stain_prob"] > 0
    names = {parser.get_parsed_content(k) for k in ("model_file", "state_file")}
    assert names == {"model_histology.pt", "training_state_histology.pt"}
    saver = parser["validate#checkpoint_saver"]
    assert saver["key_metric_filename"] == "@model_file"
    evaluate = ConfigParser()
    evaluate.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
    evaluate["bundle_root"] = "/b"
    assert evaluate.get_parsed_content("expert_weights") == {}, "no specialist ships (0.6.0 beat it on the test split)"
    evaluate["shipped_experts"] = {"histology": "/b/models/model_histology.pt"}
    assert evaluate.get_parsed_content("expert_weights") == {"histology": "/b/models/model_histology.pt"}
    evaluate["weights_path"] = "/elsewhere/mine.pt"
    assert evaluate.get_parsed_content("expert_weights") == {}, "a user's own weights are scored alone"
