"""Segmentation metrics as pure functions on arrays.

Metrics: Dice (DSC), IoU, normalised surface distance (NSD, surface Dice at a tolerance) and the
95th-percentile Hausdorff distance (HD95), for 2D or 3D binary masks and per label of label maps.
Distances use ``spacing`` (the voxel size along each array axis: mm from the file geometry for
volumes; 1 per pixel for 2D images unless given), so NSD tolerances and HD95 are in its units.
NSD and HD95 follow the DeepMind ``surface-distance`` definitions (see
:mod:`medsamkit.evaluation.surface`).

Empty masks are explicit, never silently 1 or 0:

============================  =====  =====  =====  =====
case                          DSC    IoU    NSD    HD95
============================  =====  =====  =====  =====
both empty                    NaN    NaN    NaN    NaN
one empty, the other not      0      0      0      inf
============================  =====  =====  =====  =====

Callers count NaNs (and infinite HD95) and report them; :mod:`medsamkit.evaluation.accumulate`
does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .surface import (crop_to_union, padded_surface_distances, robust_hausdorff, surface_dice,
                      surface_distances)

#: Names of the per-object metrics, in report order.
METRICS: tuple[str, ...] = ("dsc", "iou", "nsd", "hd95")


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    return pred, ref


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩G| / (|P| + |G|) of two binary arrays of one shape.

    Returns NaN when both are empty.
    """
    pred, ref = _pair(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union |P∩G| / |P∪G| (Jaccard) of two binary arrays; NaN when both are empty."""
    pred, ref = _pair(pred, ref)
    union = int(np.logical_or(pred, ref).sum())
    if union == 0:
        return float("nan")
    return int(np.logical_and(pred, ref).sum()) / union


def nsd(pred: np.ndarray, ref: np.ndarray, tolerance: float,
        spacing: Sequence[float] | None = None) -> float:
    """Normalised surface distance at ``tolerance`` (units of ``spacing``); see
    :func:`~medsamkit.evaluation.surface.surface_dice`."""
    return surface_dice(surface_distances(pred, ref, spacing), tolerance)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None,
         percent: float = 95.0) -> float:
    """Robust Hausdorff distance at ``percent`` (units of ``spacing``), DeepMind definition; see
    :func:`~medsamkit.evaluation.surface.robust_hausdorff`."""
    return robust_hausdorff(surface_distances(pred, ref, spacing), percent)


@dataclass(frozen=True)
class Scores:
    """The metrics of one object (one label of one case).

    Attributes:
        dsc, iou, nsd, hd95: see the module docstring (NaN/inf for empty masks as tabled there).
        pred_voxels, gt_voxels: voxel (pixel) counts of the prediction and ground truth.
    """

    dsc: float
    iou: float
    nsd: float
    hd95: float
    pred_voxels: int
    gt_voxels: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def empty(cls) -> Scores:
        """The scores of an object absent from both prediction and ground truth (all NaN)."""
        nan = float("nan")
        return cls(nan, nan, nan, nan, 0, 0)


def binary_scores(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None,
                  tolerance: float = 1.0, percent: float = 95.0) -> Scores:
    """DSC, IoU, NSD at ``tolerance`` and HD at ``percent`` of two binary masks of one shape.

    The masks are cropped to the bounding box of their union (plus one voxel) before any work,
    which leaves every metric unchanged.
    """
    pred, gt = _pair(pred, gt)
    s = _spacing(spacing, pred.ndim)
    return _padded_scores(*crop_to_union(pred, gt), s, tolerance, percent)


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    s = tuple(float(v) for v in (spacing if spacing is not None else (1.0,) * ndim))
    if len(s) != ndim or ndim not in (2, 3):
        raise ValueError(f"need 2D or 3D masks and one spacing value per axis, got {ndim}D masks "
                         f"and spacing {s}")
    return s


def _padded_scores(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...],
                   tolerance: float, percent: float) -> Scores:
    """:func:`binary_scores` of masks already cropped with a zero border (see ``crop_to_union``)."""
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if n_pred == 0 and n_gt == 0:
        return Scores.empty()
    inter = int(np.count_nonzero(pred & gt))
    sd = padded_surface_distances(pred, gt, spacing)
    return Scores(
        dsc=2.0 * inter / (n_pred + n_gt),
        iou=inter / (n_pred + n_gt - inter),
        nsd=surface_dice(sd, tolerance),
        hd95=robust_hausdorff(sd, percent),
        pred_voxels=n_pred,
        gt_voxels=n_gt,
    )


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def _as_int(label_map: np.ndarray) -> np.ndarray:
    """An integer view (bool as uint8, no copy) that ``find_objects`` accepts."""
    return label_map.view(np.uint8) if label_map.dtype == bool else label_map


def label_scores(pred: np.ndarray, gt: np.ndarray, labels: Iterable[int] | None = None,
                 spacing: Sequence[float] | None = None, tolerance: float = 1.0,
                 percent: float = 95.0) -> dict[int, Scores]:
    """:func:`binary_scores` of each label id of two integer label maps (0 = background).

    ``labels`` defaults to every non-zero id in either map. A label absent from both maps gets
    :meth:`Scores.empty` (all NaN). Each label is cut out of the bounding box of its voxels in
    either map (found in one pass with ``scipy.ndimage.find_objects``), so large volumes with
    small objects cost little.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    for name, m in (("prediction", pred), ("ground truth", gt)):
        if not np.issubdtype(m.dtype, np.integer) and m.dtype != bool:
            raise ValueError(f"the {name} must be an integer label map, got {m.dtype}")
        if m.size and np.issubdtype(m.dtype, np.signedinteger) and m.min() < 0:
            raise ValueError(f"the {name} has negative labels")
    s = _spacing(spacing, pred.ndim)
    if labels is None:
        top = max((int(m.max()) for m in (pred, gt) if m.size), default=0)
    else:
        wanted = sorted({int(v) for v in labels})
        if any(v <= 0 for v in wanted):
            raise ValueError(f"label ids must be positive, got {wanted}")
        top = max(wanted, default=0)
    if top == 0:
        return {}
    boxes_p = ndimage.find_objects(_as_int(pred), max_label=top)
    boxes_g = ndimage.find_objects(_as_int(gt), max_label=top)
    if labels is None:  # every id present in either map
        wanted = [i + 1 for i in range(top) if boxes_p[i] is not None or boxes_g[i] is not None]
    out: dict[int, Scores] = {}
    for label in wanted:
        box = _union_box(boxes_p[label - 1], boxes_g[label - 1])
        if box is None:
            out[label] = Scores.empty()
            continue
        inner = tuple(slice(1, b.stop - b.start + 1) for b in box)
        p = np.zeros(tuple(b.stop - b.start + 2 for b in box), dtype=bool)
        g = np.zeros_like(p)
        np.equal(pred[box], label, out=p[inner])
        np.equal(gt[box], label, out=g[inner])
        out[label] = _padded_scores(p, g, s, tolerance, percent)
    return out
