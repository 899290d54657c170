"""Tests for medsamkit.data.case_samples: intensity choice, one case -> shard, per-case errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import synthetic_datasets as synth
from medsamkit.data.cache import PreprocessedCache, read_case_record
from medsamkit.data.case_arrays import CaseArrays
from medsamkit.data.case_samples import (
    CaseJob,
    PreprocessSettings,
    ShiftToZero,
    choose_intensity,
    modality_from_channel_name,
    process_case,
)
from medsamkit.data.layouts import read_dataset
from medsamkit.io.geometry import Geometry
from medsamkit.preprocessing.intensity import CTWindow, Identity, PercentileClip


def _arrays(image: np.ndarray, kind: str) -> CaseArrays:
    return CaseArrays(image, None, image.ndim == 3, Geometry.identity(), kind)


def test_modality_from_channel_names() -> None:
    names = ["CT", "ct", "T2", "T1c", "FLAIR", "MRI", "cine-MR", "US", "PET", "noise", "", None]
    assert [modality_from_channel_name(n) for n in names] == [
        "ct", "ct", "mr", "mr", "mr", "mr", "mr", "us", "pet", None, None, None]


def test_choose_intensity_by_option_dataset_json_and_kind() -> None:
    hu = np.linspace(-1000, 1000, 2 * 8 * 8).reshape(2, 8, 8).astype(np.int16)
    ct_meta = {"channel_names": {"0": "CT"}}
    scheme, text = choose_intensity(_arrays(hu, "grey16"), PreprocessSettings(), ct_meta)
    assert scheme == CTWindow.preset("abdomen") and "dataset.json channel 0 'CT'" in text
    scheme, text = choose_intensity(_arrays(hu, "grey16"), PreprocessSettings(window="lung"), ct_meta)
    assert scheme == CTWindow.preset("lung") and "window 'lung'" in text
    scheme, text = choose_intensity(_arrays(hu, "grey16"), PreprocessSettings(modality="mr"), ct_meta)
    assert "shift the minimum to 0" in text and "modality from --modality" in text
    np.testing.assert_array_equal(scheme(hu), PercentileClip()(hu - hu.min()))
    positive = np.abs(hu).astype(np.float32)
    scheme, text = choose_intensity(_arrays(positive, "float"), PreprocessSettings(), {})
    assert scheme == PercentileClip() and "modality from data kind" in text
    rgb = np.zeros((1, 4, 4, 3), np.uint8)
    assert isinstance(choose_intensity(_arrays(rgb, "rgb8"), PreprocessSettings(), {})[0], Identity)


def test_shift_to_zero_keeps_background_dark() -> None:
    z_scored = np.concatenate([np.full(50, -3.5), np.linspace(-2.0, 4.0, 201)])  # bg + tissue
    below_mean = 50 + 50  # the tissue voxel at -0.5
    scaled = PercentileClip()(ShiftToZero()(z_scored))
    assert not scaled[:50].any() and scaled[below_mean] > 50 and scaled[-1] == 255
    assert PercentileClip()(z_scored)[below_mean] == 0  # without the shift it is lost


def test_a_label_lost_in_the_resize_is_counted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image = np.random.default_rng(0).integers(0, 255, (100, 2560, 3), dtype=np.uint8)
    mask = np.zeros((100, 2560), np.uint8)
    mask[40:90, 100:160] = 1      # 3000 px: survives the 256/2560 resize
    mask[5, 1000:1200] = 2        # a 1-pixel line of 200 px: nearest sampling skips row 5
    cv2.imwrite(str(root / "images/wide.png"), image)
    cv2.imwrite(str(root / "masks/wide.png"), mask)
    ds = read_dataset(root)
    result = process_case(CaseJob(ds.cases[0], ds.layout, ds.meta, PreprocessSettings(), tmp_path / "c"))
    assert result.status == "done" and result.samples == 1
    record = read_case_record(tmp_path / "c", "wide")
    assert record["dropped_after_resize"] == 1 and [s["label"] for s in record["samples"]] == [1]


def test_process_case_reports_instead_of_raising(tmp_path: Path) -> None:
    ds = read_dataset(synth.nnunet(tmp_path / "data", n=1))
    (tmp_path / "data/imagesTr/case0_0000.nii.gz").write_bytes(b"\x1f\x8b truncated")
    result = process_case(CaseJob(ds.cases[0], ds.layout, ds.meta, PreprocessSettings(), tmp_path / "c"))
    assert result.status == "failed" and "case0_0000.nii.gz" in result.message
    assert "\n" not in result.message
    assert not (tmp_path / "c").exists()  # nothing written for a failed case


def test_empty_label_gives_an_empty_shard(tmp_path: Path) -> None:
    root = synth.folder_pairs(tmp_path / "data", n=1)
    cv2.imwrite(str(root / "masks/img0.png"), np.zeros((60, 80), np.uint8))
    ds = read_dataset(root)
    result = process_case(CaseJob(ds.cases[0], ds.layout, ds.meta, PreprocessSettings(), tmp_path / "c"))
    assert (result.status, result.message) == ("empty", "the label holds no foreground")
    assert read_case_record(tmp_path / "c", "img0")["status"] == "empty"
    with pytest.raises(Exception, match="no manifest.json"):  # shards alone are not a cache
        PreprocessedCache(tmp_path / "c")
