"""Tests for medsamkit.data.export: MedSAM's npy files (names, dtypes, value ranges, labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsamkit.data.export import MedsamNpyExport
from medsamkit.data.layouts import read_dataset


def test_names() -> None:
    assert MedsamNpyExport.name("case0", 7) == "case0-007"
    assert MedsamNpyExport.name("CT/CT_a", 123) == "CT_CT_a-123"
    assert MedsamNpyExport.name("photo", None) == "photo"


def test_write_slice_as_medsam_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(20, 200, (100, 150, 3), dtype=np.uint8)
    labels = np.zeros((100, 150), np.uint8)
    labels[10:40, 20:60], labels[60:90, 100:140] = 3, 7
    export = MedsamNpyExport(tmp_path)
    assert export.write("vol", 4, rgb, labels) == "vol-004"
    image, gts = np.load(tmp_path / "imgs/vol-004.npy"), np.load(tmp_path / "gts/vol-004.npy")
    assert image.shape == (1024, 1024, 3) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == 1.0  # min-max after the resize
    assert gts.shape == (1024, 1024) and gts.dtype == np.uint8
    assert set(np.unique(gts)) == {0, 3, 7}  # a label map, nearest neighbour
    ys, xs = np.nonzero(gts == 3)  # stretched, not padded: x by 1024/150, y by 1024/100
    assert abs(xs.min() - 20 * 1024 / 150) <= 7 and abs(ys.max() - 40 * 1024 / 100) <= 11
    big = labels.astype(np.uint16)
    big[big == 7] = 300
    export.write("big", None, rgb, big)
    assert np.load(tmp_path / "gts/big.npy").dtype == np.uint16  # kept: does not fit uint8
    ds = read_dataset(tmp_path)
    assert ds.layout == "medsam-npy" and ds.case_ids == ["big", "vol-004"]
