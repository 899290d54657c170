"""Tests for medsamkit.io.volume: round trips per format, NIfTI affines, masks, errors."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medsamkit.errors import InputError
from medsamkit.io import read_image, read_volume, write_volume
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import VOLUME_SUFFIXES, read_volume_geometry, volume_suffix

SHAPE = (4, 5, 6)  # z, y, x


def rotation(deg_x: float = 20.0, deg_y: float = 20.0) -> np.ndarray:
    a, b = np.deg2rad(deg_x), np.deg2rad(deg_y)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return rx @ ry


GEOM = Geometry(spacing=(3.0, 0.8, 0.7), origin=(-12.3, 45.6, 78.9),
                direction=tuple(rotation().ravel()))


def sample(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.floating):
        return (rng.standard_normal(SHAPE) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, SHAPE, endpoint=True).astype(dtype)


def nibabel_affine() -> np.ndarray:
    """An oblique, anisotropic RAS affine (nibabel axes i, j, k = x, y, z)."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(20, -25) @ np.diag([0.7, 0.8, 3.0])
    affine[:3, 3] = [101.5, -33.25, 12.0]
    return affine


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_every_format(tmp_path: Path, suffix: str, dtype: type) -> None:
    data = sample(dtype)
    path = write_volume(tmp_path / f"vol{suffix}", data, GEOM)
    array, geometry = read_volume(path)
    assert array.dtype == dtype and array.shape == SHAPE
    np.testing.assert_array_equal(array, data)
    assert geometry.same_as(GEOM), geometry
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_header_and_data_file_formats_write_both(tmp_path: Path) -> None:
    write_volume(tmp_path / "a.mhd", sample(np.int16), GEOM)
    write_volume(tmp_path / "b.nhdr", sample(np.int16), GEOM)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "a.mhd" and names[1].startswith("a.") and names[1] != "a.mhd"
    assert "b.nhdr" in names and any(n.startswith("b.") and n != "b.nhdr" for n in names)
    assert len(names) == 4


def test_nii_gz_is_really_gzip_and_mha_compressed(tmp_path: Path) -> None:
    zeros = np.zeros((20, 30, 40), np.int16)
    write_volume(tmp_path / "z.nii.gz", zeros, GEOM)
    write_volume(tmp_path / "z.mha", zeros, GEOM)
    assert gzip.decompress((tmp_path / "z.nii.gz").read_bytes())[344:].count(0) >= zeros.nbytes
    assert (tmp_path / "z.mha").stat().st_size < zeros.nbytes / 10


def test_mask_with_image_geometry(tmp_path: Path) -> None:
    write_volume(tmp_path / "img.nii.gz", sample(np.int16), GEOM)
    image, geometry = read_volume(tmp_path / "img.nii.gz")
    labels = (image > 0).astype(np.int64) + (image > 10000)
    write_volume(tmp_path / "seg.nii.gz", labels, geometry, reference=tmp_path / "img.nii.gz",
                 mask=True)
    mask, mask_geometry = read_volume(tmp_path / "seg.nii.gz")
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, labels)
    assert mask_geometry.same_as(geometry, tol=1e-7)  # NIfTI: float32 precision
    i_hdr, m_hdr = (nib.load(tmp_path / n).affine for n in ("img.nii.gz", "seg.nii.gz"))
    np.testing.assert_allclose(i_hdr, m_hdr, rtol=0, atol=1e-6)
    # Formats storing doubles reproduce the image's geometry exactly.
    write_volume(tmp_path / "seg.mha", labels, geometry, mask=True)
    assert read_volume(tmp_path / "seg.mha")[1] == geometry


def test_mask_dtypes(tmp_path: Path) -> None:
    big = np.zeros(SHAPE, np.int32)
    big[0, 0, 0] = 300
    write_volume(tmp_path / "big.mha", big, GEOM, mask=True)
    assert read_volume(tmp_path / "big.mha")[0].dtype == np.uint16
    write_volume(tmp_path / "bool.mha", big > 0, GEOM)
    assert read_volume(tmp_path / "bool.mha")[0].dtype == np.uint8
    float_labels = big.astype(np.float32) / 100  # 0 and 3.0, as BraTS stores labels
    write_volume(tmp_path / "f.nrrd", float_labels, GEOM, mask=True)
    assert read_volume(tmp_path / "f.nrrd")[0].dtype == np.uint8
    for bad in (big - 1, big / 7):
        with pytest.raises(ValueError, match="mask"):
            write_volume(tmp_path / "bad.mha", bad, GEOM, mask=True)


