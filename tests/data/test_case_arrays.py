"""Tests for medsamkit.data.case_arrays: every layout's case read into image/label arrays."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import synthetic_datasets as synth
from medsamkit.data.case_arrays import has_label, read_case_arrays, read_mask_2d
from medsamkit.data.layouts import read_dataset
from medsamkit.errors import InputError


def _first(root: Path, layout: str, **kw):
    ds = read_dataset(root, layout)
    return ds, read_case_arrays(ds.cases[0], ds.layout, ds.meta, **kw)


def test_folder_pairs_binary_and_label_map(tmp_path: Path) -> None:
    ds = read_dataset(synth.folder_pairs(tmp_path))
    first = read_case_arrays(ds.cases[0], ds.layout, ds.meta)
    assert first.image.shape == (1, 60, 80, 3) and first.kind == "rgb8" and not first.is_3d
    assert set(np.unique(first.label)) == {0, 1}  # 0/255 mask -> label 1
    last = read_case_arrays(ds.cases[-1], ds.layout, ds.meta)
    assert set(np.unique(last.label)) == {0, 1, 2}  # a label map keeps its ids
    assert first.geometry.spacing == (1.0, 1.0, 1.0)


def test_kvasir_thresholds_noisy_rgb_jpeg_masks(tmp_path: Path) -> None:
    _, arrays = _first(synth.kvasir(tmp_path), "kvasir")
    raw = read_mask_2d(tmp_path / "masks" / "cju000.jpg")
    assert raw.ndim == 3 and len(np.unique(raw)) > 2  # JPEG noise: more than two grey levels
    assert arrays.label.dtype == np.uint8 and set(np.unique(arrays.label)) == {0, 1}
    assert arrays.label[0, 0, 0] == 1  # the stray pixel is still there (cleanup comes later)


def test_nnunet_geometry_channels_and_channel_choice(tmp_path: Path) -> None:
    ds, arrays = _first(synth.nnunet(tmp_path, n=1, two_channels=True), "nnunet")
    assert arrays.is_3d and arrays.image.shape == (8, 40, 48) and arrays.kind == "grey16"
    assert arrays.geometry == synth.VOLUME_GEOMETRY
    assert arrays.sources[0].endswith("case0_0000.nii.gz")
    second = read_case_arrays(ds.cases[0], ds.layout, ds.meta, channel=1)
    assert second.sources[0].endswith("case0_0001.nii.gz")
    np.testing.assert_array_equal(second.image, -arrays.image)
    with pytest.raises(InputError, match="--channel 2 does not exist: the case has 2 channel"):
        read_case_arrays(ds.cases[0], ds.layout, ds.meta, channel=2)


def test_refuge_majority_vote(tmp_path: Path) -> None:
    ds, arrays = _first(synth.refuge(tmp_path), "refuge")
    expected = np.zeros((64, 72), np.uint8)
    cv2.ellipse(expected, (36, 32), (12, 12), 0, 0, 360, 1, -1)  # what 4 of the 7 raters drew
    np.testing.assert_array_equal(arrays.label[0], expected)
    assert len(arrays.label_sources) == 7 and has_label(ds.cases[0], "refuge", ds.meta)


def test_btcv_frames_stack_along_z(tmp_path: Path) -> None:
    _, arrays = _first(synth.btcv(tmp_path), "btcv")
    assert arrays.is_3d and arrays.image.shape == (6, 48, 56) and arrays.kind == "grey8"
    assert arrays.label.shape == (6, 48, 56) and set(np.unique(arrays.label)) == {0, 1, 3}
    assert [Path(s).name for s in arrays.sources] == [f"{k}.jpg" for k in range(6)]


def test_medsam_npy_float_images_back_to_uint8(tmp_path: Path) -> None:
    _, arrays = _first(synth.medsam_npy(tmp_path), "medsam-npy")
    stored = np.load(tmp_path / "imgs" / "MR_vol1-003.npy")
    np.testing.assert_array_equal(arrays.image[0], np.round(stored * 255).astype(np.uint8))
    assert arrays.kind == "rgb8" and set(np.unique(arrays.label)) == {0, 5}


def test_medsam_npz_volume_spacing_in_array_order(tmp_path: Path) -> None:
    ds = read_dataset(synth.medsam_npz(tmp_path))
    by_id = {c.case_id: c for c in ds.cases}
    volume = read_case_arrays(by_id["CT/CT_a"], ds.layout, ds.meta)
    assert volume.is_3d and volume.image.shape == (8, 40, 48) and volume.kind == "grey8"
    assert volume.geometry.spacing == (2.5, 0.75, 0.625)  # stored as SimpleITK (x, y, z)
    photo = read_case_arrays(by_id["2D/photo"], ds.layout, ds.meta)
    assert not photo.is_3d and photo.image.shape == (1, 50, 60, 3) and photo.label.shape == (1, 50, 60)


def test_shape_mismatch_and_colour_mask_name_the_label(tmp_path: Path) -> None:
    root = synth.folder_pairs(tmp_path)
    cv2.imwrite(str(root / "masks/img0.png"), np.zeros((10, 10), np.uint8))
    ds = read_dataset(root)
    with pytest.raises(InputError, match=r"img0.png: label shape \(1, 10, 10\) does not match"):
        read_case_arrays(ds.cases[0], ds.layout, ds.meta)
    colour = np.zeros((60 + 7, 80, 3), np.uint8)
    colour[5:20, 5:20] = (0, 0, 255)
    cv2.imwrite(str(root / "masks/img1.png"), colour)
    with pytest.raises(InputError, match="img1.png: is a colour mask"):
        read_case_arrays(ds.cases[1], ds.layout, ds.meta)


def test_unreadable_label_and_all_zero_mask(tmp_path: Path) -> None:
    root = synth.folder_pairs(tmp_path)
    (root / "masks/img0.png").write_bytes(b"not a png")
    cv2.imwrite(str(root / "masks/img1.png"), np.zeros((67, 80), np.uint8))
    ds = read_dataset(root)
    with pytest.raises(InputError, match="img0.png: cannot decode the label image"):
        read_case_arrays(ds.cases[0], ds.layout, ds.meta)
    empty = read_case_arrays(ds.cases[1], ds.layout, ds.meta)  # valid, just empty
    assert empty.label.shape == (1, 67, 80) and not empty.label.any()
