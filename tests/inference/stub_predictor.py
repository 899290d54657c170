"""A deterministic stand-in for :class:`medsamkit.inference.predictor.Predictor` with clicks.

It "segments" like a flood fill, so what a click must do is known exactly:

- a box selects the bright pixels (> 127) inside it;
- a foreground click adds the 4-connected region of pixels with the clicked pixel's grey value;
- a background click removes that region;
- clicks apply in order, after the box; a mask prompt is recorded, not used;
- with ``multimask_output`` three candidates come back, the real one in the middle with the highest
  IoU estimate (the others empty), so the caller's choice of candidate is visible.

Logits are +10 inside the mask and -10 outside; the low-resolution logits are the mask resized to
256 x 256 (nearest), so a mask prompt can be traced back to the prediction it came from. Every
call is recorded (the slice encoded, the prompts decoded) in original-pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from scipy import ndimage

from medsamkit.inference.predictor import ImageEmbedding, Prediction
from medsamkit.preprocessing.geometry import Frame, ModelGeometry


@dataclass
class Call:
    image: np.ndarray  # the grey image decoded on
    boxes: np.ndarray | None
    points: np.ndarray | None
    labels: np.ndarray | None
    mask_input: torch.Tensor | None
    multimask: bool


def region_mask(grey: np.ndarray, box, points, labels) -> np.ndarray:
    """The stub's segmentation rule for one prompt (see the module docstring)."""
    h, w = grey.shape
    mask = np.zeros((h, w), bool)
    if box is not None:
        x0, y0, x1, y1 = box
        inside = np.zeros_like(mask)
        inside[max(int(np.floor(y0)), 0):int(np.ceil(y1)) + 1, max(int(np.floor(x0)), 0):int(np.ceil(x1)) + 1] = True
        mask = inside & (grey > 127)
    for (x, y), lab in zip(points if points is not None else [], labels if labels is not None else []):
        if lab < 0:
            continue
        xi, yi = int(x), int(y)
        same, _ = ndimage.label(grey == grey[yi, xi])
        region = same == same[yi, xi]
        mask = (mask | region) if lab == 1 else (mask & ~region)
    return mask


@dataclass
class StubPredictor:
    calls: list[Call] = field(default_factory=list)
    embedded: list[np.ndarray] = field(default_factory=list)
    embedding: ImageEmbedding | None = None
    geometry: ModelGeometry = field(default_factory=ModelGeometry)  # identity frame: slice pixels

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        self.embedded.append(image[:, :, 0].copy())
        h, w = image.shape[:2]
        return ImageEmbedding(torch.from_numpy(image[:, :, 0].copy()), Frame((h, w), (h, w), max(h, w)))

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        self.embedding = self.embed(image)
        return self.embedding

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        self.embedding = embedding

    def predict(self, boxes=None, points=None, point_labels=None, mask_input=None, multimask_output=False) -> Prediction:
        grey = self.embedding.features.numpy()
        n = len(boxes) if boxes is not None else len(points)
        boxes = None if boxes is None else np.asarray(boxes, np.float64).reshape(n, 4)
        points = None if points is None else np.asarray(points, np.float64).reshape(n, -1, 2)
        labels = None if point_labels is None else np.asarray(point_labels).reshape(n, -1)
        self.calls.append(Call(grey, boxes, points, labels, mask_input, multimask_output))
        masks = np.stack([region_mask(grey, None if boxes is None else boxes[i], None if points is None else points[i],
                                      None if labels is None else labels[i]) for i in range(n)])
        k = 3 if multimask_output else 1
        out = np.zeros((n, k, *grey.shape), bool)
        out[:, k // 2] = masks
        scores = np.tile(np.array([0.2, 0.9, 0.5] if k == 3 else [0.9], np.float32), (n, 1))
        logits = np.where(out, 10.0, -10.0).astype(np.float32)
        low = np.stack([[cv2.resize(m.astype(np.float32), (256, 256), interpolation=cv2.INTER_NEAREST) * 20 - 10
                         for m in row] for row in out])
        return Prediction(out, logits, scores, torch.from_numpy(low.astype(np.float32)))


class IgnoresClicks(StubPredictor):
    """The stub with clicks dropped (a box-only decoder, like zero-shot LiteMedSAM at its worst);
    the calls record no points."""

    def predict(self, boxes=None, points=None, point_labels=None, mask_input=None, multimask_output=False) -> Prediction:
        return super().predict(boxes=boxes, mask_input=mask_input, multimask_output=multimask_output)
