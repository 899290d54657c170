"""Tests for medsamkit.io.image2d: every format, layout rule and error case, on synthetic files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from medsamkit.errors import InputError
from medsamkit.io.image2d import (
    SUPPORTED_2D_SUFFIXES,
    Image2D,
    image_2d_from_array,
    read_image_2d,
    validate_image_2d,
)

RNG = np.random.default_rng(0)


def grey8(h: int = 12, w: int = 10) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def rgb8(h: int = 12, w: int = 10) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def grey16(h: int = 12, w: int = 10) -> np.ndarray:
    arr = RNG.integers(0, 65536, (h, w), dtype=np.uint16)
    arr[0, 0] = 65535  # make sure values above 255 (and the top of the range) are present
    return arr


def write_dicom(path: Path, stored: np.ndarray, *, modality: str = "CT", slope: float = 1.0,
                intercept: float = 0.0, spacing: tuple[float, float] | None = (0.7, 0.8),
                window: tuple[float, float] | None = (40, 400), frames: int = 1) -> Path:
    """Write a minimal uncompressed DICOM with ``stored`` (uint16 or int16, frames x H x W)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".npy"])
def test_grey8_and_rgb8_round_trip(tmp_path: Path, suffix: str) -> None:
    for arr, kind in ((grey8(), "grey8"), (rgb8(), "rgb8")):
        path = tmp_path / f"img_{kind}{suffix}"
        if suffix == ".npy":
            np.save(path, arr)
        elif suffix == ".tif":
            tifffile.imwrite(path, arr)
        else:
            Image.fromarray(arr).save(path)
        img = read_image_2d(path)
        assert img.kind == kind
        assert img.source == str(path)
        assert img.pixels.dtype == np.uint8
        np.testing.assert_array_equal(img.pixels, arr)
        assert img.spacing == (1.0, 1.0) and img.window is None


def test_jpeg_reads_close_to_written(tmp_path: Path) -> None:
    arr = np.zeros((32, 40, 3), np.uint8)
    arr[:, :20] = (200, 30, 60)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    img = read_image_2d(tmp_path / "a.jpg")
    assert img.kind == "rgb8" and img.pixels.shape == (32, 40, 3)
    assert np.abs(img.pixels[4:28, 4:16].astype(int) - (200, 30, 60)).max() < 12


def test_pure_red_png_reads_as_red_not_blue(tmp_path: Path) -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    red[0, 0] = 0  # not constant
    Image.fromarray(red).save(tmp_path / "red.png")
    img = read_image_2d(tmp_path / "red.png")
    assert tuple(img.pixels[4, 4]) == (255, 0, 0)


def test_16bit_grey_png_keeps_values(tmp_path: Path) -> None:
    arr = grey16()
    ok, data = cv2.imencode(".png", arr)
    assert ok
    (tmp_path / "g16.png").write_bytes(data.tobytes())
    Image.fromarray(arr).save(tmp_path / "pil16.png")  # Pillow's I;16 writer
    for name in ("g16.png", "pil16.png"):
        img = read_image_2d(tmp_path / name)
        assert img.pixels.dtype == np.uint16 and img.kind == "grey16"
        np.testing.assert_array_equal(img.pixels, arr)


def test_16bit_rgb_png_keeps_values_and_rgb_order(tmp_path: Path) -> None:
    arr = RNG.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    ok, data = cv2.imencode(".png", arr[..., ::-1].copy())  # cv2 writes BGR
    (tmp_path / "c16.png").write_bytes(data.tobytes())
    img = read_image_2d(tmp_path / "c16.png")
    assert img.pixels.dtype == np.uint16 and img.pixels.shape == (6, 7, 3)
    np.testing.assert_array_equal(img.pixels, arr)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_tiff_keeps_dtype_and_values(tmp_path: Path, dtype: type) -> None:
    arr = grey16().astype(np.int64)
    arr = (arr - 32768 if dtype is np.int16 else arr).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tiff", arr)
    img = read_image_2d(tmp_path / "a.tiff")
    assert img.pixels.dtype == dtype
    assert img.kind == ("float" if dtype is np.float32 else "grey16")
    np.testing.assert_array_equal(img.pixels, arr)


def test_lzw_tiff_is_read_without_imagecodecs(tmp_path: Path) -> None:
    arr = grey16()
    Image.fromarray(arr).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    img = read_image_2d(tmp_path / "lzw.tif")
    np.testing.assert_array_equal(img.pixels, arr)


