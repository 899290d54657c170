"""A stand-in for :class:`medsamkit.inference.predictor.Predictor` that needs no model.

It "segments" the bright pixels (> 127) of the slice inside each box, with logit = brightness -
127.5 inside the box and -100 outside, and records every call, so the propagation logic (box
growth, fallbacks, one encoder pass per slice, batched decoding, overlaps) can be tested in
milliseconds and exactly. Real-model behaviour is tested with the LiteMedSAM weights elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medsamkit.inference.predictor import ImageEmbedding, Prediction
from medsamkit.preprocessing.geometry import Frame, ModelGeometry


class FakePredictor:
    def __init__(self) -> None:
        self.embedded: list[np.ndarray] = []  # the grey slices encoded, in order
        self.decoded: list[np.ndarray] = []  # the (N, 4) boxes of each predict call
        self.embedding: ImageEmbedding | None = None
        self.geometry = ModelGeometry()  # identity frame: boxes grow in slice pixels

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        self.embedded.append(image[:, :, 0].copy())
        h, w = image.shape[:2]
        return ImageEmbedding(torch.from_numpy(image[:, :, 0].astype(np.float32)), Frame((h, w), (h, w), max(h, w)))

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        self.embedding = embedding

    def predict(self, boxes: np.ndarray) -> Prediction:
        grey = self.embedding.features.numpy()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.decoded.append(boxes.copy())
        logits = np.full((len(boxes), 1, *grey.shape), -100.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            ys = slice(max(int(math.floor(y0)), 0), int(math.ceil(y1)) + 1)
            xs = slice(max(int(math.floor(x0)), 0), int(math.ceil(x1)) + 1)
            logits[i, 0, ys, xs] = grey[ys, xs] - 127.5
        return Prediction(logits > 0, logits, np.ones((len(boxes), 1), np.float32),
                          torch.zeros(len(boxes), 1, 256, 256))
