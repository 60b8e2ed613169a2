"""monai_dpe.reports.curves: validation curves read from bundle training logs."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from monai_dpe.reports.curves import main, read_validation_log

LOG = """\
2026-11-26 06:14:41,001 - INFO - Epoch[1] Complete. Time taken: 00:00:15.0
2026-11-26 06:14:41,002 - INFO - Epoch[1] Metrics -- train_loss: 0.0871 
2026-11-26 06:14:57,739 - INFO - Epoch[1] Metrics -- val_delta_e: 5.6200 val_psnr: 23.9339 val_ssim: 0.7387 
2026-11-26 06:14:57,739 - INFO - Key metric: val_psnr best value: 23.93 at epoch: 1
2026-11-26 06:15:13,803 - INFO - Epoch[2] Metrics -- val_delta_e: 5.3009 val_psnr: 2.46070e+01 val_ssim: 0.7608 
2026-11-26 06:15:13,804 - INFO - Epoch[2] Metrics -- train_loss: 0.0815 
"""


def test_reads_each_validation_line_as_iterations_and_metrics(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    records = read_validation_log(log, epoch_length=250)
    assert records == [
        {"iteration": 250, "val_delta_e": 5.62, "val_psnr": 23.9339, "val_ssim": 0.7387},
        {"iteration": 500, "val_delta_e": 5.3009, "val_psnr": 24.607, "val_ssim": 0.7608},
    ]


def test_a_log_without_validation_lines_is_refused_naming_the_file(tmp_path):
    log = tmp_path / "empty.log"
    log.write_text("2026-11-26 - INFO - Epoch[1] Complete.\n")
    with pytest.raises(ValueError, match="empty.log"):
        read_validation_log(log, 100)


def test_cli_writes_the_figure_and_the_points(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    out = tmp_path / "figs" / "curves.png"
    references = ["--reference", "shipped=24.0", "--reference", "shipped=val_ssim:0.75"]
    assert main(["--run", f"run a={log}:100", *references, "--output", str(out)]) == 0
    assert Image.open(out).size[0] > 1200  # three panels: PSNR, SSIM, DeltaE
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["iteration"] for r in saved["runs"]["run a"]] == [100, 200]
    assert saved["references"] == {"val_psnr": {"shipped": 24.0}, "val_ssim": {"shipped": 0.75}}

    with pytest.raises(SystemExit) as stop:
        main(["--run", f"run b={tmp_path / 'missing.log'}:100", "--output", str(tmp_path / "x.png")])
    assert stop.value.code == 2 and "missing.log" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("reference, reason", [("x=val_dice:0.9", "metric 'val_dice'"), ("x=val_ssim:high", "not a number")])
def test_cli_a_reference_it_cannot_draw_is_one_line(tmp_path, capsys, reference, reason):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    with pytest.raises(SystemExit) as stop:
        main(["--run", f"r={log}:100", "--reference", reference, "--output", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and reason in err and "Traceback" not in err
    assert not (tmp_path / "c.png").exists()


def test_cli_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as stop:
        main(["--run", f"r={log}:100", "--output", str(blocker / "figs" / "c.png")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"--output {blocker / 'figs' / 'c.png'}: cannot create its folder" in err
    assert "Traceback" not in err
