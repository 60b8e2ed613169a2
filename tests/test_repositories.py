"""Repository collections: read at a pinned commit from a mirror folder, written once as corpus PNGs."""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_dpe.data.corpus import CorpusReport, build_collection
from monai_dpe.data.datalist import write_datalist
from monai_dpe.data.photos import decode_photo
from monai_dpe.data.repositories import RepositoryCollection, list_members, open_repository


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def mirror(tmp_path):
    """A mirror folder holding ``owner+images/repo`` (a work tree, loose objects) with five images at one commit."""
    mirrors = tmp_path / "mirrors"
    work = mirrors / "owner+images" / "repo"
    (work / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    grey_as_rgb = np.repeat(rng.integers(0, 256, (40, 30, 1), dtype=np.uint8), 3, axis=-1)
    files = {
        "data/a_rgb.png": _png(rng.integers(0, 256, (600, 300, 3), dtype=np.uint8)),
        "data/b_grey_as_rgb.png": _png(grey_as_rgb),
        "data/c_16bit.png": _png(rng.integers(0, 65536, (64, 48), dtype=np.uint16)),
        "data/d_rgba.png": _png(np.dstack([np.full((32, 32, 3), 200, np.uint8), np.full((32, 32), 0, np.uint8)])),
        "data/e_broken.png": b"not an image",
        "notes.txt": b"not matched",
    }
    for name, data in files.items():
        (work / name).write_bytes(data)
    _git("init", "-q", cwd=work)
    _git("add", ".", cwd=work)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "images", cwd=work)
    return mirrors, _git("rev-parse", "HEAD", cwd=work)


def _collection(commit: str, **kw) -> RepositoryCollection:
    return RepositoryCollection(**{"name": "toy_collection", "modality": "histology", "repo": "owner/images",
                                   "commit": commit, "patterns": ("data/*.png",), "licence": "CC0-1.0",
                                   "attribution": "test", "split": "training", **kw})


def test_collection_builds_pngs_grey_colour_and_16_bit_and_reports_the_broken_file(mirror, tmp_path):
    mirrors, commit = mirror
    report = CorpusReport(tmp_path / "corpus")
    build_collection(_collection(commit), report.output_dir, report, mirrors=mirrors, progress=False)
    by_name = {e.name.split("/")[1]: e for e in report.built}
    assert set(by_name) == {"data_a_rgb", "data_b_grey_as_rgb", "data_c_16bit", "data_d_rgba"}
    assert by_name["data_a_rgb"].info.channels == 3
    assert by_name["data_a_rgb"].info.spatial_shape in ((256, 512), (512, 256))  # longest side 600 -> 512
    assert by_name["data_b_grey_as_rgb"].info.channels == 1  # equal channels stored as grey
    stored = np.asarray(Image.open(report.output_dir / by_name["data_c_16bit"].relpath))
    assert stored.dtype in (np.uint16, np.int32) and stored.max() > 255  # 16-bit kept
    assert all(e.source == "toy_collection" and e.split == "training" for e in report.built)
    assert list(report.failed) == ["toy_collection"] and "e_broken.png" in report.failed["toy_collection"]
    again = CorpusReport(report.output_dir)
    build_collection(_collection(commit), again.output_dir, again, mirrors=mirrors, progress=False)
    assert not again.built and len(again.skipped) == 4  # idempotent


def test_datalist_keeps_the_collection_as_source_and_each_image_named(mirror, tmp_path):
    mirrors, commit = mirror
    report = CorpusReport(tmp_path / "corpus")
    build_collection(_collection(commit, split="test"), report.output_dir, report, mirrors=mirrors, progress=False)
    datalist = write_datalist(report, tmp_path / "datalist.json")
    assert not datalist["training"] and len(datalist["test"]) == 4
    assert {item["source"] for item in datalist["test"]} == {"toy_collection"}
    assert len({item["name"] for item in datalist["test"]}) == 4


def test_limit_thins_evenly_in_path_order(mirror):
    mirrors, commit = mirror
    collection = _collection(commit, limit=2)
    members = list_members(open_repository(collection, mirrors), collection)
    assert [m.path for m in members] == ["data/a_rgb.png", "data/c_16bit.png"]


def test_missing_mirror_or_commit_fails_in_one_line(mirror, tmp_path):
    mirrors, commit = mirror
    for collection in (_collection(commit, repo="owner/absent"), _collection("0" * 40)):
        report = CorpusReport(tmp_path / "corpus")
        build_collection(collection, report.output_dir, report, mirrors=mirrors, progress=False)
        assert not report.built and len(report.failed) == 1
        assert "\n" not in report.failed["toy_collection"]


def test_blob_absent_from_the_mirror_is_skipped_and_counted(mirror, tmp_path):
    mirrors, commit = mirror
    git_dir = mirrors / "owner+images" / "repo" / ".git"
    blob = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", f"{commit}:data/a_rgb.png"],
                          check=True, capture_output=True, text=True).stdout.strip()
    loose = git_dir / "objects" / blob[:2] / blob[2:]
    if not loose.is_file():
        pytest.skip("the clone packed its objects")
    loose.unlink()
    report = CorpusReport(tmp_path / "corpus")
    build_collection(_collection(commit), report.output_dir, report, mirrors=mirrors, progress=False)
    assert report.absent == {"toy_collection": 1}
    assert len(report.built) == 3


def test_bare_mirror_named_by_the_environment(mirror, tmp_path, monkeypatch):
    mirrors, commit = mirror
    bare = tmp_path / "bare_mirrors"
    _git("clone", "-q", "--bare", str(mirrors / "owner+images" / "repo"), str(bare / "owner+images" / "repo"),
         cwd=tmp_path)
    monkeypatch.setenv("MONAI_DPE_GIT_MIRRORS", str(bare))
    collection = _collection(commit)
    git_dir = open_repository(collection)
    assert git_dir == bare / "owner+images" / "repo"
    assert len(list_members(git_dir, collection)) == 5


def test_decode_photo_refuses_non_images_in_one_line():
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        decode_photo(b"junk", "x.png")


def test_licence_table_names_every_source_and_training_licences_allow_sharing_weights():
    from monai_dpe.data.licences import licence_table
    from monai_dpe.data.sources import COLLECTIONS, SOURCES

    table = licence_table()
    allowed = ("MIT", "BSD", "Apache", "CC0", "CC-BY", "NIH Clinical Center: no restrictions")
    for source in (*SOURCES, *COLLECTIONS):
        assert source.name in table
        if source.split == "training":
            assert source.licence.startswith(allowed), f"{source.name}: {source.licence}"