def test_rgba_is_reduced_to_rgb(tmp_path: Path) -> None:
    rgba = np.dstack([rgb8(), np.full((12, 10), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.save(tmp_path / "a.npy", rgba)
    for name in ("a.png", "a.tif", "a.npy"):
        img = read_image_2d(tmp_path / name)
        assert img.kind == "rgb8", name
        np.testing.assert_array_equal(img.pixels, rgba[..., :3])


def test_grey_plus_alpha_is_reduced_to_grey(tmp_path: Path) -> None:
    g = grey8()
    la = np.dstack([g, np.full_like(g, 200)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=["unassalpha"])
    g16 = grey16()
    tifffile.imwrite(tmp_path / "la16.tif", np.dstack([g16, np.full_like(g16, 9)]),
                     photometric="minisblack", extrasamples=["unassalpha"])
    for name, want in (("la.png", g), ("la.tif", g), ("la16.tif", g16)):
        img = read_image_2d(tmp_path / name)
        assert img.pixels.ndim == 2, name
        np.testing.assert_array_equal(img.pixels, want)


def test_npz_prefers_image_keys(tmp_path: Path) -> None:
    img_arr, gts = grey8(), np.zeros((12, 10), np.uint8)
    np.savez(tmp_path / "a.npz", gts=gts, imgs=img_arr)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "a.npz").pixels, img_arr)
    np.savez(tmp_path / "one.npz", anything=img_arr)
    np.testing.assert_array_equal(read_image_2d(tmp_path / "one.npz").pixels, img_arr)


def test_npz_ambiguous_keys_error_lists_them(tmp_path: Path) -> None:
    np.savez(tmp_path / "amb.npz", first=grey8(), second=grey8())
    with pytest.raises(InputError, match=r"amb\.npz.*first, second"):
        read_image_2d(tmp_path / "amb.npz")


def test_dicom_ct_slice_gives_hu_spacing_and_window(tmp_path: Path) -> None:
    stored = RNG.integers(0, 3000, (16, 12), dtype=np.uint16)
    path = write_dicom(tmp_path / "slice.dcm", stored, slope=1.0, intercept=-1024.0)
    img = read_image_2d(path)
    assert img.kind == "ct"
    assert np.issubdtype(img.pixels.dtype, np.signedinteger)
    np.testing.assert_array_equal(img.pixels, stored.astype(np.int32) - 1024)
    assert img.spacing == pytest.approx((0.7, 0.8))
    assert img.window == pytest.approx((40.0, 400.0))


def test_dicom_fractional_slope_gives_float_and_mr_is_not_ct(tmp_path: Path) -> None:
    stored = RNG.integers(0, 1000, (8, 9), dtype=np.uint16)
    path = write_dicom(tmp_path / "mr", stored, modality="MR", slope=0.5, intercept=10.0,
                       spacing=None, window=None)  # no suffix: read as DICOM
    img = read_image_2d(path)
    assert img.kind == "float" and img.spacing == (1.0, 1.0) and img.window is None
    np.testing.assert_allclose(img.pixels, stored * 0.5 + 10.0)


def test_dicom_multivalue_window_takes_first_and_signed_storage(tmp_path: Path) -> None:
    stored = RNG.integers(-1024, 2000, (8, 9), dtype=np.int16)
    path = write_dicom(tmp_path / "w.dcm", stored, window=([40, -600], [400, 1500]))
    img = read_image_2d(path)
    assert img.window == pytest.approx((40.0, 400.0))
    assert img.pixels.dtype == np.int16 and img.kind == "ct"
    np.testing.assert_array_equal(img.pixels, stored)


def test_dicom_without_rescale_keeps_stored_dtype(tmp_path: Path) -> None:
    stored = RNG.integers(0, 4000, (8, 9), dtype=np.uint16)
    img = read_image_2d(write_dicom(tmp_path / "x.dicom", stored, modality="MR"))
    assert img.pixels.dtype == np.uint16 and img.kind == "grey16"
    np.testing.assert_array_equal(img.pixels, stored)


def test_dicom_with_unknown_suffix_is_detected_by_preamble(tmp_path: Path) -> None:
    stored = RNG.integers(0, 4000, (8, 9), dtype=np.uint16)
    img = read_image_2d(write_dicom(tmp_path / "1.2.840.113619", stored))
    np.testing.assert_array_equal(img.pixels, stored)


def test_suffixless_png_is_sniffed(tmp_path: Path) -> None:
    arr = grey8()
    Image.fromarray(arr).save(tmp_path / "noext", format="PNG")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "noext").pixels, arr)


def test_image_2d_from_array_infers_kind() -> None:
    assert image_2d_from_array(rgb8()).kind == "rgb8"
    assert image_2d_from_array(grey8()).kind == "grey8"
    assert image_2d_from_array(grey16()).kind == "grey16"
    assert image_2d_from_array(grey16().astype(np.int16)).kind == "grey16"
    assert image_2d_from_array(grey16().astype(np.float32)).kind == "float"
    assert image_2d_from_array(grey8()[None]).pixels.shape == (12, 10)
    assert image_2d_from_array(grey8()[..., None]).pixels.shape == (12, 10)
    assert image_2d_from_array(grey16(), "x.nii", kind="ct").kind == "ct"


