"""Segmentation metrics as pure functions on arrays.

Empty cases are explicit: when both prediction and reference are empty the Dice is NaN
(undefined), never silently 1 or 0; callers count and report NaNs.
"""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩G| / (|P| + |G|) of two binary arrays of one shape.

    Returns NaN when both are empty.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, reference {ref.shape}")
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total
