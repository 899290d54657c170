"""Reading prediction and ground-truth masks as integer label maps for evaluation.

Volumes (``.nii.gz``, ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) are read with
:func:`medsamkit.io.volume.read_volume` and keep their geometry (spacing in mm). Everything else
is a 2D mask read with :func:`medsamkit.io.image2d.read_image_2d` (an all-zero mask, which
that reader refuses as "constant", is read as stored); its spacing is the DICOM pixel spacing
or 1 per pixel.

Turning stored values into labels (``threshold``):

* a number ``T``: binarise, label 1 where the value is > T (background elsewhere);
* ``"none"``: keep the stored values as labels (they must be non-negative integers);
* ``"auto"`` (default), for 2D masks: RGB masks use their first channel, then
  JPEG files (lossy, so grey levels appear around the edges) are thresholded at > 127; masks
  whose values are only 0 and 255 become 0/1; 8-bit masks with values above 127 that are not
  all known labels (``0..max(labels)`` when labels are given) are treated as grey-level binary
  masks and thresholded at > 127; anything else is a label map kept as stored (``segment``
  writes 0/255 for one object and 1..N for several). Volumes are kept as stored under ``auto``.

Float-valued files must hold whole numbers (BraTS stores labels as float32), unless a numeric
threshold binarises them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsamkit.errors import InputError
from medsamkit.io.geometry import Geometry
from medsamkit.io.image2d import NPZ_IMAGE_KEYS, read_image_2d
from medsamkit.io.volume import read_volume, volume_suffix

#: Suffixes of lossy formats, thresholded under ``auto``.
LOSSY_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")

Threshold = str | float


@dataclass(frozen=True, eq=False)
class LabelImage:
    """A mask as a label map.

    Attributes:
        array: non-negative integer labels, ``[y, x]`` or ``[z, y, x]`` (0 = background).
        spacing: voxel size along each array axis (mm for volumes; 2D: DICOM or 1).
        geometry: the full geometry of volumes; None for 2D files.
        source: the file it came from.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    geometry: Geometry | None
    source: str


def parse_threshold(text: str | float | None) -> Threshold:
    """``"auto"``, ``"none"`` or a number, from a command-line value."""
    if text is None:
        return "auto"
    if isinstance(text, (int, float)):
        return float(text)
    value = str(text).strip().lower()
    if value in ("auto", "none"):
        return value
    try:
        return float(value)
    except ValueError:
        raise InputError(None, f"threshold {text!r} must be auto, none or a number") from None


def read_label_file(path: str | os.PathLike, threshold: Threshold = "auto",
                    labels: tuple[int, ...] | None = None) -> LabelImage:
    """Read one mask file as a :class:`LabelImage` (see the module docstring for the rules)."""
    source = os.fspath(path)
    if volume_suffix(source) is not None:
        array, geometry = read_volume(source)
        values = _to_labels(array, source, threshold if threshold != "auto" else "none")
        return LabelImage(values, geometry.spacing, geometry, source)
    array, spacing = _read_2d(Path(source), source)
    if array.ndim == 3:
        array = array[:, :, 0]
    if threshold == "auto":
        threshold = _auto_threshold(array, source, labels)
    return LabelImage(_to_labels(array, source, threshold), spacing, None, source)


def _auto_threshold(array: np.ndarray, source: str, labels: tuple[int, ...] | None) -> Threshold:
    if Path(source).suffix.lower() in LOSSY_SUFFIXES:
        return 127.0
    if array.dtype != np.uint8:
        return "none"
    present = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    if set(present.tolist()) <= {0, 255}:
        return 254.0  # 255 -> 1
    top = max(labels) if labels else 127
    if present.max() > 127 and present.max() > top:
        return 127.0
    return "none"


def _to_labels(array: np.ndarray, source: str, threshold: Threshold) -> np.ndarray:
    if threshold != "none":
        return (array > float(threshold)).astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
            raise InputError(source, f"cannot use {array.dtype} values as labels")
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise InputError(source, "holds non-integer values, not labels; give a threshold "
                                     "(e.g. --gt-threshold 0.5) to binarise it")
        array = rounded.astype(np.int64)
    if array.size and array.min() < 0:
        raise InputError(source, f"holds negative values ({array.min()}); labels must be >= 0")
    return _narrow(array)


def _narrow(array: np.ndarray) -> np.ndarray:
    top = int(array.max()) if array.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return array.astype(dtype, copy=False)
    return array.astype(np.int64, copy=False)


def _read_2d(p: Path, source: str) -> tuple[np.ndarray, tuple[float, ...]]:
    try:
        image = read_image_2d(p)
    except InputError as exc:
        if not exc.problem.startswith("the image is constant"):
            raise
        return _read_constant(p, source), (1.0, 1.0)  # e.g. an empty mask: all zeros
    return image.pixels, tuple(float(s) for s in image.spacing)


def _read_constant(p: Path, source: str) -> np.ndarray:
    """Pixels of a file that decoded fine but is constant (the 2D reader's validation refuses
    those); layouts as :func:`read_image_2d` returns them."""
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(p, allow_pickle=False) as data:
            arr = data[next((k for k in NPZ_IMAGE_KEYS if k in data.files), data.files[0])]
    else:
        import cv2

        arr = cv2.imdecode(np.fromfile(p, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputError(source, "cannot decode the mask")
    arr = np.squeeze(arr)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise InputError(source, f"a 2D mask needs H x W pixels, got shape {arr.shape}")
    return arr
