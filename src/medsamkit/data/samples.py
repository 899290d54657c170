"""Training/evaluation samples in the model-input frame: the contract between the preprocess
cache (:mod:`medsamkit.data.cache`) and the trainers (:mod:`medsamkit.training`).

A :class:`Sample` is one 2D target: an image already resized to the model's input frame by the
model family's geometry (``ModelGeometry.resize_image``, zero-padded bottom/right to S x S), the
binary mask of one label aligned pixel for pixel (``ModelGeometry.resize_mask``), and the box of
that mask in the same frame. ``ModelGeometry.normalise(image[:h, :w])`` with
``(h, w) = valid_size`` gives exactly the tensor the predictor feeds the encoder, so a model tuned
on samples sees what it will see at inference.

Any indexable object that returns samples is a :class:`SampleSource` (the on-disk cache, an
in-memory list in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One 2D target in the model-input frame.

    Attributes:
        image: (S, S, 3) uint8 RGB, resized by the family's geometry and zero-padded.
        mask: (S, S) uint8 in {0, 1}, aligned with ``image``.
        box: x0, y0, x1, y1 of the mask in model-input pixels (x right, y down).
        valid_size: (h, w) of the resized image inside the padded square.
        case_id: the case the sample comes from.
        label: the label id of the target in the case's label map.
        slice_index: the z index for slices of a volume, None for 2D images.
    """

    image: np.ndarray
    mask: np.ndarray
    box: tuple[float, float, float, float]
    valid_size: tuple[int, int]
    case_id: str
    label: int = 1
    slice_index: int | None = None


@runtime_checkable
class SampleSource(Protocol):
    """Anything with ``len()`` and integer indexing that returns :class:`Sample` objects."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
