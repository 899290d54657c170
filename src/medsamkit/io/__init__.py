"""medsamkit.io: reading and writing images, volumes and masks.

Array convention (one for the whole package, see :mod:`medsamkit.io.geometry`): a volume is
``[z, y, x]`` (slice, row, column) as ``SimpleITK.GetArrayFromImage`` gives it; a 2D image is
``[y, x]`` or ``[y, x, 3]`` (RGB). Geometry (spacing in mm in array order, LPS origin and
direction) travels with the array as a :class:`Geometry`.
"""

from __future__ import annotations

import os

import numpy as np

from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import is_volume_path, read_volume, write_volume

__all__ = ["Geometry", "read_image", "read_volume", "write_volume"]


def read_image(path: str | os.PathLike, *, series: str | int | None = None
               ) -> tuple[np.ndarray, Geometry]:
    """Read a 2D image or a 3D volume, chosen by the file ending; return ``(array, geometry)``.

    Volumes (``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``, a DICOM series
    folder) come back as ``[z, y, x]`` via :func:`read_volume` (``series`` picks a DICOM series).
    Anything else is read by :func:`medsamkit.io.image2d.read_image_2d` and comes back as
    ``[y, x]`` or ``[y, x, 3]`` with geometry spacing ``(1, row, column)`` mm (DICOM
    PixelSpacing, else 1), origin 0 and no rotation. Raises
    :class:`~medsamkit.errors.InputError` naming the file for anything unreadable.
    """
    from medsamkit.errors import InputError
    from medsamkit.io.image2d import read_image_2d

    if is_volume_path(path):
        return read_volume(path, series=series)
    if series is not None:
        raise InputError(path, "series= only applies to DICOM folders")
    image = read_image_2d(path)
    row, col = image.spacing
    return image.pixels, Geometry(spacing=(1.0, row, col))
