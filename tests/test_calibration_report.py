"""The split-half report of ``monai-dpe bundle calibrate``: its halves, its table and its refusals."""
from __future__ import annotations

import json

from monai_dpe.reports.calibration import calibration_table, halves, main, write_table


def _item(source: str, index: int, dims: int = 2) -> dict:
    return {"image": f"{source}/{index:02d}.png", "source": source, "spatial_dims": dims}


def test_halves_alternate_in_name_order_and_skip_small_sources_and_volumes():
    items = [_item("smear", i) for i in (5, 0, 3, 1, 4, 2)] + [_item("tiny", i) for i in range(3)]
    items += [_item("volumes", i, dims=3) for i in range(8)]
    found = halves(items, min_images=6)
    assert list(found) == ["smear"]
    first, second = found["smear"]
    assert [i["image"] for i in first] == ["smear/00.png", "smear/02.png", "smear/04.png"]
    assert [i["image"] for i in second] == ["smear/01.png", "smear/03.png", "smear/05.png"]


def _image(name: str, preset: str, psnr: float, delta_e: float, structure: float, rgb: bool = True,
           baselines: dict | None = None) -> dict:
    image = {"name": name, "source": name.split("/")[0], "preset": preset, "psnr": psnr, "delta_e": delta_e,
             "structure_psnr": structure, "rgb": rgb}
    return image if baselines is None else {**image, "baselines": baselines}


def test_table_pairs_each_calibrated_image_with_the_same_image_of_the_reference(tmp_path):
    def baselines(stretch: float, structure: float) -> dict:
        return {"stretch": {"psnr": stretch}, "input": {"structure_psnr": structure}}

    reference = {"images": [_image("smear/a", "paper", 20.0, 8.0, 40.0, baselines=baselines(18.0, 39.0)),
                            _image("smear/b", "paper", 22.0, 6.0, 41.0, baselines=baselines(19.0, 40.0)),
                            _image("grey/c", "paper", 30.0, 1.0, 42.0, rgb=False, baselines=baselines(25.0, 43.0)),
                            _image("smear/a", "clean", 60.0, 0.1, 60.0)]}
    calibrated = [{"images": [_image("smear/a", "paper", 24.0, 5.0, 40.0),
                              _image("smear/a", "clean", 59.0, 0.2, 60.0)]},
                  {"images": [_image("smear/b", "paper", 26.0, 4.0, 41.0),
                              _image("grey/c", "paper", 31.0, 1.0, 42.4, rgb=False)]}]
    table = calibration_table(reference, calibrated)
    smear, everything = table["paper"]["smear"], table["paper"]["all"]
    assert smear["n"] == 2 and smear["shipped"] == 21.0 and smear["calibrated"] == 25.0 and smear["stretch"] == 18.5
    assert smear["shipped_delta_e"] == 7.0 and smear["calibrated_delta_e"] == 4.5
    assert everything["n"] == 3 and everything["calibrated_delta_e"] == 4.5  # DeltaE: colour images only
    assert everything["floor_failures"] == 1  # grey/c: 42.4, 0.6 dB below its input's 43.0
    assert table["clean"]["smear"]["calibrated"] == 59.0
    assert list(table["paper"]) == ["grey", "smear", "all"] and list(table) == ["paper", "clean"]  # "all" last
    write_table(table, tmp_path / "table.md", "info")
    text = (tmp_path / "table.md").read_text()
    assert "| smear | 2 | 18.50 | 21.00 | 25.00 | 7.00 | 4.50 |" in text
    assert json.loads((tmp_path / "table.json").read_text())["paper"]["all"]["n"] == 3


def test_the_command_refuses_a_missing_reference_and_a_split_without_sources(tmp_path):
    missing = ["--reference", str(tmp_path / "none.json"), "--output", str(tmp_path / "out")]
    assert main(missing) == 2
    reference = tmp_path / "metrics.json"
    reference.write_text(json.dumps({"seed": 0, "images": []}))
    assert main(["--split", "test", "--reference", str(reference), "--output", str(tmp_path / "out"),
                 "--min-images", "1000"]) == 2
    assert not (tmp_path / "out").exists()
