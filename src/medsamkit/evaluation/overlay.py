"""Pictures of masks over images: overlays with boxes, used by ``segment --overlay`` and reports."""

from __future__ import annotations

import math
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


#: the picture written by ``segment --overlay``: outline and box colours distinct from the fills
OUTLINE_COLOUR = (255, 255, 255)
BOX_COLOUR = (255, 255, 0)
CLICK_COLOURS = {1: (0, 200, 0), 0: (220, 0, 0)}


def draw_overlay(
    image: np.ndarray,
    label_map: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    box_labels: Sequence[int] | None = None,
    alpha: float = 0.45,
    clicks: Sequence[tuple[float, float, int]] = (),
    outline_colour: tuple[int, int, int] | None = None,
    box_colour: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Blend each label of ``label_map`` (H, W ints, 0 = background) over an H x W x 3 uint8
    image, outline it, and draw the prompt boxes (x0, y0, x1, y1 pixels) and the clicks
    ``(x, y, 1|0)``: foreground as green discs, background as red discs. Outlines and boxes take
    the label's colour unless ``outline_colour`` / ``box_colour`` are given."""
    out = image.astype(np.float32).copy()
    labels = [int(v) for v in np.unique(label_map) if v != 0]
    for label in labels:
        region = label_map == label
        out[region] = (1 - alpha) * out[region] + alpha * np.array(colour_for(label), np.float32)
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for label in labels:
        contours, _ = cv2.findContours((label_map == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, outline_colour or colour_for(label), thickness)
    for i, box in enumerate(boxes):
        label = box_labels[i] if box_labels is not None else i + 1
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), box_colour or colour_for(label), thickness)
    radius = max(2, round(max(image.shape[:2]) / 100))
    for x, y, positive in clicks:
        centre = (int(round(x)), int(round(y)))
        cv2.circle(out, centre, radius, CLICK_COLOURS[1 if positive else 0], -1)
        cv2.circle(out, centre, radius, (255, 255, 255), 1)
    return out


def display_scale(shape: Sequence[int], min_side: int = 512) -> int:
    """The whole-number factor that brings an image's longest side to at least ``min_side``."""
    return max(1, math.ceil(min_side / max(int(shape[0]), int(shape[1]))))


def overlay_picture(
    image: np.ndarray,
    label_map: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    box_labels: Sequence[int] | None = None,
    clicks: Sequence[tuple[float, float, int]] = (),
    min_side: int = 512,
) -> np.ndarray:
    """The picture of ``segment --overlay``: the image enlarged (nearest neighbour, a whole
    factor, see :func:`display_scale`) when its longest side is under ``min_side``, each object
    filled in its own colour with a white outline, the box prompts in yellow (numbered when several),
    the clicks, and a legend strip under the image saying which is which.

    Pixel (y, x) of the image covers rows y*k..y*k+k-1 and columns x*k..x*k+k-1 of the picture.
    """
    k = display_scale(image.shape, min_side)
    if set(np.unique(label_map).tolist()) == {0, 255}:  # a single object's 0/255 mask: the first colour
        label_map = (label_map > 0).astype(np.uint8)
    big = np.repeat(np.repeat(image, k, axis=0), k, axis=1)
    big_labels = np.repeat(np.repeat(label_map, k, axis=0), k, axis=1)
    scaled_boxes = [[v * k for v in box] for box in boxes]
    scaled_clicks = [((x + 0.5) * k - 0.5, (y + 0.5) * k - 0.5, c) for x, y, c in clicks]
    out = draw_overlay(big, big_labels, scaled_boxes, box_labels, clicks=scaled_clicks,
                       outline_colour=OUTLINE_COLOUR, box_colour=BOX_COLOUR)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    for i, box in enumerate(scaled_boxes if len(scaled_boxes) > 1 else []):
        label = box_labels[i] if box_labels is not None else i + 1
        x0, y0 = int(round(box[0])), int(round(box[1]))
        cv2.putText(out, str(label), (max(x0 + 2, 0), max(y0 - 4, 12)), font, scale, BOX_COLOUR, 1, cv2.LINE_AA)
    labels = [int(v) for v in np.unique(label_map) if v != 0]
    entries: list[tuple[str, tuple[int, int, int], str]] = [
        (f"mask {lab}" if len(labels) > 1 else "mask", colour_for(lab), "fill") for lab in labels[:8]]
    entries.append(("outline", OUTLINE_COLOUR, "line"))
    if len(boxes):
        entries.append(("box prompt", BOX_COLOUR, "rect"))
    if any(c for _, _, c in clicks):
        entries.append(("click +", CLICK_COLOURS[1], "dot"))
    if any(not c for _, _, c in clicks):
        entries.append(("click -", CLICK_COLOURS[0], "dot"))
    return np.concatenate([out, _legend(entries, out.shape[1])], axis=0)


def _legend(entries: Sequence[tuple[str, tuple[int, int, int], str]], width: int) -> np.ndarray:
    """A dark strip with one swatch and name per entry, wrapped to ``width``."""
    font, scale, row_h, pad = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 22, 8
    placed, x, row = [], pad, 0
    for name, colour, kind in entries:
        w = 20 + cv2.getTextSize(name, font, scale, 1)[0][0] + 2 * pad
        if x + w > width and x > pad:
            x, row = pad, row + 1
        placed.append((x, row, name, colour, kind))
        x += w
    strip = np.full(((row + 1) * row_h + 4, width, 3), 32, np.uint8)
    for x, row, name, colour, kind in placed:
        cy = row * row_h + row_h // 2 + 2
        if kind == "fill":
            cv2.rectangle(strip, (x, cy - 6), (x + 14, cy + 6), colour, -1)
        elif kind == "line":
            cv2.line(strip, (x, cy), (x + 14, cy), colour, 2)
        elif kind == "rect":
            cv2.rectangle(strip, (x, cy - 6), (x + 14, cy + 6), colour, 1)
        else:
            cv2.circle(strip, (x + 7, cy), 5, colour, -1)
        cv2.putText(strip, name, (x + 20, cy + 5), font, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return strip
