"""Tests for medsamkit.preprocessing.labels: MedSAM's label cleanup thresholds, boxes, jitter."""

from __future__ import annotations

import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.preprocessing.labels import (
    box3d_from_mask,
    box_from_mask,
    clean_labels,
    fill_holes,
    jitter_box,
    largest_connected_component,
    remove_small_objects_2d,
    remove_small_objects_3d,
    split_labels,
)


def _diagonal_blocks_3d() -> np.ndarray:
    """Two 500-voxel blocks that touch only at one corner (26- but not 18- or 6-connected)."""
    vol = np.zeros((12, 22, 22), dtype=np.uint8)
    vol[0:5, 0:10, 0:10] = 1   # last voxel (4, 9, 9)
    vol[5:10, 10:20, 10:20] = 1  # first voxel (5, 10, 10)
    return vol


# ------------------------------------------------------------------------- 3D removal
def test_3d_threshold_exactly_at_1000_voxels() -> None:
    vol = np.zeros((24, 12, 12), dtype=bool)
    vol[0:10, 0:10, 0:10] = True  # 1000 voxels: kept
    vol[12:22, 0:10, 0:10] = True
    vol[21, 9, 9] = False  # 999 voxels: removed
    out = remove_small_objects_3d(vol)
    assert out.dtype == bool
    assert out[0:10].sum() == 1000 and out[12:].sum() == 0
    assert vol[12:].sum() == 999  # input untouched


def test_3d_connectivity_diagonal_corner() -> None:
    vol = _diagonal_blocks_3d()
    assert remove_small_objects_3d(vol, 1000, connectivity=26).sum() == 1000
    assert remove_small_objects_3d(vol, 1000, connectivity=18).sum() == 0
    assert remove_small_objects_3d(vol, 1000, connectivity=6).sum() == 0
    with pytest.raises(ValueError, match="connectivity 8"):
        remove_small_objects_3d(vol, 1000, connectivity=8)


def test_3d_label_map_cleaned_per_label() -> None:
    vol = np.zeros((10, 30, 30), dtype=np.int16)
    vol[0:6, 0:10, 0:10] = 1   # 600 voxels
    vol[0:6, 0:10, 10:20] = 2  # 600 voxels touching label 1: 1200 together, but per label small
    vol[0:10, 20:30, 20:30] = 7  # 1000 voxels: kept
    out = remove_small_objects_3d(vol)
    assert out.dtype == np.int16
    assert set(np.unique(out).tolist()) == {0, 7} and (out == 7).sum() == 1000


def test_float_label_map_and_bad_values() -> None:
    vol = np.zeros((10, 12, 12), dtype=np.float32)
    vol[:, :10, :10] = 4.0
    vol[0, 11, 11] = 2.0
    out = remove_small_objects_3d(vol)
    assert out.dtype == np.float32 and out[0, 11, 11] == 0 and (out == 4).sum() == 1000
    with pytest.raises(InputError, match="non-integer"):
        remove_small_objects_3d(vol + 0.5)
    with pytest.raises(InputError, match="negative"):
        remove_small_objects_3d(-vol)


# ------------------------------------------------------------------------- 2D removal
def test_2d_threshold_exactly_at_100_pixels() -> None:
    img = np.zeros((30, 30), dtype=np.uint8)
    img[0:10, 0:10] = 255  # 100 px: kept
    img[15:25, 15:25] = 255
    img[24, 24] = 0  # 99 px: removed
    out = remove_small_objects_2d(img)
    assert out.dtype == np.uint8
    assert (out[0:10, 0:10] == 255).all() and out[15:].sum() == 0


def test_2d_connectivity_8_vs_4() -> None:
    img = np.zeros((20, 20), dtype=bool)
    img[0:5, 0:10] = True     # 50 px, last pixel (4, 9)
    img[5:10, 10:20] = True   # 50 px, first pixel (5, 10): diagonal neighbours only
    assert remove_small_objects_2d(img, 100, connectivity=8).sum() == 100
    assert remove_small_objects_2d(img, 100, connectivity=4).sum() == 0


