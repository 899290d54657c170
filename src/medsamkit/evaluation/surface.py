"""Surface distances between two binary masks: the DeepMind ``surface-distance`` definition.

This is the definition MedSAM's evaluation (``SurfaceDice.py``) and the CVPR24 LiteMedSAM
challenge use for the normalised surface distance (NSD); MONAI's
``compute_surface_dice(..., use_subvoxels=True)`` implements the same one.

How the surface is found
------------------------
The mask (cropped to the bounding box of both masks, padded by one zero voxel) is cut into
2x2x2 cubes (2x2 squares in 2D) of neighbouring voxels. Each cube's inside/outside pattern is an
8-bit (4-bit) *neighbour code*; cubes with a mixed pattern (code neither 0 nor all ones) are the
surface elements ("surfels"). A surfel's area (contour length in 2D) comes from a table indexed
by the code: the marching-cubes surface through the midpoints of the cube edges that cross the
boundary, with the voxel spacing applied to each triangle (see :func:`surfel_measure_table`).

Distances
---------
Each surfel of one mask is given the Euclidean distance, in the units of ``spacing`` (mm for
volumes), to the nearest surfel of the other mask: a distance transform with
``sampling=spacing`` on the surfel grid. Both masks' surfels lie on the same grid, so the
distances are exact, and cropping to the bounding box of the union loses nothing.

From these, :func:`surface_dice` (NSD at a tolerance) and :func:`robust_hausdorff` (HD95).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# ----------------------------------------------------------------------------- code tables


def _corners(ndim: int) -> list[tuple[int, ...]]:
    return list(itertools.product((0, 1), repeat=ndim))


def corner_bit(corner: Sequence[int]) -> int:
    """The bit of the neighbour code that stands for ``corner`` of the cube (0/1 per axis).

    The corner at the origin is the highest bit and the far corner the lowest (1), which is
    the order of the DeepMind/MONAI encoding kernel, so codes here index tables built for it.
    """
    index = int("".join(str(int(c)) for c in corner), 2)
    return 1 << ((1 << len(corner)) - 1 - index)


def _components(corners: list[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """Groups of ``corners`` connected through cube edges (corners differing in one axis)."""
    left, groups = set(corners), []
    while left:
        stack, group = [left.pop()], []
        while stack:
            c = stack.pop()
            group.append(c)
            for axis in range(len(c)):
                n = c[:axis] + (1 - c[axis],) + c[axis + 1:]
                if n in left:
                    left.remove(n)
                    stack.append(n)
        groups.append(group)
    return groups


def _boundary_polygon(group: list[tuple[int, ...]]) -> np.ndarray:
    """Midpoints of the cube edges leaving ``group``, in order around the group (k x ndim).

    In 2D there are two (a segment). In 3D consecutive midpoints are those whose edges share a
    cube face; with at most four corners per group each face holds two of them, so they form one
    closed polygon.
    """
    inside = set(group)
    edges = []
    for corner in group:
        for axis in range(len(corner)):
            other = corner[:axis] + (1 - corner[axis],) + corner[axis + 1:]
            if other not in inside:
                edges.append((corner, other, axis))
    points = [(np.add(a, b) / 2.0) for a, b, _ in edges]
    if len(group[0]) == 2:
        return np.array(points)

    def faces(edge: tuple) -> set[tuple[int, int]]:  # faces (axis, side) holding the edge
        a, _, axis = edge
        return {(k, a[k]) for k in range(3) if k != axis}

    order = [0]
    while len(order) < len(edges):
        last = edges[order[-1]]
        step = next((k for k in range(len(edges)) if k not in order and faces(edges[k]) & faces(last)), None)
        if step is None:  # cannot happen for groups of <= 4 corners; kept as a guard
            raise AssertionError(f"open boundary around corners {group}")
        order.append(step)
    return np.array([points[k] for k in order])


def _triangulations(n: int) -> list[list[tuple[int, int, int]]]:
    """Every triangulation of a convex-ordered polygon with vertices 0..n-1 (lists of triangles)."""

    @functools.cache
    def split(lo: int, hi: int) -> tuple[tuple[tuple[int, int, int], ...], ...]:
        if hi - lo < 2:
            return ((),)
        out = []
        for apex in range(lo + 1, hi):
            for left in split(lo, apex):
                for right in split(apex, hi):
                    out.append(left + right + ((lo, apex, hi),))
        return tuple(out)

    return [list(t) for t in split(0, n - 1)]


def _scaled_norm(vectors: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Lengths of area vectors (unit-spacing cross products) after scaling by ``spacing``.

    An area vector's component along axis i scales with the product of the other axes' spacings.
    """
    s = np.asarray(spacing, dtype=np.float64)
    factors = np.prod(s) / s
    return np.linalg.norm(vectors * factors, axis=-1)


