"""Opening files for the page: the command line's readers and defaults, user-facing names in errors."""

from __future__ import annotations

import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.io import write_volume
from medsamkit.io.geometry import Geometry
from medsamkit.server.images import open_image, renamed
from pathlib import Path


@pytest.mark.parametrize("ending, output", [(".nii", ".nii.gz"), (".nii.gz", ".nii.gz"), (".mhd", ".mha"),
                                            (".nrrd", ".nrrd")])
def test_a_volume_is_downloaded_in_its_own_format(tmp_path, ending, output):
    path = tmp_path / f"scan{ending}"
    write_volume(path, np.arange(2 * 6 * 7, dtype=np.int16).reshape(2, 6, 7), Geometry(spacing=(2, 1, 1)))
    record = open_image(path, "My Scan (1)" + ending)
    assert record.volume and record.shape == (2, 6, 7) and record.output_suffix == output
    assert record.output_name() == f"My_Scan_1_labels{output}"
    assert record.plane(1, 3).shape == (2, 7) and record.plane(2, 6).shape == (2, 6)
    with pytest.raises(InputError, match="sagittal index 7 is outside 0..6"):
        record.plane(2, 7)


def test_2d_images_keep_the_clis_scheme_and_the_display_starts_at_the_models_view(tmp_path):
    import cv2

    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    record = open_image(tmp_path / "g.png")
    assert record.kind == "grey8" and record.display_window == (0.0, 255.0) and record.output_name() == "g_labels.png"
    windowed = open_image(tmp_path / "g.png", window="lung")
    assert windowed.display_window == (-1350.0, 150.0) and "window 'lung'" in windowed.scheme()[1]
    with pytest.raises(InputError, match="unknown modality 'xyz'"):
        open_image(tmp_path / "g.png", modality="xyz")
    with pytest.raises(InputError, match="a 2D image has one plane"):
        record.plane(0, 1)


def test_errors_name_the_users_file_not_the_temporary_copy(tmp_path):
    copy = tmp_path / "medsamkit-upload-x" / "upload.nii.gz"
    copy.parent.mkdir()
    copy.write_bytes(b"garbage")
    with pytest.raises(InputError) as err:
        open_image(copy, "liver.nii.gz")
    assert err.value.source == "liver.nii.gz" and str(tmp_path) not in str(err.value)
    exc = renamed(InputError(str(copy.parent / "a" / "IM1"), f"bad slice {copy.parent}/a/IM1"), copy.parent, "s.zip")
    assert str(exc) == "s.zip/a/IM1: bad slice s.zip/a/IM1"
