"""Tests for medsamkit.data.preprocess: every layout through the pipeline into a cache, the
sample contract (alignment, normalise == prepare_image), label cleanup, intensity choice,
resume, failures, settings checks, splits, parallel workers and the MedSAM npy export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import synthetic_datasets as synth
from medsamkit.data.cache import PreprocessedCache, case_dir
from medsamkit.data.case_arrays import read_case_arrays
from medsamkit.data.layouts import read_dataset
from medsamkit.data.case_samples import PreprocessSettings, choose_intensity
from medsamkit.data.preprocess import RunOptions, SplitSpec, preprocess_dataset
from medsamkit.errors import InputError
from medsamkit.io.geometry import Geometry
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.preprocessing.intensity import CTWindow, to_rgb_uint8

QUIET = RunOptions(progress=False)


def _run(source: Path, cache: Path, split: SplitSpec = SplitSpec(), options: RunOptions = QUIET,
         **settings):
    return preprocess_dataset(source, cache, PreprocessSettings(**settings), split, options)


def _original_rgb(source: Path, case_id: str, slice_index: int | None,
                  settings: PreprocessSettings) -> np.ndarray:
    """The intensity-scaled RGB slice the sample was made from, recomputed from the dataset."""
    ds = read_dataset(source)
    arrays = read_case_arrays(ds.get(case_id), ds.layout, ds.meta, settings.channel)
    scheme, _ = choose_intensity(arrays, settings, ds.meta)
    return to_rgb_uint8(scheme(arrays.image)[slice_index or 0])


def _tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)


def _check_samples(cache: PreprocessedCache, source: Path, settings: PreprocessSettings) -> None:
    """The Sample contract for every sample of ``cache``."""
    geometry = geometry_for(cache.family)
    size = cache.input_size
    for i in range(len(cache)):
        sample, record = cache[i], cache.record(i)
        h, w = sample.valid_size
        assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
        assert sample.mask.shape == (size, size) and set(np.unique(sample.mask)) == {0, 1}
        assert not sample.image[h:].any() and not sample.image[:, w:].any()  # zero padding
        assert not sample.mask[h:].any() and not sample.mask[:, w:].any()
        # the box (original mask's box mapped by the geometry) hugs the resized mask: within
        # one model pixel per original pixel (the nearest-neighbour cell) plus one
        H, W = record["original_size"]
        sx, sy = w / W, h / H
        tolerance = np.array([sx, sy, sx, sy]).clip(min=1.0) + 1.0
        assert np.all(np.abs(np.array(sample.box) - _tight_box(sample.mask)) <= tolerance), record
        rgb = _original_rgb(source, sample.case_id, sample.slice_index, settings)
        assert rgb.shape[:2] == (H, W)
        expected, frame = geometry.prepare_image(rgb)
        assert frame.resized_size == (h, w)
        torch.testing.assert_close(geometry.normalise(sample.image[:h, :w]), expected,
                                   rtol=0, atol=0)
        np.testing.assert_array_equal(geometry.boxes_to_model(
            np.array([record["box_original"]]), frame)[0].numpy(), np.array(sample.box, np.float32))


@pytest.mark.parametrize("layout", sorted(synth.BUILDERS))
def test_every_layout_through_the_pipeline(tmp_path: Path, layout: str) -> None:
    source = synth.BUILDERS[layout](tmp_path / "data")
    summary = _run(source, tmp_path / "cache")
    assert not summary.failed and summary.samples > 0 and summary.done
    cache = PreprocessedCache(tmp_path / "cache")
    assert cache.manifest["layout"] == layout and len(cache) == summary.samples
    _check_samples(cache, source, PreprocessSettings())


@pytest.mark.parametrize("model", ["medsam-vit-b", "sam-vit-b"])
def test_1024_families_keep_the_contract(tmp_path: Path, model: str) -> None:
    source = synth.kvasir(tmp_path / "data", n=2)
    _run(source, tmp_path / "cache", model=model)
    cache = PreprocessedCache(tmp_path / "cache")
    assert cache.input_size == 1024 and cache.family == model.split("-")[0]
    _check_samples(cache, source, PreprocessSettings(model=model))


def test_kvasir_boxes_match_gt_boxes_after_cleanup(tmp_path: Path) -> None:
    source = synth.kvasir(tmp_path / "data")
    _run(source, tmp_path / "cache")
    boxes = json.loads((source / "gt_boxes.json").read_text(encoding="utf-8"))
    records = PreprocessedCache(tmp_path / "cache").manifest["samples"]
    assert {r["case_id"]: r["box_original"] for r in records} == boxes  # pixel (0, 0) removed


def test_nnunet_ct_volume_window_cleanup_and_geometry(tmp_path: Path) -> None:
    source = synth.nnunet(tmp_path / "data", n=2)
    _run(source, tmp_path / "cache")
    cache = PreprocessedCache(tmp_path / "cache")
    case = cache.manifest["cases"]["case0"]
    assert "CT window abdomen" in case["intensity"] and "dataset.json channel 0 'CT'" in case["intensity"]
    assert Geometry(**case["geometry"]) == synth.VOLUME_GEOMETRY
    assert case["slices"] == [1, 2, 3, 4, 5, 6] and case["shape"] == [8, 40, 48]
    # label 2 (72 voxels) is below the 3D minimum of 1000: one sample per labelled slice
    assert [(r["slice"], r["label"]) for r in cache.manifest["samples"] if r["case_id"] == "case0"] \
        == [(z, 1) for z in range(1, 7)]
    assert cache.manifest["label_names"] == {"1": "liver", "2": "spot"}
    image, _ = synth.ct_volume(seed=0)
    expected = to_rgb_uint8(CTWindow(40, 400)(image[3]))  # independent of choose_intensity
    sample = next(cache[i] for i in range(len(cache)) if cache.record(i)["slice"] == 3)
    h, w = sample.valid_size
    np.testing.assert_array_equal(sample.image[:h, :w], geometry_for("litemedsam").resize_image(expected)[0])

    _run(source, tmp_path / "small", min_size_3d=10, min_size_2d=10)  # 36 px per slice
    labels = {r["label"] for r in PreprocessedCache(tmp_path / "small").manifest["samples"]}
    assert labels == {1, 2}


def test_channel_option_and_intensity_from_data_kind(tmp_path: Path, caplog) -> None:
    source = synth.nnunet(tmp_path / "data", n=1, channel_name="other", two_channels=True)
    with caplog.at_level("INFO"):
        _run(source, tmp_path / "cache", channel=1)
    case = PreprocessedCache(tmp_path / "cache").manifest["cases"]["case0"]
    assert case["sources"][0].endswith("case0_0001.nii.gz")
    assert "shift the minimum to 0" in case["intensity"] and "percentile clip" in case["intensity"]
    assert "intensity: shift the minimum to 0" in caplog.text  # the choice is logged


def test_all_slices_stores_every_slice_and_unlabelled_cases(tmp_path: Path) -> None:
    source = synth.nnunet(tmp_path / "data", n=2)
    (source / "labelsTr" / "case1.nii.gz").unlink()
    summary = _run(source, tmp_path / "labelled")
    assert summary.unlabelled == ["case1"] and summary.done == ["case0"]
    summary = _run(source, tmp_path / "all", all_slices=True)
    cache = PreprocessedCache(tmp_path / "all")
    assert cache.manifest["cases"]["case0"]["slices"] == list(range(8))
    assert cache.manifest["cases"]["case1"]["slices"] == list(range(8))
    assert cache.manifest["cases"]["case1"]["n_samples"] == 0
    assert len(cache) == len(PreprocessedCache(tmp_path / "labelled")) == 6
    zs, images = cache.case_images("case1")
    assert zs == list(range(8)) and images.shape == (8, 256, 256, 3) and images.any()


def test_resume_skips_done_cases_and_redoes_a_deleted_shard(tmp_path: Path) -> None:
    source = synth.folder_pairs(tmp_path / "data")
    first = _run(source, tmp_path / "cache")
    manifest = (tmp_path / "cache/manifest.json").read_text(encoding="utf-8")
    again = _run(source, tmp_path / "cache")
    assert again.done == [] and again.skipped == first.done
    shutil.rmtree(case_dir(tmp_path / "cache", "img1"))
    third = _run(source, tmp_path / "cache")
    assert third.done == ["img1"] and sorted(third.skipped) == ["img0", "img2"]
    assert (tmp_path / "cache/manifest.json").read_text(encoding="utf-8") == manifest


def test_bad_cases_are_reported_and_the_rest_is_done(tmp_path: Path) -> None:
    source = synth.folder_pairs(tmp_path / "data", n=4)
    (source / "images/img0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cv2.imwrite(str(source / "masks/img1.png"), np.zeros((5, 5), np.uint8))  # wrong size
    cv2.imwrite(str(source / "masks/img2.png"), np.zeros((74, 80), np.uint8))  # empty label
    summary = _run(source, tmp_path / "cache")
    assert sorted(summary.failed) == ["img0", "img1"] and summary.empty == ["img2"]
    assert summary.done == ["img3"] and summary.samples == 2  # img3 has labels 1 and 2
    assert "img0.png" in summary.failed["img0"] and "does not match" in summary.failed["img1"]
    manifest = PreprocessedCache(tmp_path / "cache").manifest
    assert set(manifest["cases"]) == {"img2", "img3"} and manifest["cases"]["img2"]["n_samples"] == 0
    synth.folder_pairs(tmp_path / "fixed", n=4)
    shutil.copy(tmp_path / "fixed/images/img0.png", source / "images/img0.png")
    rerun = _run(source, tmp_path / "cache")
    assert rerun.done == ["img0"] and sorted(rerun.skipped) == ["img2", "img3"]


def test_changed_settings_are_refused_unless_overwrite(tmp_path: Path) -> None:
    source = synth.folder_pairs(tmp_path / "data")
    _run(source, tmp_path / "cache")
    with pytest.raises(InputError, match=r"other settings \(min_size_2d 100 -> 50\); use a new "
                                         r"folder or --overwrite"):
        _run(source, tmp_path / "cache", min_size_2d=50)
    with pytest.raises(InputError, match="family 'litemedsam' -> 'medsam'"):
        _run(source, tmp_path / "cache", model="medsam-vit-b")
    summary = _run(source, tmp_path / "cache", options=RunOptions(progress=False, overwrite=True),
                   min_size_2d=50)
    assert len(summary.done) == 3 and PreprocessedCache(tmp_path / "cache").manifest[
        "settings"]["min_size_2d"] == 50
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(InputError, match="not a preprocess cache and is not empty"):
        _run(source, tmp_path / "other")
    with pytest.raises(InputError, match="must not be inside the input dataset"):
        _run(source, source / "cache")
    with pytest.raises(InputError, match="cannot read CT window 'wide'"):
        _run(source, tmp_path / "refused", window="wide")
    assert not (tmp_path / "refused").exists()  # refused before anything is written


def test_settings_of_a_cache_without_shards_can_change(tmp_path: Path) -> None:
    source = synth.folder_pairs(tmp_path / "data", n=2)
    for name in ("img0", "img1"):
        (source / f"images/{name}.png").write_bytes(b"broken")
    assert len(_run(source, tmp_path / "cache").failed) == 2  # settings.json, no shard
    synth.folder_pairs(tmp_path / "fixed", n=2)
    for name in ("img0", "img1"):
        shutil.copy(tmp_path / f"fixed/images/{name}.png", source / f"images/{name}.png")
    assert len(_run(source, tmp_path / "cache", min_size_2d=50).done) == 2


def test_splits_from_file_random_and_grouped_by_volume(tmp_path: Path) -> None:
    source = synth.folder_pairs(tmp_path / "data", n=5)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["img0", "img1", "img2"], "val": ["img4"]}), encoding="utf-8")
    _run(source, tmp_path / "cache", SplitSpec(file=split_file))
    cache = PreprocessedCache(tmp_path / "cache")
    assert json.loads((tmp_path / "cache/splits.json").read_text(encoding="utf-8")) == {
        "train": ["img0", "img1", "img2"], "val": ["img4"]}
    assert cache.manifest["cases"]["img3"]["split"] is None
    assert {cache[i].case_id for i in cache.indices("val")} == {"img4"}
    # a new split is a manifest rewrite: no case is redone
    summary = _run(source, tmp_path / "cache", SplitSpec(fraction=0.6, seed=1))
    assert summary.done == [] and summary.manifest["counts"]["cases_per_split"] == {"train": 3, "val": 2}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["ghost"], "val": []}), encoding="utf-8")
    with pytest.raises(InputError, match="1 ids name no case"):
        _run(source, tmp_path / "cache", SplitSpec(file=bad))
    # MedSAM npy slices of one volume stay together
    npy = synth.medsam_npy(tmp_path / "npy")
    for name in ("MR_vol2-001", "MR_vol2-002"):
        shutil.copy(npy / "imgs/MR_vol1-003.npy", npy / f"imgs/{name}.npy")
        shutil.copy(npy / "gts/MR_vol1-003.npy", npy / f"gts/{name}.npy")
    manifest = _run(npy, tmp_path / "npy-cache", SplitSpec(fraction=0.5)).manifest
    by_volume = {}
    for case_id, case in manifest["cases"].items():
        by_volume.setdefault(case_id.rsplit("-", 1)[0], set()).add(case["split"])
    assert sorted(map(sorted, by_volume.values())) == [["train"], ["val"]]


def test_two_workers_write_the_same_cache_as_one(tmp_path: Path) -> None:
    source = synth.nnunet(tmp_path / "data", n=2)
    _run(source, tmp_path / "one")
    summary = _run(source, tmp_path / "two", options=RunOptions(workers=2, progress=False))
    assert not summary.failed and summary.done == ["case0", "case1"]
    assert (tmp_path / "one/manifest.json").read_text(encoding="utf-8") == (tmp_path / "two/manifest.json").read_text(encoding="utf-8")
    for case in ("case0", "case1"):
        for name in ("images.npy", "masks.npy"):
            assert (case_dir(tmp_path / "one", case) / name).read_bytes() == \
                (case_dir(tmp_path / "two", case) / name).read_bytes()


def test_medsam_npy_export_and_read_back(tmp_path: Path) -> None:
    source = synth.nnunet(tmp_path / "data", n=1)
    _run(source, tmp_path / "cache", model="medsam-vit-b")
    export = tmp_path / "npy"
    summary = _run(source, tmp_path / "cache", model="medsam-vit-b",
                   options=RunOptions(progress=False, export_medsam_npy=export))
    assert summary.done == ["case0"]  # the existing shard lacked the export: redone
    names = sorted(p.stem for p in (export / "imgs").glob("*.npy"))
    assert names == [f"case0-{z:03d}" for z in range(1, 7)]
    image, gts = np.load(export / "imgs/case0-003.npy"), np.load(export / "gts/case0-003.npy")
    assert image.shape == (1024, 1024, 3) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0
    assert gts.shape == (1024, 1024) and gts.dtype == np.uint8 and set(np.unique(gts)) == {0, 1}
    assert _run(source, tmp_path / "cache", model="medsam-vit-b",
                options=RunOptions(progress=False, export_medsam_npy=export)).skipped == ["case0"]

    # read back with the medsam-npy layout: the same masks and boxes, images within 1/255
    back = read_dataset(export)
    assert back.layout == "medsam-npy" and back.cases[0].extra == {"volume": "case0", "slice": 1}
    _run(export, tmp_path / "back", model="medsam-vit-b", min_size_2d=0)
    original, reread = PreprocessedCache(tmp_path / "cache"), PreprocessedCache(tmp_path / "back")
    assert len(original) == len(reread) == 6
    geometry = geometry_for("medsam")
    for i in range(6):
        a, b = original[i], reread[i]
        assert b.case_id == f"case0-{a.slice_index:03d}" and a.label == b.label
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(geometry.normalise(a.image), geometry.normalise(b.image),
                                   atol=1 / 255 + 1e-6)