@functools.cache
def _surfel_elements(ndim: int) -> tuple[np.ndarray, ...]:
    """For each code, the unit-spacing elements of its surface: (m, ndim) edge vectors in 2D,
    (m, 3) triangle area vectors in 3D (m may be 0)."""
    corners = _corners(ndim)
    full = (1 << len(corners)) - 1
    table = []
    for code in range(full + 1):
        inside = [c for c in corners if code & corner_bit(c)]
        # the surface separates the smaller side (the inside when there is a tie) from the rest;
        # each edge-connected group of that side is wrapped by its own segment or polygon
        side = inside if len(inside) <= len(corners) // 2 else [c for c in corners if c not in inside]
        elements = []
        for group in _components(side):
            poly = _boundary_polygon(group)
            if ndim == 2:
                elements.append(poly[1] - poly[0])
            else:
                elements.extend(_largest_triangulation(poly))
        table.append(np.array(elements, dtype=np.float64).reshape(-1, ndim))
    return tuple(table)


def _largest_triangulation(poly: np.ndarray) -> list[np.ndarray]:
    """Area vectors of the triangulation of ``poly`` with the largest total area.

    Planar polygons have one area whatever the triangulation; for the non-planar pentagons and
    hexagons of three- and four-corner groups this choice reproduces the marching-cubes
    triangulation of the DeepMind table (checked against MONAI's copy in the tests).
    """
    best, best_area = [], -1.0
    for triangles in _triangulations(len(poly)):
        vectors = [np.cross(poly[b] - poly[a], poly[c] - poly[a]) / 2.0 for a, b, c in triangles]
        area = float(sum(np.linalg.norm(v) for v in vectors))
        if area > best_area + 1e-12:
            best, best_area = vectors, area
    return best


@functools.lru_cache(maxsize=64)
def _cached_table(spacing: tuple[float, ...]) -> np.ndarray:
    elements = _surfel_elements(len(spacing))
    table = np.array([_scaled_norm(e, spacing).sum() if len(spacing) == 3
                      else np.linalg.norm(e * np.asarray(spacing), axis=-1).sum() for e in elements])
    table.setflags(write=False)
    return table


