"""`python -m monai_dpe.reports.benchmark` refuses bad arguments before minutes of timing, with one line each."""
from __future__ import annotations

import pytest

from monai_dpe.reports import benchmark


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--weights", "no_such_weights.pt"], "--weights no_such_weights.pt: no such file"),
        (["--channels", "a,b"], "--channels a,b: expected comma-separated integers"),
        (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_refused_before_timing(argv, reason, capsys, monkeypatch, tmp_path):
    def must_not_run(*args, **kwargs):
        raise AssertionError("timing started")

    monkeypatch.setattr(benchmark, "benchmark", must_not_run)
    monkeypatch.chdir(tmp_path)  # the default weights no longer depend on the working folder
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv + ["--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert reason in capsys.readouterr().err


def test_default_weights_are_the_bundle_s_wherever_it_runs(monkeypatch, tmp_path):
    """A missing relative default used to time an untrained network and report its bf16 fidelity."""
    seen = {}

    def record(weights, channels, repeats):
        seen["weights"] = weights
        raise SystemExit(0)

    monkeypatch.setattr(benchmark, "benchmark", record)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        benchmark.main(["--output", str(tmp_path)])
    assert seen["weights"].endswith("models/model.pt") and not seen["weights"].startswith(str(tmp_path))
