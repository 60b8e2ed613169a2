"""The named helpers the bundle's configs call in place of long expressions, and the named ids that replaced
overrides by list position (issue 22)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler, ValidationHandler

from monai_dpe.data import load_scored_split, load_split, training_share, validation_share, with_presets
from monai_dpe.engines import (
    BestMetricRecord,
    EpochSeeder,
    TrainingProgressBar,
    TrainingState,
    WeightsRecord,
    best_model_records,
    enabled_handlers,
    prepare_with_level,
)
from monai_dpe.networks import BACKENDS, backend_file, experts_for, load_initial_weights
from monai_dpe.processor import has_spare_core, share_cpu_threads
from helpers import REPO, TINY

CONFIGS = REPO / "bundle" / "configs"


def walk(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, (*path, str(index)))
    else:
        yield "#".join(path), value


CONFIG_FILES = sorted(p.name for p in CONFIGS.glob("*.json") if p.name not in ("datalist.json", "metadata.json"))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_configs_hold_no_long_expression_and_no_override_by_position(name):
    config = json.loads((CONFIGS / name).read_text())
    long = [key for key, value in walk(config) if isinstance(value, str) and value.startswith("$") and len(value) > 120]
    assert not long, f"{name}: name a helper for {long}"
    by_position = [key for key in config if any(part.isdigit() for part in key.split("#"))]
    assert not by_position, f"{name}: overrides by list position {by_position}"


def test_metadata_changelog_entries_are_one_short_line():
    changelog = json.loads((CONFIGS / "metadata.json").read_text())["changelog"]
    assert all("\n" not in entry and len(entry) < 100 for entry in changelog.values())


# ------------------------------------------------------------------------------------------- engines
def test_enabled_handlers_drops_the_disabled_ones_in_order():
    a, b = object(), object()
    assert enabled_handlers([None, a, None, b]) == [a, b]
    assert enabled_handlers(None) == [] and enabled_handlers([None]) == []


def test_best_model_records_keep_the_savers_record_and_the_best_metric(tmp_path):
    saver = CheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_key_metric=True)
    evaluator = Engine(lambda engine, batch: None)
    records = best_model_records(saver, evaluator)
    assert records["best_checkpoint"] is saver._key_metric_checkpoint
    assert isinstance(records["best_metric"], BestMetricRecord) and records["best_metric"].workflow is evaluator
    assert best_model_records(None, evaluator) == {}, "no saver (ranks but 0): nothing to keep"


@pytest.mark.parametrize("level_channels, extra, expected", [
    (0, None, {}),
    (3, None, {"level": "level"}),
    (0, {"modality": "modality"}, {"modality": "modality"}),
    (3, {"modality": "modality"}, {"modality": "modality", "level": "level"}),
])
def test_prepare_with_level_passes_the_level_only_to_a_network_that_takes_one(level_channels, extra, expected):
    prepare = prepare_with_level(level_channels, extra)
    assert prepare.extra_keys == expected and list(prepare.extra_keys) == list(expected)
    batch = {"image": torch.zeros(1, 3, 4, 4), "target": torch.ones(1, 3, 4, 4), "level": torch.zeros(1, 3),
             "modality": ["ct"]}
    out = prepare(batch)
    assert len(out) == (4 if expected else 2)


def test_share_cpu_threads_divides_the_cores_among_local_processes(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert share_cpu_threads() == 4 and torch.get_num_threads() == 4
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
        assert share_cpu_threads() == 1, "at least one thread"
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        assert share_cpu_threads() == 8, "alone, every core"
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert share_cpu_threads() is None and torch.get_num_threads() == before


def test_a_spare_core_is_one_beyond_the_compute_threads(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert not has_spare_core(), "every core holds a compute thread"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert has_spare_core()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks of 3 threads hold more than 4 cores
    assert not has_spare_core()


# ---------------------------------------------------------------------------------------------- data
def test_training_shares_are_equal_shuffled_the_same_on_every_rank_and_cover_the_list():
    items = [{"image": str(i)} for i in range(5)]
    shares = [training_share(items, rank, 2, seed=3) for rank in range(2)]
    assert [len(s) for s in shares] == [3, 3]
    assert {item["image"] for s in shares for item in s} == {str(i) for i in range(5)}
    assert shares == [training_share(items, rank, 2, seed=3) for rank in range(2)]


def test_validation_shares_interleave_and_score_every_item_once():
    items = [{"image": str(i)} for i in range(5)]
    shares = [[item["image"] for item in validation_share(items, rank, 2)] for rank in range(2)]
    assert shares == [["0", "2", "4"], ["1", "3"]]


def test_load_scored_split_is_the_split_under_every_preset(tiny_data):
    datalist = tiny_data / "datalist.json"
    expected = with_presets(load_split(datalist, "validation", tiny_data, min_size=11), ["paper", "clean"])
    assert load_scored_split(datalist, "validation", tiny_data, "false", ["paper", "clean"]) == expected
    assert [item["preset"] for item in expected] == ["paper", "clean"] * (len(expected) // 2)


# -------------------------------------------------------------------------------------------- networks
def test_experts_go_with_the_shipped_weights_only(tmp_path):
    experts = {"histology": str(tmp_path / "models" / "model_histology.pt")}
    assert experts_for(tmp_path / "models" / "model.pt", experts, tmp_path) == experts
    assert experts_for(os.path.join(tmp_path, "models", "..", "models", "model.pt"), experts, tmp_path) == experts
    assert experts_for(tmp_path / "mine.pt", experts, tmp_path) == {}


def test_backend_file_is_the_file_each_backend_loads():
    files = {backend: backend_file(backend, "model.pt", "model.ts", "model.onnx") for backend in BACKENDS}
    assert files == {"eager": "model.pt", "bf16": "model.pt", "torchscript": "model.ts", "onnx": "model.onnx"}
    with pytest.raises(ValueError, match="backend must be one of"):
        backend_file("tensorrt", "model.pt")


def test_load_initial_weights_loads_grows_or_leaves_alone(tmp_path):
    torch.manual_seed(0)
    old = torch.nn.Linear(2, 3)
    torch.save({"network": old.state_dict()}, tmp_path / "state.pt")
    assert load_initial_weights(torch.nn.Linear(2, 3), None) is None
    loaded = load_initial_weights(torch.nn.Linear(2, 3), tmp_path / "state.pt")
    assert torch.equal(loaded.weight, old.weight)
    grown = load_initial_weights(torch.nn.Linear(4, 3), str(tmp_path / "state.pt"), warm=True)
    assert torch.equal(grown.weight[:, :2], old.weight) and not grown.weight[:, 2:].any()


# --------------------------------------------------------------------------------- multi_gpu_train.json
def multi_gpu_parser(tmp_path, data, rank: int) -> ConfigParser:
    """train.json + multi_gpu_train.json as rank ``rank`` of 2 would resolve it, without a process group."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert parser["not_rank0"] == "$dist.get_rank() > 0", "the multi-GPU overlay decides not_rank0 by rank"
    parser.update({**TINY, "bundle_root": str(tmp_path), "ckpt_dir": str(tmp_path / "models"),
                   "output_dir": str(tmp_path / "runs"), "dataset_dir": str(data), "datalist": str(data / "datalist.json"),
                   "device": "$torch.device('cpu')", "rank": rank, "world_size": 2, "not_rank0": rank > 0,
                   "train_seed": rank, "network": "$@network_def", "disc_network": "$@disc_network_def",
                   "validated_network": "@network",
                   "level_prior_path": str(CONFIGS.parent / "models" / "level_prior.json")})
    return parser


