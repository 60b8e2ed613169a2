"""Training handlers (monai_dpe.engines.handlers, .schedules): ``TimeLimit``, the learning-rate decay, and their
wiring in every training config."""
from __future__ import annotations

import math

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from monai_dpe.engines import CosineDecay, TimeLimit, TrainingState, decay_handlers, decay_schedulers
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


def test_cosine_decay_runs_from_one_to_its_final_factor_and_stays_there():
    decay = CosineDecay(100, final_factor=0.1)
    assert decay(0) == pytest.approx(1.0) and decay(50) == pytest.approx(0.55)
    assert decay(100) == pytest.approx(0.1) and decay(250) == pytest.approx(0.1)
    values = [decay(i) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("iterations, final_factor", [(0, 0.05), (10, -0.1), (10, 1.5)])
def test_cosine_decay_refuses_settings_that_are_no_decay(iterations, final_factor):
    with pytest.raises(ValueError, match="iterations|final_factor"):
        CosineDecay(iterations, final_factor)


def test_decay_handlers_step_every_iteration_and_a_saved_schedule_resumes_mid_decay():
    """An engine of 30 iterations takes both optimisers' rates down the cosine; a new scheduler loaded
    from the saved one continues from iteration 30, not from the start."""
    def optimisers():
        return {name: torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3) for name in ("g", "d")}

    opts = optimisers()
    schedules = decay_schedulers(opts, iterations=40, final_factor=0.05)
    assert set(schedules) == {"g_schedule", "d_schedule"}
    engine = Engine(lambda e, b: [o.step() for o in opts.values()])
    for handler in decay_handlers(schedules):
        handler.attach(engine)
    engine.run(range(30), max_epochs=1)
    expected = 1e-3 * CosineDecay(40, 0.05)(30)
    assert all(o.param_groups[0]["lr"] == pytest.approx(expected) for o in opts.values())

    again = optimisers()
    resumed = decay_schedulers(again, iterations=40, final_factor=0.05)
    for name, schedule in resumed.items():
        schedule.load_state_dict(schedules[name].state_dict())
        schedule.step()
    assert all(o.param_groups[0]["lr"] == pytest.approx(1e-3 * CosineDecay(40, 0.05)(31)) for o in again.values())


def _stepped_plain_schedule(steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """A plain ``LambdaLR`` along a 100-iteration decay (as states saved before ``CosineDecayLR`` hold it)."""
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, CosineDecay(100, 0.05))
    for _ in range(steps):
        opt.step()
        schedule.step()
    return opt, schedule


def test_a_resumed_decay_follows_this_runs_settings_from_the_saved_step_and_says_so(caplog):
    """``LambdaLR`` alone would put the saved decay's length back and ignore the one the run was given."""
    _, saved = _stepped_plain_schedule(30)
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    resumed = decay_schedulers({"g": opt}, iterations=40, final_factor=0.1)["g_schedule"]
    with caplog.at_level("WARNING", logger="monai_dpe.engines.schedules"):
        resumed.load_state_dict(saved.state_dict())
    assert any("100 iterations" in r.getMessage() and "step 30" in r.getMessage() for r in caplog.records)
    opt.step()
    resumed.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * CosineDecay(40, 0.1)(31))
    assert vars(resumed.lr_lambdas[0]) == {"iterations": 40, "final_factor": 0.1}


def test_a_restarted_decay_starts_again_at_the_resume_and_an_interrupted_restart_goes_on():
    def restarted_from(state, iterations=40):
        opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
        schedule = decay_schedulers({"g": opt}, iterations=iterations, final_factor=0.1, restart=True)["g_schedule"]
        schedule.load_state_dict(state)
        opt.step()
        schedule.step()
        return schedule, opt

    _, saved = _stepped_plain_schedule(30)
    restarted, opt = restarted_from(saved.state_dict())
    assert restarted.last_epoch == 1
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * CosineDecay(40, 0.1)(1))
    for _ in range(4):
        restarted.step()
    assert restarted_from(restarted.state_dict())[0].last_epoch == 6  # the same command resumes it
    assert restarted_from(restarted.state_dict(), iterations=60)[0].last_epoch == 1  # another decay restarts


def test_training_state_names_saved_records_the_run_does_not_configure(tmp_path, caplog):
    """A decaying run resumed without its decay keeps the saved rate; the schedule it leaves behind is named."""
    opt, schedule = _stepped_plain_schedule(5)
    engine = Engine(lambda e, b: None)
    engine.run([0], max_epochs=1)
    TrainingState(str(tmp_path / "state.pt"), {"optimizer": opt}, optional_dict={"optimizer_schedule": schedule}).save(
        engine
    )
    again = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    with caplog.at_level("WARNING", logger="monai_dpe.engines.handlers"):
        TrainingState(str(tmp_path / "state.pt"), {"optimizer": again}, resume=True).load(engine)
    assert any("optimizer_schedule" in r.getMessage() and "not restored" in r.getMessage() for r in caplog.records)
    assert again.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


@pytest.mark.parametrize("overlay", [None, "multi_gpu_train.json", "train_paper_width.json"])
def test_every_training_config_decays_its_rates_only_when_asked_and_saves_the_schedule(overlay):
    configs = REPO / "bundle" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json")] + ([str(configs / overlay)] if overlay else []))
    assert parser["lr_decay_iterations"] is None and "lr_handlers" in parser["train#trainer#train_handlers"]
    if overlay == "multi_gpu_train.json":
        return  # its networks are built inside a process group (tests/test_multi_gpu.py trains through it)
    assert parser.get_parsed_content("train#lr_handlers") == []
    parser["lr_decay_iterations"] = 500
    schedules = parser.get_parsed_content("lr_schedules", lazy=False)
    assert set(schedules) == {"optimizer_schedule", "disc_optimizer_schedule"}
    assert "lr_schedules" in parser["train#handlers"][1]["optional_dict"]
    assert math.isclose(schedules["optimizer_schedule"].lr_lambdas[0](500), parser["lr_final_factor"])
    assert not schedules["optimizer_schedule"].restart
    parser["lr_decay_restart"] = "true"
    assert all(s.restart for s in parser.get_parsed_content("lr_schedules", lazy=False).values())