def test_2d_on_volume_is_per_slice() -> None:
    vol = np.zeros((10, 20, 20), dtype=np.uint8)
    vol[:, 0:6, 0:10] = 1  # a column: 60 px per slice, 600 voxels in 3D
    vol[3, 10:20, 10:20] = 2  # 100 px in one slice
    out = remove_small_objects_2d(vol)
    assert (out == 1).sum() == 0 and (out == 2).sum() == 100


def test_clean_labels_3d_then_2d() -> None:
    vol = np.zeros((16, 40, 40), dtype=np.uint8)
    vol[0:12, 0:10, 0:10] = 1   # 1200 voxels
    vol[12, 0:4, 0:5] = 1       # 20 px in slice 12, 3D-connected to the block: survives 3D only
    vol[0:5, 20:30, 20:30] = 1  # 500 voxels, separate: removed in 3D
    out = clean_labels(vol)
    expected = np.zeros_like(vol)
    expected[0:12, 0:10, 0:10] = 1
    np.testing.assert_array_equal(out, expected)
    # the LiteMedSAM thresholds keep the small 3D blob
    assert (clean_labels(vol, 100, 10) == 1).sum() == 1200 + 20 + 500
    img = np.zeros((20, 20), dtype=np.uint8)
    img[0:3, 0:3] = 1
    assert clean_labels(img).sum() == 0  # 2D input: only the 2D step


def test_split_labels() -> None:
    lab = np.zeros((4, 5), dtype=np.uint8)
    lab[0, 0], lab[1, 1:3], lab[3, 4] = 1, 3, 3
    parts = split_labels(lab)
    assert list(parts) == [1, 3]
    assert parts[1].dtype == bool and parts[1].sum() == 1 and parts[3].sum() == 3
    asked = split_labels(lab, labels=[3, 5, 0])
    assert list(asked) == [3, 5] and not asked[5].any() and asked[5].shape == lab.shape
    assert list(split_labels(np.zeros((3, 3)))) == []


# ------------------------------------------------------------------------- boxes
def test_box_ignores_stray_corner_pixel() -> None:
    """The Kvasir-SEG oddity: one white pixel at (0, 0) must not stretch the box."""
    mask = np.zeros((120, 150), dtype=bool)
    mask[50:80, 60:100] = True
    mask[0, 0] = True
    assert box_from_mask(mask) == (60, 50, 99, 79)
    assert box_from_mask(mask, min_component=0) == (0, 0, 99, 79)


def test_box_component_boundary_union_and_margin() -> None:
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10:20, 10:20] = 1    # 100 px: counts
    mask[60:70, 50:60] = 1
    mask[69, 59] = 0          # 99 px: ignored
    assert box_from_mask(mask) == (10, 10, 19, 19)
    mask[69, 59] = 1
    assert box_from_mask(mask) == (10, 10, 59, 69)  # union of both components
    assert box_from_mask(mask, margin=15) == (0, 0, 74, 84)  # clipped at 0
    assert box_from_mask(mask, margin=50) == (0, 0, 99, 99)  # clipped at W-1, H-1
    assert box_from_mask(np.zeros((5, 5))) is None
    assert box_from_mask(mask, min_component=10_000) is None
    with pytest.raises(ValueError):
        box_from_mask(np.zeros((2, 5, 5)))


def test_box3d() -> None:
    vol = np.zeros((10, 20, 30), dtype=np.uint8)
    vol[2:5, 3:9, 4:20] = 2
    assert box3d_from_mask(vol) == (4, 3, 2, 19, 8, 4)
    vol[9, 19, 29] = 1
    assert box3d_from_mask(vol) == (4, 3, 2, 29, 19, 9)
    assert box3d_from_mask(vol, min_component=2) == (4, 3, 2, 19, 8, 4)
    assert box3d_from_mask(np.zeros((2, 2, 2))) is None


