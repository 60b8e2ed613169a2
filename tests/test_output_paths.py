"""Outputs stay inside the output folder and inputs are only ever read.

Names derived from inputs with ``..``, absolute paths or symlinks that lead out are refused;
an in-process run under a Python audit hook proves no input is opened for writing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from monai_dpe.engines.planning import plan_outputs
from monai_dpe.transforms import LoadDisplayImaged, SaveEnhancedd, UnsafeOutputPath, output_path
from helpers import BUNDLE, TINY_CHANNELS, run_cli, smooth, tiny_weights


def write_png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((smooth((24, 28), np.random.default_rng(seed)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("relpath", ["../x.png", "a/../../x.png", "/etc/x.png", "a/../b/../../x.png", ""])
def test_names_that_climb_out_or_are_absolute_are_refused(tmp_path, relpath):
    with pytest.raises(UnsafeOutputPath, match="escape"):
        output_path(tmp_path / "out", relpath)


def test_symlinked_folder_in_the_output_leading_out_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "sub")
    with pytest.raises(UnsafeOutputPath, match="leads outside"):
        output_path(tmp_path / "out", "sub/a.png")
    assert output_path(tmp_path / "out", "other/a.png") == (tmp_path / "out" / "other" / "a.png").resolve()


def test_symlinked_output_file_leading_out_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    victim = write_png(tmp_path / "victim.png")
    os.symlink(victim, tmp_path / "out" / "a.png")
    with pytest.raises(UnsafeOutputPath, match="leads outside"):
        output_path(tmp_path / "out", "a.png")
    planned = plan_outputs([{"image": str(victim), "relpath": "a.png"}], tmp_path / "out", overwrite=True)
    assert "leads outside" in planned[0]["error"]


def test_cli_never_writes_through_a_symlink_out_of_the_output(tiny_bundle, tmp_path):  # noqa: F811
    """A planted ``out/sub -> outside`` link: that file fails with one line, the others are enhanced, nothing lands outside."""
    write_png(tmp_path / "in" / "sub" / "a.png", 1)
    write_png(tmp_path / "in" / "b.png", 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(outside, tmp_path / "out" / "sub")
    proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 1
    assert [line for line in proc.stderr.splitlines() if "in/sub/a.png" in line and "leads outside" in line]
    assert (tmp_path / "out" / "b.png").is_file()
    assert not any(outside.iterdir())


def test_inputs_are_opened_read_only(tmp_path):
    """Every Python-level open of an input during a run is read-only (audited with ``sys.addaudithook``)."""
    inputs = [write_png(tmp_path / "in" / f"img{i}.png", i) for i in range(3)]
    watched = {str(p.resolve()) for p in inputs}
    writes: list[tuple[str, object]] = []
    seen: set[str] = set()

    def audit(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(args[0]))
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC | os.O_CREAT))
            if path in watched:
                seen.add(path)
                if writing:
                    writes.append((path, mode))

    sys.addaudithook(audit)  # hooks cannot be removed; this one only records opens of this test's files
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "dataset_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out"),
                   "weights_path": str(tiny_weights(tmp_path / "tiny.pt")), "channels": list(TINY_CHANNELS),
                   "progress": False})
    parser.get_parsed_content("initialize")
    evaluator = parser.get_parsed_content("evaluator")
    evaluator.run()
    assert len(evaluator.state.enhanced) == 3
    assert seen == watched  # the hook saw every input being opened (so it would have seen a write)
    assert writes == []
    watched.clear()


def test_the_plan_records_each_items_output_and_panel_and_the_writers_use_them(tmp_path):
    from monai_dpe.keys import ItemKeys
    from monai_dpe.visualize import SaveComparisond

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "a.png")
    [item] = plan_outputs([{"image": str(tmp_path / "a.png"), "relpath": "a.png"}], tmp_path / "out", comparison=True)
    assert item[ItemKeys.OUTPUT_PATH] == str(output_path(tmp_path / "out", "a.png"))
    assert item[ItemKeys.PANEL_PATH] == str(tmp_path / "out" / "a.png_comparison.png")
    # the writers follow the plan, not a path of their own
    elsewhere = tmp_path / "out" / "planned" / "b.png"
    panel = tmp_path / "out" / "planned" / "b_panel.png"
    planned = {**item, ItemKeys.OUTPUT_PATH: str(elsewhere), ItemKeys.PANEL_PATH: str(panel)}
    loaded = LoadDisplayImaged("image", image_only=True, ensure_channel_first=True, dtype=None)(planned)
    loaded["pred"] = loaded["image"].clone()
    saved = SaveEnhancedd("pred", output_dir=tmp_path / "out")(loaded)
    assert saved[ItemKeys.OUTPUT_PATH] == str(elsewhere) and elsewhere.exists()
    assert not (tmp_path / "out" / "a.png").exists(), "not the path the writer would have made itself"
    SaveComparisond("pred")(saved)
    assert panel.exists()


def test_a_planned_output_outside_the_output_folder_is_refused(tmp_path):
    """A datalist may carry output_path; the writer keeps to its output folder as plan_outputs does."""
    from monai_dpe.keys import ItemKeys

    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(tmp_path / "a.png")
    item = {"image": str(tmp_path / "a.png"), "relpath": "a.png", ItemKeys.OUTPUT_PATH: str(tmp_path / "elsewhere" / "a.png")}
    loaded = LoadDisplayImaged("image", image_only=True, ensure_channel_first=True, dtype=None)(item)
    loaded["pred"] = loaded["image"].clone()
    with pytest.raises(UnsafeOutputPath, match="outside the output folder"):
        SaveEnhancedd("pred", output_dir=tmp_path / "out")(loaded)
    assert not (tmp_path / "elsewhere").exists()


def test_a_source_replaced_in_place_with_its_mtime_kept_is_read_again(tmp_path):
    import nibabel as nib

    from monai_dpe.transforms.io import _source_nifti_header

    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    first = _source_nifti_header(path).get_qform()
    stamp = path.stat()
    moved = np.diag([2.0, 2.0, 2.0, 1.0])
    replacement = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), moved), replacement)
    os.replace(replacement, path)  # a new file (inode) under the old name
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # as cp -p or rsync -t keep it
    assert np.allclose(first, np.eye(4)) and np.allclose(_source_nifti_header(path).get_qform(), moved)


def test_an_output_that_is_another_inputs_comparison_panel_is_refused(tmp_path):
    """``a.png_comparison.png`` beside ``a.png``: its output would replace a.png's panel, in either order."""
    from monai_dpe.keys import ItemKeys

    items = [{"image": str(tmp_path / name), "relpath": name} for name in ("a.png", "a.png_comparison.png")]
    first, second = plan_outputs(items, tmp_path / "out", comparison=True, overwrite=True)
    assert ItemKeys.ERROR not in first
    assert second[ItemKeys.ERROR] == (f"output {tmp_path / 'out' / 'a.png_comparison.png'} is also the comparison "
                                      f"panel of {items[0]['image']} (same name)")
    first, second = plan_outputs(items[::-1], tmp_path / "out", comparison=True, overwrite=True)
    assert ItemKeys.ERROR not in first
    assert second[ItemKeys.ERROR] == (f"comparison panel {tmp_path / 'out' / 'a.png_comparison.png'} is also the "
                                      f"output of {items[1]['image']} (same name)")


