"""Read one :class:`~medsamkit.data.cases.Case` into arrays: its image, its label map and where
the voxels lie (the step between :mod:`medsamkit.data.layouts`, which only lists files, and the
preprocess pipeline in :mod:`medsamkit.data.preprocess`).

Every case comes back as a stack of slices, ``[z, y, x]`` (grey) or ``[z, y, x, 3]`` (RGB), with a
``[z, y, x]`` integer label map; a 2D image is a stack of one slice with ``is_3d`` False. Values
are as stored (no intensity scaling here). Per layout:

- ``nnunet``/``folder-pairs``: any file :func:`medsamkit.io.read_image` reads (volumes by file
  ending, 2D images otherwise); channel ``channel`` of a multi-channel nnU-Net case.
- ``kvasir``: JPEG masks stored as RGB with compression noise: foreground = mean over channels
  ``> mask_threshold`` (127), as ``Dataset.meta`` says.
- ``refuge``: the label is the majority vote (mean >= 0.5) of the seven cup rater masks.
- ``btcv``: frame folders ``K.jpg`` stacked along z, mask frames ``K.npy`` likewise.
- ``medsam-npy``: ``imgs`` float in [0, 1] -> uint8 by ``round(255 x)``; ``gts`` label maps.
- ``medsam-npz``: ``imgs``/``gts`` (3D ``[z, y, x]`` or 2D), ``spacing`` in SimpleITK order
  (x, y, z) turned to array order (z, y, x).

Masks given as 0/255 images (one non-zero value, 255) become label 1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsamkit.data.cases import Case, split_ending
from medsamkit.errors import InputError
from medsamkit.io import read_image
from medsamkit.io.geometry import Geometry
from medsamkit.io.image2d import read_image_2d
from medsamkit.io.volume import is_volume_path

logger = logging.getLogger(__name__)

_CV2_MASK_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class CaseArrays:
    """The arrays of one case, as stored on disk.

    Attributes:
        image: ``[z, y, x]`` or ``[z, y, x, 3]`` (RGB) pixel values as stored; z = 1 for 2D.
        label: ``[z, y, x]`` non-negative integer label map (0 = background), None without label.
        is_3d: True for volumes (3D label cleanup, slice indices kept), False for 2D images.
        geometry: spacing (z, y, x) in mm, origin and direction (see :class:`Geometry`); 2D
            images have spacing ``(1, row, col)``.
        kind: the image kind for :func:`~medsamkit.preprocessing.intensity.select_scheme`
            (``rgb8``, ``grey8``, ``grey16``, ``ct`` or ``float``).
        sources: the files the image was read from (one channel, or every frame).
        label_sources: the files the label was read from.
    """

    image: np.ndarray
    label: np.ndarray | None
    is_3d: bool
    geometry: Geometry
    kind: str
    sources: list[str] = field(default_factory=list)
    label_sources: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])

    @property
    def slice_shape(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[2])


# ------------------------------------------------------------------------------- helpers
def kind_of(array: np.ndarray) -> str:
    """The image kind of an array by its dtype and shape (uint8 RGB/grey, other ints, floats)."""
    if np.issubdtype(array.dtype, np.floating):
        return "float"
    if array.dtype == np.uint8:
        return "rgb8" if array.ndim >= 3 and array.shape[-1] == 3 else "grey8"
    return "grey16"


def _grey_or_rgb(arr: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """An RGB array whose three channels are equal becomes grey; other shapes pass through."""
    if arr.ndim >= 3 and arr.shape[-1] == 3 and np.array_equal(arr[..., 0], arr[..., 1]) \
            and np.array_equal(arr[..., 0], arr[..., 2]):
        return np.ascontiguousarray(arr[..., 0])
    return arr


def _mask_values(arr: np.ndarray, source: str | os.PathLike,
                 threshold: float | None = None, image_2d: bool = True) -> np.ndarray:
    """A mask image (``image_2d``: H x W or H x W x 3/4) or label volume -> integer label map.

    Colour masks: with ``threshold`` the channel mean is thresholded (noisy JPEG masks); else the
    channels must be equal. 0/255 masks become 0/1. Booleans become 0/1.
    """
    arr = np.asarray(arr)
    colour = image_2d and arr.ndim == 3
    if colour and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if threshold is not None:
        grey = arr.astype(np.float32).mean(axis=-1) if colour else arr
        return (grey > threshold).astype(np.uint8)
    if colour:
        grey = _grey_or_rgb(arr, source)
        if grey.ndim == 3:
            raise InputError(source, "is a colour mask (the three channels differ); "
                                     "a label image holds one label id per pixel")
        arr = grey
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)) or arr.min() < 0:
            raise InputError(source, "the label holds values that are not whole numbers >= 0")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(source, f"a label must hold integers, not {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise InputError(source, f"the label holds negative values (min {arr.min()})")
    nonzero = np.unique(arr[arr != 0]) if arr.size else np.array([])
    if len(nonzero) == 1 and int(nonzero[0]) == 255:
        return (arr != 0).astype(np.uint8)
    top = int(arr.max(initial=0))
    return arr.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)


def read_mask_2d(path: Path) -> np.ndarray:
    """Read a 2D mask file without the image checks (an all-zero mask is a valid mask)."""
    ending = split_ending(path)[1]
    if not path.is_file():
        raise InputError(path, "label file not found")
    if ending == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(path, f"cannot read the .npy label: {exc}") from exc
    if ending in _CV2_MASK_ENDINGS:
        import cv2

        data = np.fromfile(path, dtype=np.uint8)
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if arr is None:
            raise InputError(path, "cannot decode the label image (corrupt or empty file?)")
        return arr[..., ::-1] if arr.ndim == 3 else arr  # BGR -> RGB
    return read_image_2d(path).pixels


def _read_label(path: Path, threshold: float | None = None) -> np.ndarray:
    """A label file (volume or 2D) -> ``[z, y, x]`` integer label map."""
    if is_volume_path(path) and not path.is_dir():
        array, _ = read_image(path)
        return _mask_values(array, path, image_2d=False)
    return _mask_values(read_mask_2d(path), path, threshold)[np.newaxis]


def _geometry_2d(spacing: tuple[float, float]) -> Geometry:
    return Geometry(spacing=(1.0, float(spacing[0]), float(spacing[1])))


def _read_image_file(path: Path) -> tuple[np.ndarray, Geometry, str, bool]:
    """(stack, geometry, kind, is_3d) of one image file or volume."""
    if is_volume_path(path):
        array, geometry = read_image(path)
        return array, geometry, kind_of(array), True
    image = read_image_2d(path)
    return image.pixels[np.newaxis], _geometry_2d(image.spacing), image.kind, False


def _check_shapes(arrays: CaseArrays, label_source: str | os.PathLike) -> CaseArrays:
    if arrays.label is not None and arrays.label.shape != arrays.image.shape[:3]:
        what = "(z, y, x)" if arrays.is_3d else "(1, y, x)"
        raise InputError(label_source, f"label shape {tuple(arrays.label.shape)} does not match "
                                       f"the image shape {tuple(arrays.image.shape[:3])} {what}")
    return arrays


# ------------------------------------------------------------------------------- layouts
def _read_paired(case: Case, meta: dict[str, Any], channel: int) -> CaseArrays:
    """nnunet, folder-pairs and kvasir: one image file (per channel) and one label file."""
    if not 0 <= channel < len(case.images):
        raise InputError(case.images[0], f"--channel {channel} does not exist: the case has "
                                         f"{len(case.images)} channel file(s)")
    path = case.images[channel]
    image, geometry, kind, is_3d = _read_image_file(path)
    label = None
    if case.label is not None:
        label = _read_label(case.label, meta.get("mask_threshold"))
    arrays = CaseArrays(image, label, is_3d, geometry, kind, [str(path)],
                        [str(case.label)] if case.label is not None else [])
    return _check_shapes(arrays, case.label or path)


def _read_refuge(case: Case, meta: dict[str, Any], channel: int) -> CaseArrays:
    image, geometry, kind, _ = _read_image_file(case.images[0])
    target = meta.get("target", "cup")
    raters = list(case.extra.get(f"{target}_raters", ()))
    label = None
    if raters:
        votes = []
        for path in raters:
            mask = read_mask_2d(Path(path))
            mask = _grey_or_rgb(mask, path)
            if mask.ndim != 2:
                raise InputError(path, "is a colour mask; rater masks are grey 0/255 images")
            scale = 255.0 if mask.dtype == np.uint8 and mask.max(initial=0) > 1 else 1.0
            votes.append(mask.astype(np.float32) / scale)
        shapes = {v.shape for v in votes}
        if len(shapes) != 1:
            raise InputError(raters[0], f"the {target} rater masks differ in size: {sorted(shapes)}")
        label = (np.mean(votes, axis=0) >= 0.5).astype(np.uint8)[np.newaxis]
    arrays = CaseArrays(image, label, False, geometry, kind, [str(case.images[0])],
                        [str(p) for p in raters])
    return _check_shapes(arrays, raters[0] if raters else case.images[0])


def _read_btcv(case: Case, meta: dict[str, Any], channel: int) -> CaseArrays:
    frames = [read_image_2d(p).pixels for p in case.images]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InputError(case.images[0].parent, f"the image frames differ in size: {sorted(shapes)}")
    image = _grey_or_rgb(np.stack(frames), case.images[0].parent)
    label_frames = [Path(p) for p in case.extra.get("label_frames", ())]
    label = None
    if case.label is not None and label_frames:
        if len(label_frames) != len(frames):
            raise InputError(case.label, f"{len(label_frames)} mask frames for {len(frames)} "
                                         "image frames")
        masks = [_mask_values(read_mask_2d(p), p) for p in label_frames]
        if len({m.shape for m in masks}) != 1:
            raise InputError(case.label, "the mask frames differ in size")
        label = np.stack(masks)
    arrays = CaseArrays(image, label, True, Geometry.identity(), kind_of(image),
                        [str(p) for p in case.images], [str(p) for p in label_frames])
    return _check_shapes(arrays, case.label or case.images[0])


def _read_medsam_npy(case: Case, meta: dict[str, Any], channel: int) -> CaseArrays:
    path = case.images[0]
    try:
        image = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the .npy image: {exc}") from exc
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < -1e-3 or image.max() > 1 + 1e-3:
            raise InputError(path, f"MedSAM npy images hold values in [0, 1], found "
                                   f"{image.min():g}..{image.max():g}")
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = _grey_or_rgb(image, path)
    if image.ndim not in (2, 3):
        raise InputError(path, f"expected an H x W x 3 image, got shape {image.shape}")
    label = None
    if case.label is not None:
        label = _mask_values(read_mask_2d(case.label), case.label)[np.newaxis]
    arrays = CaseArrays(image[np.newaxis], label, False, Geometry.identity(), kind_of(image),
                        [str(path)], [str(case.label)] if case.label else [])
    return _check_shapes(arrays, case.label or path)


def _read_medsam_npz(case: Case, meta: dict[str, Any], channel: int) -> CaseArrays:
    path = case.images[0]
    try:
        with np.load(path, allow_pickle=False) as archive:
            image = archive[case.extra.get("image_key", "imgs")]
            label_key = case.extra.get("label_key")
            label = archive[label_key] if label_key else None
            spacing = archive["spacing"] if "spacing" in archive.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot read the .npz archive: {exc}") from exc
    is_3d = label.ndim == 3 if label is not None else (image.ndim == 3 and image.shape[-1] != 3)
    geometry = Geometry.identity()
    if is_3d and spacing is not None and np.size(spacing) == 3:  # SimpleITK order x, y, z
        geometry = Geometry(spacing=tuple(float(s) for s in np.ravel(spacing)[::-1]))
    elif not is_3d and spacing is not None and np.size(spacing) == 2:
        geometry = _geometry_2d(tuple(float(s) for s in np.ravel(spacing)[::-1]))
    if not is_3d:
        image = image[np.newaxis]
        label = label[np.newaxis] if label is not None else None
    if label is not None:
        label = _mask_values(label, path, image_2d=False)
    arrays = CaseArrays(image, label, is_3d,
                        geometry, kind_of(image), [str(path)], [str(path)] if label is not None else [])
    return _check_shapes(arrays, path)


_READERS = {
    "nnunet": _read_paired, "folder-pairs": _read_paired, "kvasir": _read_paired,
    "refuge": _read_refuge, "btcv": _read_btcv,
    "medsam-npy": _read_medsam_npy, "medsam-npz": _read_medsam_npz,
}


def has_label(case: Case, layout: str, meta: dict[str, Any] | None = None) -> bool:
    """Whether the case has a label to read (REFUGE: rater masks of the target structure)."""
    if layout == "refuge":
        return bool(case.extra.get(f"{(meta or {}).get('target', 'cup')}_raters"))
    return case.label is not None


def read_case_arrays(case: Case, layout: str, meta: dict[str, Any] | None = None,
                     channel: int = 0) -> CaseArrays:
    """Read the image and label of ``case`` from a dataset of ``layout``.

    Args:
        case: the case (from :func:`medsamkit.data.layouts.read_dataset`).
        layout: the dataset's layout name.
        meta: the dataset's ``meta`` (mask threshold, REFUGE target ...).
        channel: which image file of a multi-channel case to read (nnU-Net ``_000C``).

    Raises:
        InputError: naming the file for unreadable files and image/label shape mismatches.
    """
    if layout not in _READERS:
        raise InputError(None, f"no case reader for layout {layout!r}")
    return _READERS[layout](case, meta or {}, channel)