def surfel_measure_table(spacing: Sequence[float]) -> np.ndarray:
    """Surface area (3D, 256 codes) or contour length (2D, 16 codes) of each neighbour code.

    Units: those of ``spacing`` squared (3D) or as given (2D). The surface of a code is the
    marching-cubes (marching-squares) surface whose vertices are the midpoints of the cube edges
    that cross the boundary: one polygon (segment) around each edge-connected group of the
    smaller side, triangulated as in the classic marching-cubes table. Codes 0 and all-ones have
    measure 0. The returned array is read-only.
    """
    s = tuple(float(v) for v in spacing)
    if len(s) not in (2, 3) or not all(np.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing must be 2 or 3 positive numbers, got {tuple(spacing)}")
    return _cached_table(s)


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code of every 2x2(x2) cube of ``mask`` (bool, 2D or 3D): shape ``mask.shape - 1``.

    Cube ``p`` has corners ``p .. p + 1``; see :func:`corner_bit` for the bit order.
    """
    m = np.asarray(mask, dtype=bool).view(np.uint8)
    out_shape = tuple(n - 1 for n in m.shape)
    codes = np.zeros(out_shape, dtype=np.uint8)
    for corner in _corners(m.ndim):
        window = tuple(slice(c, c + n) for c, n in zip(corner, out_shape))
        bit = corner_bit(corner)
        codes |= m[window] * np.uint8(bit)
    return codes


# ----------------------------------------------------------------------------- distances

#: Crops up to this many voxels get their surfel distances from a distance transform; larger
#: ones (objects far apart) from a k-d tree over the surfels, which gives the same distances.
EDT_MAX_VOXELS = 4_000_000


@dataclass(frozen=True)
class SurfaceDistances:
    """Surfel distances and measures of a (prediction, ground truth) pair.

    Attributes:
        gt_to_pred: distance of each ground-truth surfel to the nearest prediction surfel
            (inf for every surfel when the prediction is empty), sorted ascending.
        gt_areas: area (length in 2D) of those surfels, in the same order.
        pred_to_gt, pred_areas: the same from the prediction's side.
    """

    gt_to_pred: np.ndarray
    gt_areas: np.ndarray
    pred_to_gt: np.ndarray
    pred_areas: np.ndarray


def _check_pair(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None) -> tuple[float, ...]:
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {pred.shape}")
    s = tuple(float(v) for v in (spacing if spacing is not None else (1.0,) * pred.ndim))
    if len(s) != pred.ndim:
        raise ValueError(f"spacing {s} has {len(s)} values for {pred.ndim}D masks")
    return s


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every True voxel of ``mask``; None if empty."""
    boxes = ndimage.find_objects(np.ascontiguousarray(mask, dtype=bool).view(np.uint8))
    return boxes[0] if boxes else None


def padded_crop(mask: np.ndarray, box: tuple[slice, ...], margin: int = 1) -> np.ndarray:
    """``mask[box]`` as a new bool array with ``margin`` zero voxels added on every side."""
    out = np.zeros(tuple(b.stop - b.start + 2 * margin for b in box), dtype=bool)
    out[tuple(slice(margin, -margin) for _ in box)] = mask[box]
    return out


def crop_to_union(pred: np.ndarray, gt: np.ndarray, margin: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of ``pred | gt`` and padded by ``margin`` zero voxels.

    Overlaps, surfaces and surfel distances are unchanged by this crop: every surfel lies
    within one voxel of the union. Two empty masks give two all-zero arrays of side
    ``2 * margin``.
    """
    box = bounding_box(pred | gt)
    if box is None:
        shape = (2 * margin,) * pred.ndim
        return np.zeros(shape, bool), np.zeros(shape, bool)
    return padded_crop(pred, box, margin), padded_crop(gt, box, margin)


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: Sequence[float] | None = None) -> SurfaceDistances:
    """Surfel distances between two binary masks of one shape (2D or 3D; see module docstring).

    ``spacing`` is the voxel size along each array axis (default 1 per axis); distances come
    out in its units.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    s = _check_pair(pred, gt, spacing)
    return padded_surface_distances(*crop_to_union(pred, gt), s)


def padded_surface_distances(pred: np.ndarray, gt: np.ndarray,
                             spacing: tuple[float, ...]) -> SurfaceDistances:
    """:func:`surface_distances` of two bool masks that already have a zero border of one voxel
    (as :func:`crop_to_union` returns them); ``spacing`` has one value per axis."""
    table = surfel_measure_table(spacing)
    full = len(table) - 1
    codes_p, codes_g = neighbour_codes(pred).ravel(), neighbour_codes(gt).ravel()
    grid = tuple(n - 1 for n in pred.shape)
    at_p = np.flatnonzero((codes_p != 0) & (codes_p != full))
    at_g = np.flatnonzero((codes_g != 0) & (codes_g != full))
    if np.prod(grid) <= EDT_MAX_VOXELS:
        gt_to_pred = _distance_map(at_p, grid, spacing).ravel()[at_g]
        pred_to_gt = _distance_map(at_g, grid, spacing).ravel()[at_p]
    else:  # large sparse crop (e.g. a far false positive): nearest surfels by k-d tree instead
        gt_to_pred = _nearest(at_g, at_p, grid, spacing)
        pred_to_gt = _nearest(at_p, at_g, grid, spacing)
    gt_d, gt_a = _sorted(gt_to_pred, table[codes_g[at_g]])
    pred_d, pred_a = _sorted(pred_to_gt, table[codes_p[at_p]])
    return SurfaceDistances(gt_d, gt_a, pred_d, pred_a)


def _distance_map(surfels: np.ndarray, grid: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """Distance of every grid point to the nearest surfel (flat indices ``surfels``; inf if none)."""
    if surfels.size == 0:
        return np.full(grid, np.inf)
    background = np.ones(grid, dtype=bool)
    background.ravel()[surfels] = False
    return ndimage.distance_transform_edt(background, sampling=spacing)


def _nearest(source: np.ndarray, target: np.ndarray, grid: tuple[int, ...],
             spacing: tuple[float, ...]) -> np.ndarray:
    """Distance from each ``source`` surfel to the nearest ``target`` surfel (flat indices).

    The same numbers as :func:`_distance_map` (exact Euclidean distances between grid points
    scaled by ``spacing``), at a cost that grows with the number of surfels, not of voxels.
    """
    from scipy.spatial import cKDTree

    if target.size == 0:
        return np.full(source.size, np.inf)
    scale = np.asarray(spacing)
    points = np.stack(np.unravel_index(source, grid), axis=1) * scale
    tree = cKDTree(np.stack(np.unravel_index(target, grid), axis=1) * scale)
    return tree.query(points, k=1)[0]


def _sorted(distances: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(distances, kind="stable")
    return distances[order], areas[order]


def surface_dice(sd: SurfaceDistances, tolerance: float) -> float:
    """Normalised surface distance (surface Dice) at ``tolerance`` (units of the spacing).

    NSD = (GT surface within ``tolerance`` of the prediction's surface + prediction surface
    within ``tolerance`` of the GT's) / (GT surface + prediction surface), with surfaces measured
    as surfel areas. Both surfaces empty: NaN; one empty: 0.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    total = float(sd.gt_areas.sum() + sd.pred_areas.sum())
    if total == 0:
        return float("nan")
    close = sd.gt_areas[sd.gt_to_pred <= tolerance].sum() + sd.pred_areas[sd.pred_to_gt <= tolerance].sum()
    return float(close / total)


def _directed_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """The smallest distance such that at least ``percent`` % of the surface area is no further."""
    if distances.size == 0:
        return float("inf")
    cumulative = np.cumsum(areas) / areas.sum()
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, distances.size - 1)])


def robust_hausdorff(sd: SurfaceDistances, percent: float = 95.0) -> float:
    """Robust Hausdorff distance (HD95 by default), the DeepMind ``compute_robust_hausdorff``.

    For each direction (GT to prediction, prediction to GT) the surfel distances are sorted and
    weighted by surfel area; the directed value is the first distance at which the cumulative
    area fraction reaches ``percent`` %. The result is the larger of the two directed values.
    This differs from an unweighted percentile of voxel-boundary distances (MONAI's
    ``compute_hausdorff_distance(percentile=95)``) by a fraction of a voxel on smooth shapes.
    One surface empty: inf; both empty: NaN.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    if sd.gt_areas.size == 0 and sd.pred_areas.size == 0:
        return float("nan")
    return max(_directed_percentile(sd.gt_to_pred, sd.gt_areas, percent),
               _directed_percentile(sd.pred_to_gt, sd.pred_areas, percent))