def test_geometry_from_reference_and_shape_check(tmp_path: Path) -> None:
    ref = write_volume(tmp_path / "ref.nrrd", sample(np.int16), GEOM)
    out = write_volume(tmp_path / "out.nii.gz", np.ones(SHAPE, np.uint8), reference=ref)
    assert read_volume(out)[1].same_as(GEOM)
    assert read_volume_geometry(ref) == (SHAPE, read_volume(ref)[1])
    with pytest.raises(InputError, match="shape"):
        write_volume(tmp_path / "out2.nii.gz", np.ones((2, 5, 6), np.uint8), reference=ref)
    with pytest.raises(ValueError, match="geometry"):
        write_volume(tmp_path / "out3.nii.gz", np.ones(SHAPE, np.uint8))


def test_cross_format_mha_nifti_mha_keeps_geometry(tmp_path: Path) -> None:
    data = sample(np.float32)
    write_volume(tmp_path / "a.mha", data, GEOM)
    arr, geo = read_volume(tmp_path / "a.mha")
    write_volume(tmp_path / "b.nii.gz", arr, geo)
    arr, geo_nii = read_volume(tmp_path / "b.nii.gz")
    write_volume(tmp_path / "c.mha", arr, geo_nii)
    arr, geo_back = read_volume(tmp_path / "c.mha")
    np.testing.assert_array_equal(arr, data)
    assert geo_back.same_as(GEOM) and geo_nii.same_as(GEOM)
    write_volume(tmp_path / "d.nii", arr, geo_nii)  # NIfTI -> NIfTI
    assert read_volume(tmp_path / "d.nii")[1].same_as(geo_nii, tol=1e-7)


def test_nibabel_affine_survives_our_round_trip(tmp_path: Path) -> None:
    affine = nibabel_affine()
    data_xyz = sample(np.int16).T  # nibabel's array is [x, y, z]
    nib.save(nib.Nifti1Image(data_xyz, affine), tmp_path / "in.nii.gz")
    src_affine = nib.load(tmp_path / "in.nii.gz").affine
    array, geometry = read_volume(tmp_path / "in.nii.gz")
    np.testing.assert_array_equal(array, data_xyz.T)  # [z, y, x] is the transpose
    # Our LPS geometry is the RAS affine with x and y negated.
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(geometry.origin, lps @ src_affine[:3, 3], atol=1e-5)
    np.testing.assert_allclose(geometry.spacing, [3.0, 0.8, 0.7], atol=1e-6)
    index = np.array([2, 3, 4])  # z, y, x
    ras = src_affine @ np.r_[index[::-1], 1]
    np.testing.assert_allclose(geometry.index_to_physical(index), lps @ ras[:3], atol=1e-4)
    write_volume(tmp_path / "out.nii.gz", array, geometry)
    out = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(out.affine, src_affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.dataobj), data_xyz)


def test_nifti_scaling_and_2d(tmp_path: Path) -> None:
    img = nib.Nifti1Image(sample(np.int16).T, nibabel_affine())
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    array, _ = read_volume(tmp_path / "scaled.nii.gz")
    assert np.issubdtype(array.dtype, np.floating)  # the rescale makes values fractional
    np.testing.assert_allclose(array, sample(np.int16) * 0.5 - 3.0)
    flat = np.arange(30, dtype=np.uint8).reshape(6, 5)  # nibabel [x, y]
    nib.save(nib.Nifti1Image(flat, np.diag([0.5, 0.6, 1.0, 1.0])), tmp_path / "flat.nii")
    array, geometry = read_volume(tmp_path / "flat.nii")
    assert array.shape == (1, 5, 6) and array.dtype == np.uint8
    np.testing.assert_array_equal(array[0], flat.T)
    np.testing.assert_allclose(geometry.spacing, (1.0, 0.6, 0.5))


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
def test_nan_and_inf_are_refused_with_their_count(tmp_path: Path, suffix: str) -> None:
    """Every format, NIfTI included (ITK's NIfTI reader would read them as 0)."""
    data = sample(np.float32)
    data[1, 2, 3], data[0, 0, 0], data[3, 4, 5] = np.nan, np.inf, -np.inf
    path = tmp_path / f"bad{suffix}"
    write_volume(path, data, GEOM)
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert str(err.value) == f"{path}: the volume contains 3 NaN or infinite values"
    allnan = tmp_path / f"allnan{suffix}"
    write_volume(allnan, np.full(SHAPE, np.nan, np.float32), GEOM)
    with pytest.raises(InputError, match=f"contains {np.prod(SHAPE)} NaN or infinite values"):
        read_volume(allnan)


