"""`python -m monai_dpe.reports.benchmark` refuses bad arguments before minutes of timing, with one line each, and
states the speed targets' figures in its report."""
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


def test_report_states_the_end_to_end_rate_against_the_matmul_rate_auto_runs_in(tmp_path):
    from monai_dpe.reports.benchmark import write_report

    results = {"machine": {"cpu": "x86_64", "cores": 2, "threads": 2, "flags": "avx512_bf16", "torch": "t", "cuda": False},
               "channels": [32], "repeats": 1, "matmul_gflops_fp32": 100.0, "matmul_gflops_bf16": 400.0,
               "auto_backend": "bf16", "volume_256x256x150_s": 1.0, "peak_rss_mb": 1.0,
               "slices": [{"backend": "bf16", "size": 256, "batch": 1, "ms_per_slice": 40.0, "gflop_per_slice": 12.0,
                           "gflops": 300.0}],
               "end_to_end": [{"shape": [256, 256, 150], "options": [], "seconds": 9.0, "peak_rss_mb": 1.0},
                              {"shape": [256, 256, 600], "options": [], "seconds": 30.0, "peak_rss_mb": 1.0}]}
    write_report(results, tmp_path)
    text = (tmp_path / "speed.md").read_text()
    # 150 slices x 12 GFLOP = 1800 GFLOP in 9 s = 200 GFLOP/s = 50% of 400
    assert "1800 GFLOP of network in 9.0 s, 200 GFLOP/s: 50% of this run's bf16 matmul rate" in text
    assert "3.33x the time" in text
    write_report({**results, "bundle_channels": [64]}, tmp_path)  # timed widths are not the bundle's
    assert "of network in" not in (tmp_path / "speed.md").read_text()


def test_report_states_the_start_up_floor_and_the_scaling_without_it(tmp_path):
    from monai_dpe.reports.benchmark import write_report

    results = {"machine": {"cpu": "x86_64", "cores": 2, "threads": 2, "flags": "avx2", "torch": "t", "cuda": False},
               "channels": [32], "repeats": 1, "matmul_gflops_fp32": 100.0, "matmul_gflops_bf16": 400.0,
               "auto_backend": "onnx", "volume_256x256x150_s": 1.0, "peak_rss_mb": 1.0,
               "slices": [{"backend": "onnxruntime", "size": 256, "batch": 1, "ms_per_slice": 40.0,
                           "gflop_per_slice": 12.0, "gflops": 300.0},
                          {"backend": "onnxruntime", "size": 256, "batch": 8, "ms_per_slice": 90.0,
                           "gflop_per_slice": 12.0, "gflops": 133.0}],
               "start_up": {"import_s": 4.0}, "blend_ms_per_slice": {"256": 10.0, "512": 40.0},
               "end_to_end": [{"shape": [256, 256, 150], "options": [], "seconds": 12.0, "peak_rss_mb": 1.0},
                              {"shape": [256, 256, 600], "options": [], "seconds": 36.0, "peak_rss_mb": 1.0}]}
    write_report(results, tmp_path)
    text = (tmp_path / "speed.md").read_text()
    assert "Less the start-up, 150 -> 600 slices take 4.00x the time." in text  # (36 - 4) / (12 - 4)
    # the one-slice row of the backend auto runs (onnx is timed as onnxruntime), not the batch of 8
    assert ("150 slices at `onnxruntime`'s one-slice rate and the blend's Wiener filter on each (10.0 ms a slice; "
            "40.0 ms at 512x512), 4.0 + 6.0 + 1.5 = 11.5 s (measured end to end: 12.0 s)") in text
