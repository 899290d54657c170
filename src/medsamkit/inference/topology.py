"""Keep an object's topology from slice to slice while a box is propagated.

A box-only decoder that has learnt rings (``litemedsam-clicks``: the myocardium around the LV
cavity) tells a ring from the disc inside it only by the box's margin (docs/refinement.md, "The box
margin decides ring or cavity"). Propagation makes each slice's box from its neighbour's mask, so
where the anatomy narrows or widens the margin drifts and the object switches: toward the apex the
LV's box is a few pixels loose and the LV object draws the myocardium ring; toward the base the
myocardium's box is tight and it draws the cavity.

The rule: when an object's new mask has a hole and its mask on the slice it was propagated from
has none (or the other way round), the slice is decoded once more with a box that fits the
object's previous shape better, and that decode is kept if its topology matches the previous
slice's:

- solid -> ring: the box of what the ring encloses, grown as a propagated box is;
- ring -> solid: the box loosened by :data:`LOOSEN_PX` model-input pixels on every side.

A hole counts when it covers at least :data:`MIN_HOLE_FRACTION` of the filled mask, so stray
pinholes change nothing. Masks whose topology does not change are never decoded again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..preprocessing.frames import Frame

#: the smallest hole, as a fraction of the filled mask, that makes a mask a ring
MIN_HOLE_FRACTION = 0.05
#: how far a ring that collapsed into a solid has its box loosened, model-input pixels per side
LOOSEN_PX = 4


def enclosed(mask: np.ndarray) -> np.ndarray:
    """The pixels ``mask`` encloses (its holes); none when they are under
    :data:`MIN_HOLE_FRACTION` of the filled mask."""
    mask = np.asarray(mask, bool)
    filled = ndimage.binary_fill_holes(mask)
    holes = filled & ~mask
    if holes.sum() < MIN_HOLE_FRACTION * max(int(filled.sum()), 1):
        return np.zeros_like(mask)
    return holes


def is_ring(mask: np.ndarray) -> bool:
    """Whether a mask encloses a hole that counts (:func:`enclosed`)."""
    return bool(enclosed(mask).any())


def retry_box(previous: np.ndarray, new: np.ndarray, box, frame: Frame, geometry, grow_px: int
              ) -> tuple[float, float, float, float] | None:
    """The box to decode a slice again with when ``new`` (decoded from ``box``) changed topology
    from ``previous`` (the mask it was propagated from); None when it did not, or either is empty.

    ``geometry`` maps between the slice and the model input (:class:`ModelGeometry`): the
    enclosed region's box is grown by ``grow_px`` as a propagated box is; a loosened box is
    clipped to the slice."""
    previous, new = np.asarray(previous, bool), np.asarray(new, bool)
    if box is None or not previous.any() or not new.any():
        return None
    was, now = is_ring(previous), is_ring(new)
    if was == now:
        return None
    if now:  # a solid object drew a ring around itself: what the ring encloses
        return geometry.grown_box(enclosed(new), frame, grow_px)
    sx, sy = frame.scale_xy  # a ring collapsed into what it enclosed: a looser box
    h, w = frame.original_size
    x0, y0, x1, y1 = (float(v) for v in box)
    return (max(x0 - LOOSEN_PX / sx, 0.0), max(y0 - LOOSEN_PX / sy, 0.0),
            min(x1 + LOOSEN_PX / sx, float(w)), min(y1 + LOOSEN_PX / sy, float(h)))


def retries(previous: Sequence[np.ndarray | None], new: Sequence[np.ndarray], boxes: Sequence, frame: Frame,
            geometry, grow_px: int) -> dict[int, tuple[float, float, float, float]]:
    """The objects of one slice to decode again, by position: ``{k: box}`` for each ``new[k]``
    whose topology differs from ``previous[k]`` (None: nothing to compare with), per :func:`retry_box`."""
    out = {}
    for k, (before, now, box) in enumerate(zip(previous, new, boxes)):
        if before is not None:
            retry = retry_box(before, now, box, frame, geometry, grow_px)
            if retry is not None:
                out[k] = retry
    return out


def keeps_topology(previous: np.ndarray, retried: np.ndarray) -> bool:
    """Whether the retried mask has the previous slice's topology (and is not empty)."""
    retried = np.asarray(retried, bool)
    return bool(retried.any()) and is_ring(retried) == is_ring(previous)
