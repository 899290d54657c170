"""The CVPR 2025 interactive protocol ("foundation models for interactive 3D biomedical image
segmentation"; ../shared/docs/design.md, "Interactive 3D"): the simulated user.

- Step 0 gives each label one box: the 2D bounding box of the label on its middle slice
  (``int((z1 - z0) / 2 + z0)`` of the label's z extent; the nearest slice holding the label when
  the middle one is empty) and the label's z range (:func:`protocol_prompt`).
- Each of the next steps gives each label one click (:func:`next_click`): at the maximum of the
  Euclidean distance transform of the largest connected error component (26-connected in 3D,
  8-connected in 2D; errors = voxels where prediction and truth disagree), a foreground click if
  the truth has the label there, else a background click. Ties go to a pseudo-random maximum with
  the challenge script's fixed seed (``np.random.seed(42)``, then ``np.random.choice``).
- Metrics: DSC after every step, the final DSC and NSD, and the DSC AUC over the click steps
  (trapezoids with unit spacing: at most ``steps - 1``, 4 for 5 clicks) (:func:`dsc_auc`).

Pure functions of arrays, usable for benchmarks and for simulating clicks in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..inference.prompts3d import VolumePrompt
from ..preprocessing.labels import box_from_mask

#: The challenge script's seed for choosing among equal distance maxima.
TIE_SEED = 42


@dataclass(frozen=True)
class SimulatedClick:
    """A click in array order (``index``: (z, y, x) or (y, x)) and whether it is foreground."""

    index: tuple[int, ...]
    positive: bool

    @property
    def xyz(self) -> tuple[int, ...]:
        """``(x, y[, z])``: the index in the x, y, z order of ``--point``."""
        return tuple(reversed(self.index[-2:])) + tuple(self.index[:-2])


def largest_error_component(pred: np.ndarray, truth: np.ndarray) -> np.ndarray | None:
    """The largest fully connected component of ``pred != truth`` (None when they agree)."""
    errors = np.asarray(pred, bool) != np.asarray(truth, bool)
    if not errors.any():
        return None
    labels, n = ndimage.label(errors, structure=np.ones((3,) * errors.ndim, bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def next_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.RandomState | None = None
               ) -> SimulatedClick | None:
    """The protocol's next click for one label (module docstring); None when ``pred`` is perfect.

    The distance transform is computed on the component's bounding box padded with zeros (as the
    challenge script does), so the array border counts as the component's edge.
    """
    component = largest_error_component(pred, truth)
    if component is None:
        return None
    where = np.argwhere(component)
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    crop = component[tuple(slice(a, b) for a, b in zip(lo, hi))]
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[(slice(1, -1),) * crop.ndim]
    maxima = np.argwhere(distance == distance.max())
    rng = rng if rng is not None else np.random.RandomState(TIE_SEED)
    index = tuple(int(v) for v in maxima[rng.choice(len(maxima))] + lo)
    return SimulatedClick(index, bool(np.asarray(truth, bool)[index]))


def protocol_prompt(truth: np.ndarray, label: int | None = None) -> VolumePrompt | None:
    """The step-0 prompt of one label of a ``(z, y, x)`` mask: its 2D box on the middle slice of its
    z extent (the nearest non-empty slice if that one is empty) and its z range. None if empty."""
    truth = np.asarray(truth, bool)
    slices = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    if len(slices) == 0:
        return None
    z0, z1 = int(slices[0]), int(slices[-1])
    middle = int((z1 - z0) / 2 + z0)
    key = int(slices[np.argmin(np.abs(slices - middle))])
    box = box_from_mask(truth[key], min_component=0)
    return VolumePrompt(tuple(float(v) for v in box), key, (z0, z1), label)  # type: ignore[arg-type]


def dsc_auc(dscs: Sequence[float]) -> float:
    """Area under the DSC curve over the click steps, unit spacing (trapezoids)."""
    values = np.asarray(dscs, dtype=np.float64)
    if len(values) < 2:
        return 0.0
    return float(((values[1:] + values[:-1]) / 2).sum())
