"""Where an image sits in a model's square input, in numpy only (no torch).

:mod:`medsamkit.preprocessing.geometry` builds on these; the torch-free fast path of the CLI
(:mod:`medsamkit.inference.fast2d`) uses them directly, so both make the same model input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    """Where an image sits in the model input.

    original_size: (H, W) of the image as given.
    resized_size: (h, w) of the resized image inside the square model input (before padding).
    input_size: side S of the square model input.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    input_size: int

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Factors from original to model pixels along x and y."""
        (h, w), (nh, nw) = self.original_size, self.resized_size
        return nw / w, nh / h


def longest_side_size(h: int, w: int, target: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side at ``target``, rounded as the references do."""
    scale = target / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def minmax01(image: np.ndarray) -> np.ndarray:
    """float32 ``image`` scaled to [0, 1] by its own minimum and maximum."""
    image = image.astype(np.float32)
    lo = float(image.min())
    span = max(float(image.max()) - lo, 1e-8)
    return (image - lo) / span


def padded_chw(image: np.ndarray, size: int) -> np.ndarray:
    """H x W x 3 float -> (1, 3, size, size) float32, zero-padded bottom/right."""
    h, w = image.shape[:2]
    padded = np.zeros((size, size, 3), dtype=np.float32)
    padded[:h, :w] = image
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None])


def litemedsam_frame(original_size: tuple[int, int], input_size: int = 256) -> Frame:
    """LiteMedSAM's frame: the longest side to ``input_size``, padded bottom/right."""
    h, w = original_size
    return Frame((h, w), longest_side_size(h, w, input_size), input_size)


def litemedsam_resize(image: np.ndarray, input_size: int = 256) -> tuple[np.ndarray, Frame]:
    """H x W x 3 uint8 -> (the resized h x w x 3 uint8 image, cv2 INTER_AREA as the reference; frame)."""
    frame = litemedsam_frame(image.shape[:2], input_size)
    nh, nw = frame.resized_size
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA), frame


def litemedsam_boxes(boxes: np.ndarray, frame: Frame) -> np.ndarray:
    """(N, 4) original-pixel boxes -> model-input boxes, float32: the reference's
    ``int(v * 256 / max(H, W))``, a truncation."""
    ratio = frame.input_size / max(frame.original_size)
    return np.trunc(np.asarray(boxes, dtype=np.float64) * ratio).astype(np.float32)


def litemedsam_logits_to_original(low_res: np.ndarray, frame: Frame) -> np.ndarray:
    """(N, S, S) logits in the model-input frame -> (N, H, W): crop the padding, bilinear
    (half-pixel centres, as torch's ``interpolate(..., align_corners=False)``) to the original size.
    numpy and OpenCV only: no torch threads woken (they would spin against an engine's)."""
    (h, w), (nh, nw) = frame.original_size, frame.resized_size
    if low_res.shape[-1] != frame.input_size:
        raise ValueError(f"decoder logits of side {low_res.shape[-1]}, expected {frame.input_size}")
    return np.stack([cv2.resize(np.ascontiguousarray(m[:nh, :nw]), (w, h), interpolation=cv2.INTER_LINEAR)
                     for m in low_res]) if len(low_res) else np.zeros((0, h, w), np.float32)
