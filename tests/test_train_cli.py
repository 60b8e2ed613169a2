"""``monai-dpe train``'s command line (monai_dpe.train_cli): bundle overrides, its own options among them, and
where datalist entries resolve. The training runs it starts are in test_training.py."""
from __future__ import annotations

import pytest

from monai_dpe.cli import build_parser
from monai_dpe.train_cli import _rescue_own_options, _settings, parse_overrides


def test_parse_overrides_reads_both_forms_as_the_bundle_runner_does():
    assert parse_overrides(["max_epochs=3", "channels=[8,16]", "--device", "cpu", "--resume=true", "x=null"]) == {
        "max_epochs": 3, "channels": [8, 16], "device": "cpu", "resume": True, "x": None}
    assert parse_overrides(["--", "--lr", "1e-3"]) == {"lr": 0.001}
    for bad in (["max_epochs"], ["--max_epochs"], ["=3"]):
        with pytest.raises(ValueError):
            parse_overrides(bad)


def test_train_options_after_overrides_are_the_commands_own():
    """argparse hands every token after the first KEY=VALUE to the overrides: the command's own options
    there must still be honoured (a --bundle there used to train the default bundle), and ``--`` keeps
    the bundle's own flags (``-- --resume true``) as overrides."""
    args = build_parser().parse_args(["train", "max_epochs=1", "--bundle", "b", "--folder", "f",
                                      "--validation-fraction", "0.5", "--skip-bad", "channels=[8,8]"])
    assert _rescue_own_options(args) == ["max_epochs=1", "channels=[8,8]"]
    assert (args.bundle, args.folder, args.validation_fraction, args.skip_bad, args.resume) == ("b", "f", 0.5, True, False)
    args = build_parser().parse_args(["train", "max_epochs=1", "--", "--resume", "true", "--bundle_root", "x"])
    assert parse_overrides(_rescue_own_options(args)) == {"max_epochs": 1, "resume": True, "bundle_root": "x"}
    assert args.bundle is None and not args.resume


def test_train_datalist_entries_are_relative_to_the_datalist_unless_dataset_dir_says(tmp_path):
    """As MONAI's load_decathlon_datalist has it; they resolved against BUNDLE/../corpus."""
    datalist = tmp_path / "study" / "datalist.json"
    args = build_parser().parse_args(["train", "--datalist", str(datalist)])
    assert _settings(args, tmp_path / "bundle")["dataset_dir"] == str(datalist.parent.resolve())
    args = build_parser().parse_args(["train", "--datalist", str(datalist), "--dataset-dir", str(tmp_path / "images")])
    assert _settings(args, tmp_path / "bundle")["dataset_dir"] == str((tmp_path / "images").resolve())
    assert "dataset_dir" not in _settings(build_parser().parse_args(["train"]), tmp_path / "bundle"), "corpus default"