def test_identity_affine_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.float32), np.eye(4)), tmp_path / "acdc.nii.gz")
    with caplog.at_level(logging.WARNING, logger="medsamkit.io.volume"):
        _, geometry = read_volume(tmp_path / "acdc.nii.gz")
    assert geometry.is_identity_affine()
    assert "no spacing stored (identity affine); distances in voxels" in caplog.text
    caplog.clear()
    write_volume(tmp_path / "ok.nii.gz", np.ones(SHAPE, np.float32), GEOM)
    with caplog.at_level(logging.WARNING, logger="medsamkit.io.volume"):
        read_volume(tmp_path / "ok.nii.gz")
    assert "identity affine" not in caplog.text


def test_read_image_dispatches(tmp_path: Path) -> None:
    write_volume(tmp_path / "v.nrrd", sample(np.uint8), GEOM)
    array, geometry = read_image(tmp_path / "v.nrrd")
    assert array.shape == SHAPE and geometry.same_as(GEOM)
    from medsamkit.io.writers import write_png

    write_png(tmp_path / "p.png", np.arange(12, dtype=np.uint8).reshape(3, 4))
    array, geometry = read_image(tmp_path / "p.png")
    assert array.shape == (3, 4) and geometry == Geometry.identity()


def test_volume_suffix() -> None:
    assert volume_suffix("A/B.NII.GZ") == ".nii.gz" and volume_suffix("x.nii") == ".nii"
    assert volume_suffix("x.gz") is None and volume_suffix("x.png") is None


# ----------------------------------------------------------------------------- errors

def _bad_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, match", [
    ("missing.nii.gz", None, "not found"),
    ("empty.mha", b"", "empty"),
    ("corrupt.nii.gz", b"not a nifti file" * 30, "cannot read"),
    ("corrupt.mha", b"garbage" * 30, "cannot read"),
    ("notes.xyz", b"hello", "unsupported"),
    ("slice.dcm", b"\0" * 200, "single DICOM file"),
    ("data.raw", b"\0" * 200, "header"),
])
def test_read_errors_name_the_file(tmp_path: Path, name: str, content: bytes | None,
                                   match: str) -> None:
    path = tmp_path / name if content is None else _bad_file(tmp_path, name, content)
    with pytest.raises(InputError, match=match) as info:
        read_volume(path)
    assert str(path) in str(info.value) and info.value.source == str(path)


def test_truncated_and_4d_files(tmp_path: Path) -> None:
    good = write_volume(tmp_path / "good.nrrd", sample(np.float32), GEOM).read_bytes()
    truncated = _bad_file(tmp_path, "cut.nrrd", good[: len(good) - 100])
    with pytest.raises(InputError, match="cut.nrrd"):
        read_volume(truncated)
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 3), np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="has 4 dimensions .time/channels.; pass one volume"):
        read_volume(tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="only applies to DICOM"):
        read_volume(tmp_path / "good.nrrd", series=0)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here", encoding="utf-8")
    with pytest.raises(InputError, match="no DICOM series") as info:
        read_volume(tmp_path)
    assert info.value.source == str(tmp_path)


def test_output_equal_to_input_is_refused(tmp_path: Path) -> None:
    path = write_volume(tmp_path / "img.mha", sample(np.int16), GEOM)
    before = path.read_bytes()
    with pytest.raises(InputError, match="refusing to overwrite"):
        write_volume(tmp_path / "." / "img.mha", np.zeros(SHAPE, np.uint8), GEOM, reference=path)
    assert path.read_bytes() == before


def test_unsupported_output_ending(tmp_path: Path) -> None:
    for name in ("out.dcm", "out.png", "out"):
        with pytest.raises(InputError, match="unsupported volume file ending"):
            write_volume(tmp_path / name, sample(np.uint8), GEOM)
    with pytest.raises(ValueError, match="float16"):
        write_volume(tmp_path / "h.mha", np.zeros(SHAPE, np.float16), GEOM)


def test_failed_write_leaves_existing_output(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_volume(tmp_path / "seg.nii.gz", sample(np.uint8), GEOM)
    before = path.read_bytes()

    def half_write(image: sitk.Image, name: str, *args: object, **kwargs: object) -> None:
        Path(name).write_bytes(b"half a file")
        raise RuntimeError("ITK ERROR: NiftiImageIO(0x1): disk full")

    monkeypatch.setattr(sitk, "WriteImage", half_write)
    with pytest.raises(InputError, match="disk full") as info:
        write_volume(path, np.zeros(SHAPE, np.uint8), GEOM)
    assert info.value.source == str(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]
