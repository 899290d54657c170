"""Label cleanup, per-label targets and boxes derived from masks.

Pure functions on numpy arrays. Axis order: ``[z, y, x]`` for volumes, ``[y, x]`` for 2D images.
Boxes follow the rest of medsamkit: ``(x0, y0, x1, y1)`` (2D) and ``(x0, y0, z0, x1, y1, z1)``
(3D), inclusive pixel indices, x to the right and y down.

Every function accepts binary masks (bool or 0/1) and integer label maps (any dtype holding
non-negative whole numbers, including float arrays such as BraTS labels stored as float32).
Label maps are processed *per label*: components of label 2 never merge with touching label 3.

Constants follow MedSAM's preprocessing (../shared/docs/design.md, "Labels"): 3D objects of fewer
than 1000 voxels are removed with 26-connectivity, then 2D objects of fewer than 100 pixels per
slice with 8-connectivity; training boxes are pushed outward by ``randint(0, 20)`` per side and
clipped to the image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

from medsamkit.errors import InputError

logger = logging.getLogger(__name__)

#: Connectivity (number of neighbours) -> rank passed to ``ndimage.generate_binary_structure``.
_RANK_2D = {4: 1, 8: 2}
_RANK_3D = {6: 1, 18: 2, 26: 3}
#: Above this largest label value, per-label crops come from ``np.unique`` instead of
#: ``ndimage.find_objects`` (which allocates one entry per possible value).
_FIND_OBJECTS_MAX = 65535

Box2D = tuple[int, int, int, int]
Box3D = tuple[int, int, int, int, int, int]


# --------------------------------------------------------------------------------- helpers
def _structure(ndim: int, connectivity: int) -> np.ndarray:
    """Structuring element for ``ndim`` (2 or 3) dimensions and a neighbour count."""
    table = _RANK_2D if ndim == 2 else _RANK_3D if ndim == 3 else None
    if table is None:
        raise ValueError(f"expected a 2D or 3D array, got {ndim} dimensions")
    if connectivity not in table:
        raise ValueError(f"connectivity {connectivity} is not valid in {ndim}D; "
                         f"use one of {sorted(table)}")
    return ndimage.generate_binary_structure(ndim, table[connectivity])


def _slicewise_structure(connectivity: int) -> np.ndarray:
    """3D structuring element that connects pixels within a z-slice only (2D connectivity)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _structure(2, connectivity)
    return structure


def _as_label_ints(arr: np.ndarray) -> np.ndarray:
    """Integer view of a mask or label map; raises :class:`InputError` for unusable values."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(None, "the label map holds non-integer values; labels must be "
                                   "whole numbers (0 = background)")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(None, f"a label map must hold integers or booleans, not {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise InputError(None, f"the label map holds negative values (min {arr.min()}); "
                               "labels must be >= 0 (0 = background)")
    return arr


def _label_regions(ints: np.ndarray) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Yield ``(label, bounding slices)`` for every non-zero label of a non-negative int array."""
    if ints.size == 0:
        return
    top = int(ints.max())
    if top == 0:
        return
    if top <= _FIND_OBJECTS_MAX:
        objects = ndimage.find_objects(ints.astype(np.int32, copy=False), max_label=top)
        for index, region in enumerate(objects, start=1):
            if region is not None:
                yield index, region
        return
    full = tuple(slice(None) for _ in range(ints.ndim))
    for value in np.unique(ints):
        if value != 0:
            yield int(value), full


def _remove_small(mask: np.ndarray, min_size: int, structure: np.ndarray) -> np.ndarray:
    """Zero every component (per label) smaller than ``min_size`` elements; dtype kept."""
    mask = np.asarray(mask)
    if mask.ndim != structure.ndim:
        raise ValueError(f"expected a {structure.ndim}D array, got shape {mask.shape}")
    ints = _as_label_ints(mask)
    out = mask.copy()
    if min_size <= 1:
        return out
    for value, region in _label_regions(ints):
        this = ints[region] == value
        components, count = ndimage.label(this, structure=structure)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = sizes < min_size
        small[0] = False  # background
        if small[1:].any():
            out[region][small[components]] = 0
    return out


# ------------------------------------------------------------------------ component removal
def remove_small_objects_3d(mask: np.ndarray, min_voxels: int = 1000,
                            connectivity: int = 26) -> np.ndarray:
    """Remove 3D connected components of fewer than ``min_voxels`` voxels, per label.

    Args:
        mask: ``[z, y, x]`` binary mask or label map (0 = background).
        min_voxels: components with this many voxels or more are kept (MedSAM: 1000).
        connectivity: 6, 18 or 26 neighbours (MedSAM: 26).

    Returns:
        A copy of ``mask`` (same dtype) with the small components set to 0.
    """
    return _remove_small(mask, min_voxels, _structure(3, connectivity))