def test_a_summary_that_is_an_output_is_refused_before_any_work(tiny_bundle, tmp_path):  # noqa: F811
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth((32, 32), np.random.default_rng(3)).__mul__(255).astype(np.uint8)).save(tmp_path / "in" / "g.png")
    for summary, what in (("out/g.png", "output"), ("out/g.png_comparison.png", "comparison panel")):
        proc = run_cli("in", "-o", "out", "--bundle", str(tiny_bundle), "--no-progress", "--save-comparison",
                       "--summary", summary, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr  # before: exit 0, and out/g.png held the summary's JSON
        assert proc.stderr.strip() == f"monai-dpe: error: --summary {summary} is also the {what} of in/g.png: choose another file"
        assert not (tmp_path / "out").exists()


def test_an_input_that_a_link_leads_into_the_output_folder_is_not_enhanced_again(tmp_path):
    from monai_dpe.data.discovery import find_images
    from monai_dpe.keys import ItemKeys

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "in" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "out" / "a.png")  # last run's output
    (tmp_path / "in" / "results").symlink_to(tmp_path / "out")
    planned = {item[ItemKeys.RELPATH]: item for item in plan_outputs(find_images(tmp_path / "in"), tmp_path / "out")}
    assert planned["a.png"][ItemKeys.ERROR].endswith("already exists (pass --overwrite to replace it)")
    assert planned["results/a.png"][ItemKeys.ERROR] == (f"lies in the output folder {tmp_path / 'out'}: "
                                                        "outputs are not enhanced again")
