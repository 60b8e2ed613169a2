"""Training handlers (monai_dpe.engines.handlers): ``TimeLimit``, and its wiring in every training config."""
from __future__ import annotations

import ignite.distributed as idist
import pytest
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from monai_dpe.engines import TimeLimit
from helpers import REPO


@pytest.mark.parametrize("overlay", [None, "multi_gpu_train.json", "train_paper_width.json"])
def test_every_training_config_honours_a_time_limit(overlay):
    """``--time_limit`` belongs to train.json, so CPU, multi-GPU and paper-width runs all stop on it
    (it was read by the paper-width overlay alone, and silently ignored by plain train.json)."""
    configs = REPO / "bundle" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")] + ([str(configs / overlay)] if overlay else []))
    assert parser["time_limit"] is None and parser.get_parsed_content("train#time_limit_handlers") == []
    assert "time_limit_handlers" in parser["train#trainer#train_handlers"]
    parser["time_limit"] = 330
    handlers = parser.get_parsed_content("train#time_limit_handlers", lazy=False)
    assert len(handlers) == 1 and isinstance(handlers[0], TimeLimit) and handlers[0].limit_sec == 330


@pytest.mark.parametrize("own_clock_expired, any_rank_expired, stops", [
    (False, False, False), (False, True, True), (True, True, True)])
def test_time_limit_stops_every_rank_when_any_clock_expires(monkeypatch, own_clock_expired, any_rank_expired, stops):
    """Under DDP a rank that stopped alone would leave the others waiting in the gradient all-reduce."""
    reduced = []
    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "all_reduce", lambda value, op: reduced.append((value, op)) or int(any_rank_expired))
    engine = Engine(lambda e, b: None)
    limit = TimeLimit(3600)
    limit.attach(engine)
    if own_clock_expired:
        engine.add_event_handler(Events.STARTED, lambda _: setattr(limit, "started", limit.started - 7200))
    engine.run([0, 1, 2], max_epochs=1)
    assert reduced and reduced[0] == (int(own_clock_expired), "MAX")
    assert engine.state.iteration == (1 if stops else 3)
