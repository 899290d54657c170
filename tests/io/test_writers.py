"""Tests for medsamkit.io.writers: atomic replacement, input protection, PNG/NPY writing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsamkit.errors import InputError
from medsamkit.io.image2d import read_image_2d
from medsamkit.io.writers import atomic_output, check_not_input, write_image, write_npy, write_png


def test_atomic_output_temp_name_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "deeper" / "mask.png"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.parent.is_dir()
        assert tmp.name.startswith(".") and tmp.suffix == ".png"
        assert tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.png"]


def test_atomic_output_keeps_old_file_when_writer_fails_midway(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    target.write_bytes(b"old content")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]  # temp file removed


def test_atomic_output_block_that_writes_nothing_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        with atomic_output(target):
            pass
    assert target.read_bytes() == b"old"


def test_atomic_output_rejects_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        with atomic_output(tmp_path):
            pass


def test_check_not_input(tmp_path: Path) -> None:
    src = tmp_path / "img.png"
    src.write_bytes(b"x")
    with pytest.raises(InputError, match=r"img\.png: refusing to overwrite the input file"):
        check_not_input(tmp_path / "sub" / ".." / "img.png", [tmp_path / "other.png", src])
    with pytest.raises(InputError, match="refusing to overwrite"):
        check_not_input(str(src), str(src))  # a single path is accepted too
    check_not_input(tmp_path / "mask.png", [src, None])  # different file: fine


def test_check_not_input_sees_links(tmp_path: Path) -> None:
    src = tmp_path / "img.png"
    src.write_bytes(b"x")
    hard = tmp_path / "hard.png"
    os.link(src, hard)
    with pytest.raises(InputError, match="refusing to overwrite"):
        check_not_input(hard, [src])
    soft = tmp_path / "soft.png"
    soft.symlink_to(src)
    with pytest.raises(InputError, match="refusing to overwrite"):
        check_not_input(soft, [src])


@pytest.mark.parametrize("arr", [
    np.arange(60, dtype=np.uint8).reshape(6, 10),
    (np.arange(60, dtype=np.uint16) * 1000).reshape(6, 10),
    np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8),
])
def test_write_png_round_trip(tmp_path: Path, arr: np.ndarray) -> None:
    path = tmp_path / "out" / "img.png"
    write_png(path, arr)
    back = read_image_2d(path).pixels
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_write_png_keeps_rgb_order(tmp_path: Path) -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    write_png(tmp_path / "red.png", red)
    assert Image.open(tmp_path / "red.png").getpixel((1, 1)) == (255, 0, 0)


@pytest.mark.parametrize("arr", [np.zeros((4, 4), bool), np.zeros((4, 4), np.float32),
                                 np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8)])
def test_write_png_rejects_other_arrays(tmp_path: Path, arr: np.ndarray) -> None:
    with pytest.raises(ValueError, match="write_png needs"):
        write_png(tmp_path / "x.png", arr)
    assert not any(tmp_path.iterdir())


def test_write_npy_round_trip_and_no_extra_suffix(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    write_npy(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)
    write_npy(tmp_path / "b.dat", arr)  # np.save would add .npy to a name; we do not
    np.testing.assert_array_equal(np.load(tmp_path / "b.dat"), arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.dat"]


def test_write_into_unwritable_place_is_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(InputError, match="cannot create the output folder"):
        write_npy(blocker / "sub" / "a.npy", np.zeros(3))


@pytest.mark.parametrize("name, magic", [("m.png", b"\x89PNG"), ("m.tif", b"II*\x00"), ("m.TIFF", b"II*\x00"),
                                         ("m.bmp", b"BM")])
def test_write_image_writes_the_format_named_and_keeps_the_labels(tmp_path: Path, name: str, magic: bytes) -> None:
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9], labels[10:15, 12:25] = 1, 2
    write_image(tmp_path / name, labels)
    assert (tmp_path / name).read_bytes()[:len(magic)] == magic
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), labels)


def test_write_image_tiff_keeps_16_bit_labels_and_bmp_refuses_them(tmp_path: Path) -> None:
    labels = np.zeros((20, 30), np.uint16)
    labels[2:8, 3:9] = 300
    write_image(tmp_path / "m.tif", labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.tif")), labels)
    with pytest.raises(InputError, match="8-bit values; labels above 255 need .png or .tif"):
        write_image(tmp_path / "m.bmp", labels)
    assert not (tmp_path / "m.bmp").exists()


def test_write_image_refuses_lossy_masks_but_writes_lossy_pictures(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="JPG is lossy and would change the mask's label values"):
        write_image(tmp_path / "m.jpg", np.zeros((8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red
    write_image(tmp_path / "overlay.jpg", rgb, "picture")
    assert (tmp_path / "overlay.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes
    back = np.asarray(Image.open(tmp_path / "overlay.jpg").convert("RGB")).astype(int)
    assert np.abs(back - rgb).max() <= 8  # RGB order kept (lossy)
    with pytest.raises(InputError, match="unknown image format '.gif'"):
        write_image(tmp_path / "overlay.gif", rgb, "picture")