# ------------------------------------------------------------------------------ errors

def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothere\.png: file not found"):
        read_image_2d(tmp_path / "nothere.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(InputError, match=r"folder\.png: is a folder"):
        read_image_2d(tmp_path / "folder.png")


def test_unsupported_suffix_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(InputError, match=r"notes\.txt: unsupported file type '\.txt'") as err:
        read_image_2d(tmp_path / "notes.txt")
    assert all(s in str(err.value) for s in SUPPORTED_2D_SUFFIXES)


@pytest.mark.parametrize("name", ["bad.png", "bad.jpg", "bad.bmp", "bad.tif", "bad.npy",
                                  "bad.npz", "bad.dcm", "bad"])
def test_corrupt_files(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        read_image_2d(tmp_path / name)


def test_truncated_png(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".png", grey8(64, 64))
    (tmp_path / "cut.png").write_bytes(data.tobytes()[:80])
    with pytest.raises(InputError, match=r"cut\.png: cannot decode"):
        read_image_2d(tmp_path / "cut.png")


@pytest.mark.parametrize("arr, problem", [
    (np.zeros((0, 5), np.uint8), "empty"),
    (np.zeros(7, np.uint8) + np.arange(7, dtype=np.uint8), "1 dimensions"),
    (np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5), "4 dimensions"),
    (np.arange(6 * 6 * 2, dtype=np.uint8).reshape(6, 6, 2), "2 channels"),
    (np.arange(6 * 6 * 5, dtype=np.uint8).reshape(6, 6, 5), "5 channels"),
    (np.arange(3 * 40 * 40, dtype=np.uint8).reshape(3, 40, 40), "channel-first"),
    (np.arange(40 * 40 * 40, dtype=np.int16).reshape(40, 40, 40), "3D volume"),
    (np.array([[1.0, np.nan], [2.0, 3.0]], np.float32), "NaN or infinite"),
    (np.array([[1.0, np.inf], [2.0, 3.0]]), "NaN or infinite"),
    (np.full((5, 5), 7, np.uint16), "constant"),
    (np.full((5, 5, 3), (255, 0, 0), np.uint8), "constant"),
    (np.eye(4, dtype=bool), "boolean"),
])
def test_bad_arrays_in_npy_name_the_file(tmp_path: Path, arr: np.ndarray, problem: str) -> None:
    np.save(tmp_path / "arr.npy", arr)
    with pytest.raises(InputError, match=rf"arr\.npy: .*{problem}"):
        read_image_2d(tmp_path / "arr.npy")


def test_multiframe_dicom_is_a_volume(tmp_path: Path) -> None:
    stored = RNG.integers(0, 4000, (3, 8, 9), dtype=np.uint16)
    path = write_dicom(tmp_path / "vol.dcm", stored, frames=3)
    with pytest.raises(InputError, match=r"vol\.dcm: .*multi-frame.*volume"):
        read_image_2d(path)


def test_multipage_tiff_is_a_stack(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", RNG.integers(0, 255, (4, 8, 8), dtype=np.uint8),
                     photometric="minisblack")
    with pytest.raises(InputError, match=r"stack\.tif: .*stack"):
        read_image_2d(tmp_path / "stack.tif")


def test_planar_rgb_tiff_is_channel_last(tmp_path: Path) -> None:
    arr = rgb8()
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(arr, -1, 0), photometric="rgb",
                     planarconfig="separate")
    np.testing.assert_array_equal(read_image_2d(tmp_path / "planar.tif").pixels, arr)


def test_dicom_without_pixels(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName = "Nobody"
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match=r"report\.dcm: .*no DICOM pixel data"):
        read_image_2d(tmp_path / "report.dcm")


def test_validate_image_2d_direct() -> None:
    good = Image2D(grey8(), "mem", "grey8")
    validate_image_2d(good)  # does not raise
    with pytest.raises(InputError, match="mem: .*constant"):
        validate_image_2d(Image2D(np.ones((4, 4), np.float32), "mem", "float"))
    with pytest.raises(InputError, match="mem: .*NaN"):
        validate_image_2d(Image2D(np.array([[0, np.nan]]), "mem", "float"))
    with pytest.raises(InputError, match="unknown image kind"):
        validate_image_2d(Image2D(grey8(), "mem", "jpeg"))
    with pytest.raises(InputError, match="kind 'rgb8' needs uint8"):
        validate_image_2d(Image2D(grey8(), "mem", "rgb8"))
    with pytest.raises(InputError, match="4 channels"):
        validate_image_2d(Image2D(np.dstack([rgb8(), grey8()]), "mem", "rgb8"))
    with pytest.raises(InputError, match="spacing"):
        validate_image_2d(Image2D(grey8(), "mem", "grey8", spacing=(0.0, 1.0)))
