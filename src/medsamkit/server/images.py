"""An opened image or volume as the server holds it: pixels as stored, geometry, how to show it.

:func:`open_image` reads anything ``medsamkit segment`` reads (a 2D image file, a volume file,
a DICOM series folder) with the same readers and the same default intensity scheme, and names
the user's file (not a temporary copy) in every error. The model's input is made by the
interaction session from these pixels; what is here serves display and downloads.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.geometry import Geometry
from ..io.image2d import read_image_2d
from ..io.volume import read_volume, volume_suffix
from ..preprocessing.intensity import WINDOW_PRESETS, CTWindow, parse_window, select_scheme

#: Plane axes of a volume's ``[z, y, x]`` array: 0 axial (a z slice), 1 coronal (a y row), 2 sagittal.
AXES = ("axial", "coronal", "sagittal")
_SAMPLE = 1 << 21  # voxels used to estimate display percentiles


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One opened file.

    Attributes:
        name: the file name the user gave (shown, and used in downloads and replay commands).
        volume: a 3D volume (``[z, y, x]``) rather than a 2D image (``[y, x]`` or ``[y, x, 3]``).
        pixels: the values as stored (dtype kept; CT in HU).
        kind: the intensity kind (:data:`~medsamkit.io.image2d.KINDS`) the scheme is chosen by.
        geometry: the volume's geometry (2D: spacing ``(1, row, col)``).
        modality, window: the intensity options the model input is made with (as ``--modality``
            and ``--window``; None for the default by kind).
        output_suffix: the label map's file ending (``.png``; a volume's own ending or ``.nii.gz``).
        display_window: (low, high) values shown black and white at first (the model's view).
    """

    name: str
    volume: bool
    pixels: np.ndarray
    kind: str
    geometry: Geometry
    modality: str | None
    window: str | None
    output_suffix: str
    display_window: tuple[float, float]

    @property
    def shape(self) -> tuple[int, ...]:
        """``(z, y, x)`` for volumes, ``(y, x)`` for 2D images."""
        return tuple(int(s) for s in (self.pixels.shape if self.volume else self.pixels.shape[:2]))

    @property
    def rgb(self) -> bool:
        return not self.volume and self.pixels.ndim == 3

    def scheme(self):
        """The intensity scheme ``medsamkit segment`` would use (with the same options)."""
        return select_scheme(self.kind, self.modality, self.window)

    def info(self) -> dict:
        """What the page needs to lay the image out (JSON-ready)."""
        lo, hi = self.value_range()
        return {
            "name": self.name, "volume": self.volume, "shape": list(self.shape),
            "channels": 3 if self.rgb else 1, "dtype": str(self.pixels.dtype), "kind": self.kind,
            "spacing": list(self.geometry.spacing), "modality": self.modality, "window": self.window,
            "scheme": self.scheme()[1], "display_window": list(self.display_window),
            "value_range": [lo, hi], "ct": self.kind == "ct" or self.modality == "ct",
            "output": self.output_name(),
        }

    def value_range(self) -> tuple[float, float]:
        return float(self.pixels.min()), float(self.pixels.max())

    def output_name(self) -> str:
        """The label map's download name: ``NAME_labels.png`` / ``NAME_labels.nii.gz``."""
        stem = self.name
        for suffix in (volume_suffix(stem) or "", Path(stem).suffix, ".zip"):
            if suffix and stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
        return f"{stem}_labels{self.output_suffix}"

    def plane(self, axis: int, index: int) -> np.ndarray:
        """A 2D plane as stored: axial ``[y, x]`` (or ``[y, x, 3]``), coronal ``[z, x]``, sagittal ``[z, y]``."""
        if not self.volume:
            if (axis, index) != (0, 0):
                raise InputError(self.name, "a 2D image has one plane: axis 0, index 0")
            return self.pixels
        if axis not in (0, 1, 2):
            raise InputError(self.name, f"axis {axis} is not 0 (axial), 1 (coronal) or 2 (sagittal)")
        n = self.pixels.shape[axis]
        if not 0 <= index < n:
            raise InputError(self.name, f"{AXES[axis]} index {index} is outside 0..{n - 1}")
        return np.take(self.pixels, index, axis=axis)


def _display_window(pixels: np.ndarray, kind: str, modality: str | None, window: str | None) -> tuple[float, float]:
    """The values the model's intensity scheme maps to black and white, for the first display."""
    if window is not None:
        level, width = parse_window(window)
        return CTWindow(level, width).bounds
    if kind == "ct" or modality == "ct":
        return CTWindow(*WINDOW_PRESETS["abdomen"]).bounds
    if kind in ("rgb8", "grey8") and modality in (None, "auto", "rgb", "none"):
        return 0.0, 255.0
    flat = pixels.reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    positive = sample[sample > 0]
    values = positive if positive.size else sample
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    return lo, hi if hi > lo else lo + 1.0


def open_image(path: str | os.PathLike, name: str | None = None, modality: str | None = None,
               window: str | None = None) -> ImageRecord:
    """Read a 2D image, a volume file or a DICOM series folder for the page.

    ``name`` (default: the path's name) replaces the path in error messages, so that the user
    reads the name of the file they chose, not of a temporary copy. A DICOM CT series gets the
    CT scheme by default, as with ``medsamkit segment``.
    """
    from ..inference.volume3d import is_dicom_ct, volume_kind

    p = Path(path)
    name = name or p.name
    try:
        select_scheme("grey8", modality, window)  # a bad --modality/--window fails first
        if volume_suffix(p) is not None or p.is_dir():
            array, geometry = read_volume(p)
            if modality is None and window is None and p.is_dir() and is_dicom_ct(p):
                modality = "ct"
            kind = volume_kind(array)
            suffix = volume_suffix(p) or ".nii.gz"
            suffix = {".nii": ".nii.gz", ".mhd": ".mha", ".nhdr": ".nrrd"}.get(suffix, suffix)
            display = _display_window(array, kind, modality, window)
            return ImageRecord(name, True, array, kind, geometry, modality, window, suffix, display)
        image = read_image_2d(p)
    except InputError as exc:
        raise renamed(exc, p, name) from None
    row, col = image.spacing
    display = _display_window(image.pixels, image.kind, modality, window)
    return ImageRecord(name, False, image.pixels, image.kind, Geometry(spacing=(1.0, row, col)),
                       modality, window, ".png", display)


def renamed(exc: InputError, path: Path, name: str) -> InputError:
    """``exc`` with ``path`` (and any file inside it) replaced by ``name`` in its source and problem."""
    text = os.fspath(path)

    def fix(value: str | None) -> str | None:
        if value is None:
            return None
        value = value.replace(text + os.sep, name + "/").replace(text, name)
        return value

    return InputError(fix(exc.source) or name, fix(exc.problem) or "")
