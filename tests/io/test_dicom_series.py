"""Tests for reading DICOM series folders (medsamkit.io.dicom_series via read_volume).

The series are written here with pydicom: oblique orientation, anisotropic pixel spacing,
RescaleSlope 2 / RescaleIntercept -1024, and shuffled file names so that only sorting by
ImagePositionPatient gives the right slice order.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medsamkit.errors import InputError
from medsamkit.io import read_image, read_volume, write_volume
from medsamkit.io.dicom_series import list_dicom_series, narrow_rescaled

ROWS, COLS, N_SLICES = 6, 7, 5
PIXEL_SPACING = (0.8, 0.7)  # DICOM order: between rows (y), between columns (x)
STEP = 2.5  # mm between slice positions (SliceThickness says 3.0: it must NOT be used)
ORIGIN = np.array([-10.0, 20.0, 30.0])


def orientation() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal of an oblique orientation."""
    a, b = np.deg2rad(20.0), np.deg2rad(20.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rot = rx @ ry
    return rot[:, 0], rot[:, 1], np.cross(rot[:, 0], rot[:, 1])


def stored_values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3000, (N_SLICES, ROWS, COLS)).astype(np.int16)


def write_series(folder: Path, stored: np.ndarray, description: str = "axial CT",
                 seed: int = 1, prefix: str = "img") -> str:
    """Write ``stored`` ([z, y, x] int16) as a CT series; slice k lies at ORIGIN + k*STEP*normal.

    File names are shuffled so that name order differs from position order. Returns the UID.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col, normal = orientation()
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    names = list(range(len(stored)))
    random.Random(seed).shuffle(names)
    for k, pixels in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.SeriesDescription = "CT", "anon", description
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = len(stored) - k  # reversed: instance numbers must not decide order
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ORIGIN + k * STEP * normal]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = 3.0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
        pydicom.dcmwrite(folder / f"{prefix}{names[k]:03d}.dcm", ds, enforce_file_format=True)
    return series_uid


def test_series_order_hounsfield_units_and_geometry(tmp_path: Path) -> None:
    stored = stored_values()
    write_series(tmp_path / "ct", stored)
    array, geometry = read_volume(tmp_path / "ct")
    assert array.shape == (N_SLICES, ROWS, COLS)
    assert np.issubdtype(array.dtype, np.signedinteger)  # HU are integers here: no float
    np.testing.assert_array_equal(array, stored.astype(np.int32) * 2 - 1024)
    assert array.dtype == np.int16  # GDCM's int32 narrowed back: the values fit
    row, col, normal = orientation()
    np.testing.assert_allclose(geometry.spacing, (STEP, *PIXEL_SPACING), atol=1e-4)
    np.testing.assert_allclose(geometry.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(geometry.direction_matrix, np.stack([row, col, normal], axis=1),
                               atol=1e-5)
    last = geometry.index_to_physical((N_SLICES - 1, 0, 0))
    np.testing.assert_allclose(last, ORIGIN + (N_SLICES - 1) * STEP * normal, atol=1e-3)
    assert read_image(tmp_path / "ct")[0].shape == array.shape


def test_series_to_nifti_keeps_geometry(tmp_path: Path) -> None:
    write_series(tmp_path / "ct", stored_values())
    array, geometry = read_volume(tmp_path / "ct")
    out = write_volume(tmp_path / "ct.nii.gz", array, geometry, reference=tmp_path / "ct")
    back, back_geometry = read_volume(out)
    np.testing.assert_array_equal(back, array)
    assert back_geometry.same_as(geometry)


def test_two_series_in_one_folder(tmp_path: Path) -> None:
    first, second = stored_values(0), stored_values(1)[:3]
    uid_a = write_series(tmp_path, first, "arterial phase", seed=2, prefix="a")
    uid_b = write_series(tmp_path, second, "venous phase", seed=3, prefix="b")
    with pytest.raises(InputError) as info:
        read_volume(tmp_path)
    message = str(info.value)
    assert info.value.source == str(tmp_path) and "2 DICOM series" in message
    for text in (uid_a, uid_b, "'arterial phase'", "'venous phase'", "5 slices", "3 slices",
                 "series="):
        assert text in message
    listed = list_dicom_series(tmp_path)
    assert [s.uid for s in listed] == sorted([uid_a, uid_b])
    index_b = [s.uid for s in listed].index(uid_b)
    by_uid, _ = read_volume(tmp_path, series=uid_b)
    by_index, _ = read_volume(tmp_path, series=index_b)
    np.testing.assert_array_equal(by_uid, second.astype(np.int32) * 2 - 1024)
    np.testing.assert_array_equal(by_index, by_uid)
    assert read_volume(tmp_path, series=uid_a)[0].shape == (N_SLICES, ROWS, COLS)
    for wrong in ("1.2.3", 7):
        with pytest.raises(InputError, match="no DICOM series"):
            read_volume(tmp_path, series=wrong)


def test_uneven_slices_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_series(tmp_path, stored_values())
    missing = sorted(tmp_path.iterdir(), key=lambda p: pydicom.dcmread(p).ImagePositionPatient[2])
    missing[2].unlink()  # a gap in the middle of the series
    with caplog.at_level(logging.WARNING, logger="medsamkit.io.dicom_series"):
        array, _ = read_volume(tmp_path)
    assert array.shape[0] == N_SLICES - 1 and "unevenly spaced" in caplog.text


def test_folder_with_other_files_only(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    write_series(tmp_path / "sub", stored_values())  # sub-folders are not searched
    with pytest.raises(InputError, match="no DICOM series found"):
        read_volume(tmp_path)


def test_narrow_rescaled() -> None:
    assert narrow_rescaled(np.array([-1024, 3000], np.int32)).dtype == np.int16
    assert narrow_rescaled(np.array([0, 60000], np.int32)).dtype == np.uint16
    assert narrow_rescaled(np.array([0, 70000], np.int32)).dtype == np.int32
    assert narrow_rescaled(np.array([0.5], np.float64)).dtype == np.float64