def test_jitter_bounds_seed_and_clipping() -> None:
    box, shape = (100, 80, 200, 150), (300, 400)
    assert jitter_box(box, shape, rng=7) == jitter_box(box, shape, rng=7)
    gen = np.random.default_rng(0)
    draws = np.array([jitter_box(box, shape, 20, gen) for _ in range(2000)])
    shifts = np.abs(draws - np.array(box))
    assert shifts.min() == 0 and shifts.max() == 20  # randint(0, 20) is inclusive
    assert (draws[:, :2] <= box[:2]).all() and (draws[:, 2:] >= box[2:]).all()  # only outward
    assert len({tuple(d) for d in draws}) > 1000  # the generator advances
    assert jitter_box(box, shape, max_shift=0, rng=1) == box
    # clipped to the image: x in [0, W-1], y in [0, H-1]
    edge = np.array([jitter_box((3, 2, 396, 297), shape, 20, gen) for _ in range(200)])
    assert edge[:, :2].min() == 0 and edge[:, 2].max() == 399 and edge[:, 3].max() == 299
    box3 = jitter_box((5, 6, 1, 10, 12, 3), (4, 20, 20), 20, gen)
    assert box3[2] == 0 and box3[5] == 3 and box3[0] <= 5 and box3[4] <= 19
    with pytest.raises(ValueError):
        jitter_box((1, 2, 3), shape)


# ------------------------------------------------------------------------- 3D cleanup
def test_largest_connected_component() -> None:
    vol = np.zeros((10, 10, 10), dtype=np.uint8)
    vol[0:2, 0:2, 0:2] = 1   # 8 voxels
    vol[2, 2, 2] = 1         # diagonal to the first block: 26-connected
    vol[5:9, 5:9, 5:7] = 3   # 32 voxels
    out = largest_connected_component(vol)
    assert out.dtype == bool and out.sum() == 32 and out[6, 6, 6]
    img = np.zeros((10, 10), dtype=bool)
    img[0:3, 0:3] = True
    img[3, 3] = img[4, 4] = img[5, 5] = img[6, 6] = True  # diagonal tail
    img[7:10, 7:10] = True
    assert largest_connected_component(img).sum() == 9 + 4 + 9  # 8-connected: one piece
    assert largest_connected_component(img, connectivity=4).sum() == 9  # tie: first found
    assert not largest_connected_component(np.zeros((3, 3))).any()


def test_fill_holes_2d_3d_and_per_slice() -> None:
    ring = np.zeros((9, 9), dtype=np.uint8)
    ring[1:8, 1:8] = 1
    ring[3:6, 3:6] = 0
    assert fill_holes(ring)[1:8, 1:8].all() and fill_holes(ring).dtype == np.uint8
    shell = np.zeros((7, 7, 7), dtype=bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False  # closed cavity
    assert fill_holes(shell).sum() == 125
    tube = shell.copy()
    tube[1, 2:5, 2:5] = tube[5, 2:5, 2:5] = False  # opened at both ends: no 3D hole
    assert fill_holes(tube).sum() == tube.sum()
    filled = fill_holes(tube, per_slice=True)
    assert filled[1:6, 1:6, 1:6].all() and filled.sum() == 125
    # a hole on the first and last slice of a volume is filled per slice too
    flat = np.zeros((2, 5, 5), dtype=np.uint8)
    flat[:, 1:4, 1:4] = 1
    flat[:, 2, 2] = 0
    assert fill_holes(flat, per_slice=True).sum() == 18


def test_fill_holes_label_map_does_not_overwrite_labels() -> None:
    lab = np.zeros((9, 9), dtype=np.uint8)
    lab[1:8, 1:8] = 2
    lab[3:6, 3:6] = 0
    lab[4, 4] = 1  # another label inside the hole
    out = fill_holes(lab)
    assert out[4, 4] == 1 and (out == 2).sum() == 49 - 1
