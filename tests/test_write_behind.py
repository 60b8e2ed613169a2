"""``EnhancementEvaluator(write_behind=True)``: a forked child writes each file while the network works on the
next, with the same outputs, the same per-file failures and the same summary as writing in turn."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_dpe.engines import EnhancementEvaluator
from monai_dpe.engines.enhancer import can_fork, run_summary
from monai_dpe.keys import ItemKeys

pytestmark = pytest.mark.skipif(not can_fork(), reason="write-behind forks a child")


class SaveOrRefuse:
    """Writes the prediction as .npy with the writer's pid; refuses the item named ``bad``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, item: dict) -> dict:
        name = Path(item["image_path"]).stem
        if name == "bad":
            raise OSError("No space left on device")
        path = self.folder / f"{name}.npy"
        np.save(path, np.asarray(item["pred"]))
        (self.folder / f"{name}.pid").write_text(str(os.getpid()))
        return {**item, ItemKeys.OUTPUT_PATH: str(path)}


def run(tmp_path: Path, write_behind: bool, names=("a", "bad", "c", "d")) -> EnhancementEvaluator:
    out = tmp_path / ("behind" if write_behind else "in_turn")
    out.mkdir()
    items = [{"image": torch.full((1, 8, 8), float(i)), "image_path": f"in/{n}.png"} for i, n in enumerate(names)]
    loader = DataLoader(Dataset(items), batch_size=1)
    evaluator = EnhancementEvaluator("cpu", loader, torch.nn.Identity(), item_postprocessing=SaveOrRefuse(out),
                                     write_behind=write_behind)
    evaluator.run()
    return evaluator


def test_writing_behind_gives_the_outputs_and_failures_of_writing_in_turn(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="monai_dpe.engines.enhancer"):
        behind = run(tmp_path, True)
    logged = [r.getMessage() for r in caplog.records]
    in_turn = run(tmp_path, False)
    assert run_summary(behind.state)["failures"] == [{"input": "in/bad.png", "reason": "No space left on device"}]
    assert [Path(p).name for p in behind.state.enhanced] == ["a.npy", "c.npy", "d.npy"]
    assert [Path(p).name for p in in_turn.state.enhanced] == ["a.npy", "c.npy", "d.npy"]
    assert run_summary(behind.state)["failures"] == run_summary(in_turn.state)["failures"]
    for name in ("a", "c", "d"):
        assert np.array_equal(np.load(tmp_path / "behind" / f"{name}.npy"), np.load(tmp_path / "in_turn" / f"{name}.npy"))
        assert int((tmp_path / "behind" / f"{name}.pid").read_text()) != os.getpid(), "a child wrote it"
        assert int((tmp_path / "in_turn" / f"{name}.pid").read_text()) == os.getpid()
    assert logged.count("in/bad.png: No space left on device") == 1
    assert behind._writing is None, "the last child was waited for"


def test_a_writer_that_dies_fails_its_file_only(tmp_path, monkeypatch):
    """A child killed while writing (e.g. by the out-of-memory killer) is that file's failure, not the run's."""
    original = SaveOrRefuse.__call__

    def die_on_c(self, item):
        if Path(item["image_path"]).stem == "c":
            os._exit(9)
        return original(self, item)

    monkeypatch.setattr(SaveOrRefuse, "__call__", die_on_c)
    evaluator = run(tmp_path, True, names=("a", "c", "d"))
    assert [Path(p).name for p in evaluator.state.enhanced] == ["a.npy", "d.npy"]
    assert evaluator.state.failed == [("in/c.png", "the process writing it ended before it finished")]


def test_when_no_child_can_be_forked_each_file_is_written_in_turn(tmp_path, monkeypatch):
    def refuse(self, source, items):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(EnhancementEvaluator, "_start_writing", refuse)
    evaluator = run(tmp_path, True, names=("a", "c"))
    assert [Path(p).name for p in evaluator.state.enhanced] == ["a.npy", "c.npy"] and not evaluator.state.failed
    assert int((tmp_path / "behind" / "a.pid").read_text()) == os.getpid()


@pytest.mark.parametrize("spare", [True, False])
def test_by_default_writing_goes_behind_only_where_a_core_is_spare(monkeypatch, spare):
    monkeypatch.setattr("monai_dpe.engines.enhancer.has_spare_core", lambda: spare)
    evaluator = EnhancementEvaluator("cpu", DataLoader(Dataset([]), batch_size=1), torch.nn.Identity())
    assert evaluator.write_behind is spare
    assert EnhancementEvaluator("cpu", DataLoader(Dataset([]), batch_size=1), torch.nn.Identity(),
                                write_behind="true").write_behind is True, "the option still forces it"
