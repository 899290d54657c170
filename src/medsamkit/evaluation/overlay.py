"""Pictures of masks over images: overlays with boxes, used by ``segment --overlay`` and reports."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# distinct, colour-blind-friendly colours (Okabe-Ito), RGB
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (255, 255, 255),
)


def colour_for(label: int) -> tuple[int, int, int]:
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def draw_overlay(
    image: np.ndarray,
    label_map: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    box_labels: Sequence[int] | None = None,
    alpha: float = 0.45,
    clicks: Sequence[tuple[float, float, int]] = (),
) -> np.ndarray:
    """Blend each label of ``label_map`` (H, W ints, 0 = background) over an H x W x 3 uint8
    image, outline it, and draw the prompt boxes (x0, y0, x1, y1 pixels) in the label's colour
    and the clicks ``(x, y, 1|0)``: foreground as green discs, background as red discs."""
    out = image.astype(np.float32).copy()
    labels = [int(v) for v in np.unique(label_map) if v != 0]
    for label in labels:
        region = label_map == label
        out[region] = (1 - alpha) * out[region] + alpha * np.array(colour_for(label), np.float32)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for label in labels:
        contours, _ = cv2.findContours((label_map == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour_for(label), thickness)
    for i, box in enumerate(boxes):
        label = box_labels[i] if box_labels is not None else i + 1
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour_for(label), thickness)
    radius = max(2, round(max(image.shape[:2]) / 100))
    for x, y, positive in clicks:
        centre = (int(round(x)), int(round(y)))
        cv2.circle(out, centre, radius, (0, 200, 0) if positive else (220, 0, 0), -1)
        cv2.circle(out, centre, radius, (255, 255, 255), 1)
    return out