@pytest.mark.parametrize("rank", [0, 1])
def test_multi_gpu_only_rank0_logs_and_saves(tmp_path, tiny_data, rank):
    parser = multi_gpu_parser(tmp_path, tiny_data, rank)
    val_handlers = parser.get_parsed_content("validate#evaluator#val_handlers")
    train_handlers = parser.get_parsed_content("train#trainer#train_handlers")
    state = next(h for h in train_handlers if isinstance(h, TrainingState))
    kinds = [type(h) for h in train_handlers]
    if rank == 0:
        assert [type(h) for h in val_handlers] == [StatsHandler, TensorBoardStatsHandler, CheckpointSaver, WeightsRecord]
        assert kinds == [ValidationHandler, TrainingState, StatsHandler, TensorBoardStatsHandler, TrainingProgressBar,
                         EpochSeeder, StatsHandler]
        assert set(state.optional_dict) == {"best_checkpoint", "best_metric"}
    else:
        assert val_handlers == [], "no checkpoint, weights record or logs from rank 1"
        assert kinds == [ValidationHandler, TrainingState, EpochSeeder, StatsHandler]
        assert train_handlers[-1].tag_name == "train_loss_rank1", "only the per-rank loss line"
        assert state.optional_dict == {}
    assert not (tmp_path / "runs").exists() or rank == 0, "rank 1 opened no TensorBoard writer"


def test_paper_width_overlay_turns_cudnn_autotuning_on_by_name():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "train_paper_width.json")])
    assert parser["cudnn_benchmark"] == "$torch.cuda.is_available()"
    seeder = next(h for h in parser["train#handlers"] if h["_target_"].endswith("EpochSeeder"))
    assert seeder["cudnn_benchmark"] == "@cudnn_benchmark"
