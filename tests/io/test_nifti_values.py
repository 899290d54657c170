"""count_nonfinite: NaN/inf voxels as stored in NIfTI-1/-2 files (ITK's reader zeroes them)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medsamkit.io.nifti_values import count_nonfinite


def _volume(dtype) -> np.ndarray:
    data = np.linspace(-5, 5, 7 * 6 * 5).reshape(7, 6, 5).astype(dtype)  # nibabel [x, y, z]
    data[1, 2, 3] = np.nan
    data[4, 0, 0] = np.inf
    data[6, 5, 4] = -np.inf
    data[0, 0, 0] = np.nan
    return data


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [nib.Nifti1Image, nib.Nifti2Image])
def test_counts_what_the_file_stores(tmp_path: Path, name, dtype, make) -> None:
    path = tmp_path / name
    nib.save(make(_volume(dtype), np.eye(4)), path)
    assert count_nonfinite(path) == 4
    if make is nib.Nifti1Image:  # the reason this module exists: ITK reads them as 0
        itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert np.isfinite(itk).all() and (itk == 0).sum() >= 4


def test_big_endian_extension_and_blocks(tmp_path: Path, monkeypatch) -> None:
    """A big-endian file with a header extension (data further in), scanned in small blocks."""
    monkeypatch.setattr("medsamkit.io.nifti_values._BLOCK", 24)  # blocks that split voxels
    img = nib.Nifti1Image(_volume(np.float64), np.eye(4), header=nib.Nifti1Header(endianness=">"))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 100))
    nib.save(img, tmp_path / "be.nii")
    assert nib.load(tmp_path / "be.nii").header.endianness == ">"
    assert count_nonfinite(tmp_path / "be.nii") == 4


def test_integer_data_and_other_files_count_nothing(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.int16), np.eye(4)), tmp_path / "i.nii.gz")
    assert count_nonfinite(tmp_path / "i.nii.gz") == 0
    (tmp_path / "junk.nii").write_bytes(b"not a nifti header" * 40)
    assert count_nonfinite(tmp_path / "junk.nii") == 0
