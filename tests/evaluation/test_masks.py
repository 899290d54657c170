"""Reading masks as label maps: 0/255, grey-level JPEG, label maps, empty masks, volumes."""

import cv2
import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.evaluation.masks import parse_threshold, read_label_file
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume


def disc(h=60, w=70, value=255):
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (35, 30), 15, value, -1)
    return m


def test_zero_255_png_becomes_binary(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), disc())
    got = read_label_file(tmp_path / "a.png")
    assert set(np.unique(got.array)) == {0, 1}
    assert got.spacing == (1.0, 1.0) and got.geometry is None


def test_grey_level_rgb_jpeg_is_thresholded_at_127(tmp_path):
    m = cv2.GaussianBlur(disc(), (7, 7), 0)  # grey edges, as Kvasir-SEG's JPEG masks have
    cv2.imwrite(str(tmp_path / "a.jpg"), np.dstack([m, m, m]), [cv2.IMWRITE_JPEG_QUALITY, 75])
    got = read_label_file(tmp_path / "a.jpg")
    assert set(np.unique(got.array)) == {0, 1}
    assert abs(int(got.array.sum()) - int((m > 127).sum())) < 0.05 * (m > 127).sum()
    raw = read_label_file(tmp_path / "a.jpg", threshold="none")
    assert raw.array.max() > 200  # kept as stored


def test_label_map_png_kept_and_grey_png_thresholded(tmp_path):
    lab = np.zeros((40, 40), np.uint8)
    lab[5:15, 5:15], lab[20:30, 20:30] = 1, 3
    cv2.imwrite(str(tmp_path / "lab.png"), lab)
    assert set(np.unique(read_label_file(tmp_path / "lab.png").array)) == {0, 1, 3}
    grey = lab * 60  # values 0, 60, 180: not 0/255, above 127 -> a grey-level mask
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert set(np.unique(read_label_file(tmp_path / "grey.png").array)) == {0, 1}
    # ... unless the labels say 180 is a label
    assert 180 in read_label_file(tmp_path / "grey.png", labels=(60, 180)).array
    assert read_label_file(tmp_path / "grey.png", threshold=100.0).array.sum() == 100


def test_empty_mask_reads_as_zeros(tmp_path):
    cv2.imwrite(str(tmp_path / "empty.png"), np.zeros((12, 9), np.uint8))
    np.save(tmp_path / "empty.npy", np.zeros((12, 9), np.uint8))
    for name in ("empty.png", "empty.npy"):
        got = read_label_file(tmp_path / name)
        assert got.array.shape == (12, 9) and not got.array.any()


def test_volume_keeps_geometry_and_float_labels(tmp_path):
    geo = Geometry((2.5, 0.8, 0.7), origin=(1.0, 2.0, 3.0))
    lab = np.zeros((4, 10, 12), np.float32)
    lab[1:3, 2:6, 3:9] = 2.0
    write_volume(tmp_path / "v.nii.gz", lab, geo)
    got = read_label_file(tmp_path / "v.nii.gz")
    assert got.array.dtype == np.uint8 and set(np.unique(got.array)) == {0, 2}
    assert got.geometry.same_as(geo) and got.spacing == pytest.approx((2.5, 0.8, 0.7))
    write_volume(tmp_path / "p.nii.gz", lab + 0.25, geo)
    with pytest.raises(InputError, match="non-integer"):
        read_label_file(tmp_path / "p.nii.gz")
    assert read_label_file(tmp_path / "p.nii.gz", threshold=0.5).array.sum() == 2 * 4 * 6


def test_parse_threshold():
    assert parse_threshold("auto") == "auto" and parse_threshold("None") == "none"
    assert parse_threshold("127") == 127.0 and parse_threshold(None) == "auto"
    with pytest.raises(InputError):
        parse_threshold("half")