def remove_small_objects_2d(mask: np.ndarray, min_pixels: int = 100,
                            connectivity: int = 8) -> np.ndarray:
    """Remove 2D connected components of fewer than ``min_pixels`` pixels, per label.

    Args:
        mask: ``[y, x]`` image or ``[z, y, x]`` volume (then each z-slice is cleaned on its own);
            binary mask or label map (0 = background).
        min_pixels: components with this many pixels or more are kept (MedSAM: 100).
        connectivity: 4 or 8 neighbours (MedSAM: 8).

    Returns:
        A copy of ``mask`` (same dtype) with the small components set to 0.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        return _remove_small(mask, min_pixels, _slicewise_structure(connectivity))
    return _remove_small(mask, min_pixels, _structure(2, connectivity))


def clean_labels(volume: np.ndarray, min_voxels_3d: int = 1000,
                 min_pixels_2d: int = 100) -> np.ndarray:
    """MedSAM's label cleanup: 3D objects < ``min_voxels_3d`` (26-connected), then 2D objects
    < ``min_pixels_2d`` per slice (8-connected), each per label.

    A 2D ``[y, x]`` input gets only the 2D step. Returns a cleaned copy with the same dtype.
    (The LiteMedSAM branch used 100 / 10: pass those to reproduce it.)
    """
    volume = np.asarray(volume)
    if volume.ndim == 3:
        volume = remove_small_objects_3d(volume, min_voxels_3d, 26)
    elif volume.ndim != 2:
        raise ValueError(f"expected a [z, y, x] volume or [y, x] image, got shape {volume.shape}")
    return remove_small_objects_2d(volume, min_pixels_2d, 8)


def split_labels(label_map: np.ndarray,
                 labels: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """One boolean target per label id, background (0) excluded.

    Args:
        label_map: 2D or 3D label map (or binary mask, giving ``{1: mask}``).
        labels: the ids wanted; default every id present. A requested id that is absent gives
            an all-False mask, so callers can tell "absent" from "not asked for".

    Returns:
        ``{label id: bool array of label_map's shape}``, ids in increasing order.
    """
    ints = _as_label_ints(label_map)
    present = {value: region for value, region in _label_regions(ints)}
    wanted = sorted(present) if labels is None else sorted({int(v) for v in labels} - {0})
    out: dict[int, np.ndarray] = {}
    for value in wanted:
        target = np.zeros(ints.shape, dtype=bool)
        region = present.get(value)
        if region is not None:
            target[region] = ints[region] == value
        out[value] = target
    return out


# ----------------------------------------------------------------------------------- boxes
def _kept_foreground(mask: np.ndarray, min_component: int, connectivity: int) -> np.ndarray:
    """Boolean foreground of ``mask`` restricted to components of >= ``min_component``."""
    fg = np.asarray(mask) != 0
    if min_component <= 1 or not fg.any():
        return fg
    components, count = ndimage.label(fg, structure=_structure(fg.ndim, connectivity))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_component
    keep[0] = False
    return keep[components]


def _bounds(fg: np.ndarray) -> list[tuple[int, int]] | None:
    """Inclusive (first, last) index of foreground along each axis, or None when empty."""
    if not fg.any():
        return None
    out = []
    for axis in range(fg.ndim):
        other = tuple(a for a in range(fg.ndim) if a != axis)
        hits = np.flatnonzero(fg.any(axis=other))
        out.append((int(hits[0]), int(hits[-1])))
    return out


def box_from_mask(mask2d: np.ndarray, min_component: int = 100,
                  margin: int = 0) -> Box2D | None:
    """Bounding box of a 2D mask, ignoring 8-connected components under ``min_component`` px.

    This is how ../shared/data/kvasir-seg/gt_boxes.json was made (masks thresholded at > 127):
    the isolated pixel at (0, 0) found in ~14% of the Kvasir masks does not stretch the box to
    the corner.

    Args:
        mask2d: ``[y, x]`` mask; any non-zero value is foreground.
        min_component: smallest component (pixels) that counts; 0 or 1 keeps everything.
        margin: pixels added on every side, clipped to the image.

    Returns:
        ``(x0, y0, x1, y1)`` inclusive pixel bounds, or None when nothing is left.
    """
    mask2d = np.asarray(mask2d)
    if mask2d.ndim != 2:
        raise ValueError(f"box_from_mask needs a [y, x] mask, got shape {mask2d.shape}")
    bounds = _bounds(_kept_foreground(mask2d, min_component, 8))
    if bounds is None:
        return None
    (y0, y1), (x0, x1) = bounds
    h, w = mask2d.shape
    return (max(x0 - margin, 0), max(y0 - margin, 0),
            min(x1 + margin, w - 1), min(y1 + margin, h - 1))


def box3d_from_mask(mask3d: np.ndarray, min_component: int = 0) -> Box3D | None:
    """Bounding box ``(x0, y0, z0, x1, y1, z1)`` (inclusive) of a ``[z, y, x]`` mask.

    Components (26-connected) under ``min_component`` voxels are ignored; None when empty.
    """
    mask3d = np.asarray(mask3d)
    if mask3d.ndim != 3:
        raise ValueError(f"box3d_from_mask needs a [z, y, x] mask, got shape {mask3d.shape}")
    bounds = _bounds(_kept_foreground(mask3d, min_component, 26))
    if bounds is None:
        return None
    (z0, z1), (y0, y1), (x0, x1) = bounds
    return (x0, y0, z0, x1, y1, z1)


def jitter_box(box: Sequence[float], shape: Sequence[int], max_shift: int = 20,
               rng: np.random.Generator | int | None = None) -> tuple[int, ...]:
    """Push every side of a box outward by a random ``0..max_shift`` pixels, clipped to the image.

    MedSAM's training recipe (``randint(0, 20)`` per side, inclusive). Works for 2D boxes
    ``(x0, y0, x1, y1)`` with ``shape = (H, W)`` and 3D boxes ``(x0, y0, z0, x1, y1, z1)`` with
    ``shape = (Z, H, W)``. Results are inclusive indices inside ``[0, size - 1]``.

    Args:
        rng: a ``numpy.random.Generator`` (advanced in place) or a seed for a new one.
    """
    dims = len(shape)
    if len(box) != 2 * dims:
        raise ValueError(f"a box for a {dims}D image has {2 * dims} numbers, got {len(box)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    sizes = list(reversed([int(s) for s in shape]))  # x, y[, z] order like the box
    shifts = rng.integers(0, max_shift + 1, size=2 * dims)
    low = [max(int(box[i]) - int(shifts[i]), 0) for i in range(dims)]
    high = [min(int(box[dims + i]) + int(shifts[dims + i]), sizes[i] - 1) for i in range(dims)]
    return tuple(low + high)


# ------------------------------------------------------------------------------ 3D cleanup
def largest_connected_component(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
    """Boolean mask of the largest connected component of ``mask != 0``.

    ``connectivity`` defaults to full connectivity (8 in 2D, 26 in 3D), as MedSAM2 uses to keep
    the largest 3D component. Ties go to the component found first in raster order; an empty
    mask gives an all-False result.
    """
    fg = np.asarray(mask) != 0
    if connectivity is None:
        connectivity = 8 if fg.ndim == 2 else 26
    components, count = ndimage.label(fg, structure=_structure(fg.ndim, connectivity))
    if count <= 1:
        return fg
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray, per_slice: bool = False) -> np.ndarray:
    """Fill holes (background not connected to the border) in a mask or label map.

    Args:
        mask: ``[y, x]`` or ``[z, y, x]`` binary mask or label map. Label maps are filled per
            label; a hole is only filled where it is background (0), never over another label.
        per_slice: for volumes, fill each z-slice in 2D instead of filling in 3D.

    Returns:
        A filled copy with the dtype of ``mask``.
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D mask, got shape {mask.shape}")
    ints = _as_label_ints(mask)
    if per_slice and mask.ndim == 3:
        structure = _slicewise_structure(4)  # background 4-connected <-> foreground 8-connected
    else:
        structure = _structure(mask.ndim, 4 if mask.ndim == 2 else 6)
    out = mask.copy()
    for value, region in _label_regions(ints):
        # pad the crop by one: the padding is the outside, so the first and last slices of a
        # per-slice fill are not taken for border and holes at the crop edge stay correct
        this = np.pad(ints[region] == value, 1)
        filled = ndimage.binary_fill_holes(this, structure=structure)[(slice(1, -1),) * mask.ndim]
        new = filled & (ints[region] == 0)
        if new.any():
            out[region][new] = True if mask.dtype == bool else value
    return out
