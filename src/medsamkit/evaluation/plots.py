"""Pictures for reports: box plots of a metric per model, and side-by-side comparison grids.

Box plots use matplotlib with the Agg backend (no display needed; imported only when called).
Grids are composed pixel by pixel (exact, predictable sizes): one row per case, columns
``image | ground truth | model 1 | model 2 | ...``, each panel letterboxed into
``panel x panel`` pixels under a title strip; model panels show the model's mask filled and the
ground truth outlined in white.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medsamkit.io.writers import atomic_output, write_png
from medsamkit.preprocessing.intensity import PercentileClip, to_rgb_uint8

from .overlay import draw_overlay

#: Pixel sizes of the grid layout (see :func:`grid_size`).
GAP, TITLE_H, ROW_TITLE_H = 6, 20, 24
BACKGROUND = (255, 255, 255)
NAMES = {"dsc": "DSC", "iou": "IoU", "nsd": "NSD", "hd95": "HD95"}


def box_plot(values: dict[str, dict[str, list[float]]], metric: str, path: str | os.PathLike,
             unit: str = "") -> None:
    """One PNG box plot: ``values[group][model]`` -> a box per model, grouped by ``group``
    (e.g. label); non-finite values are left out (their count is in the x tick label)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = list(values)
    models = list(next(iter(values.values()))) if values else []
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) * len(models) + 1.5), 4.0), dpi=100)
    positions, data, ticks = [], [], []
    for g, group in enumerate(groups):
        for m, model in enumerate(models):
            v = np.asarray(values[group][model], dtype=np.float64)
            finite = v[np.isfinite(v)]
            dropped = v.size - finite.size
            positions.append(g * (len(models) + 1) + m)
            data.append(finite if finite.size else [np.nan])
            label = model if len(groups) == 1 else f"{model}\nlabel {group}"
            ticks.append(label + (f"\n({dropped} not finite)" if dropped else ""))
    ax.boxplot(data, positions=positions, widths=0.6, showmeans=True)
    ax.set_xticks(positions)
    ax.set_xticklabels(ticks, fontsize=9)
    ax.set_ylabel(NAMES.get(metric, metric) + (f" ({unit})" if unit else ""))
    ax.set_title(f"{NAMES.get(metric, metric)} per case")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


@dataclass(frozen=True, eq=False)
class GridRow:
    """One case of a comparison grid.

    Attributes:
        title: the row's title (case id and why it was chosen).
        image: ``H x W x 3`` uint8 RGB.
        gt: ``H x W`` integer label map.
        preds: per model, ``(panel title, H x W label map or None when missing)``.
    """

    title: str
    image: np.ndarray
    gt: np.ndarray
    preds: Sequence[tuple[str, np.ndarray | None]]


def grid_size(n_rows: int, n_models: int, panel: int) -> tuple[int, int]:
    """``(height, width)`` in pixels of a grid of ``n_rows`` cases and ``n_models`` models."""
    cols = 2 + n_models
    width = cols * panel + (cols + 1) * GAP
    height = n_rows * (ROW_TITLE_H + TITLE_H + panel) + (n_rows + 1) * GAP
    return height, width


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _letterbox(image: np.ndarray, panel: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = panel / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.full((panel, panel, 3), BACKGROUND, np.uint8)
    top, left = (panel - nh) // 2, (panel - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return out


def _outline(image: np.ndarray, label_map: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    out = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 250))
    for label in np.unique(label_map):
        if label == 0:
            continue
        contours, _ = cv2.findContours((label_map == label).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, thickness)
    return out


def _panels(row: GridRow) -> list[tuple[str, np.ndarray]]:
    panels = [("image", row.image), ("ground truth", draw_overlay(row.image, row.gt))]
    for title, pred in row.preds:
        if pred is None:
            shown = (row.image * 0.35).astype(np.uint8)
        else:
            shown = draw_overlay(row.image, pred)
        panels.append((title, _outline(shown, row.gt)))
    return panels


def comparison_grid(rows: Sequence[GridRow], path: str | os.PathLike, panel: int = 256) -> tuple[int, int]:
    """Write the grid PNG (see the module docstring); return its ``(height, width)``."""
    if not rows:
        raise ValueError("a comparison grid needs at least one case")
    n_models = len(rows[0].preds)
    height, width = grid_size(len(rows), n_models, panel)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title_font, row_font = _font(13), _font(15)
    y = GAP
    for row in rows:
        if len(row.preds) != n_models:
            raise ValueError("every row of a grid needs the same models")
        draw.text((GAP, y + 3), row.title, fill=(0, 0, 0), font=row_font)
        y += ROW_TITLE_H
        for c, (title, picture) in enumerate(_panels(row)):
            x = GAP + c * (panel + GAP)
            draw.text((x + 2, y + 3), _fit(draw, title, title_font, panel - 4), fill=(0, 0, 0), font=title_font)
            canvas.paste(Image.fromarray(_letterbox(picture, panel)), (x, y + TITLE_H))
        y += TITLE_H + panel + GAP
    write_png(path, np.asarray(canvas))
    return height, width


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels. A ``"name: score"``
    title keeps its score whole and shortens the name, so that the figure stays readable."""
    if draw.textlength(text, font=font) <= width:
        return text
    head, sep, tail = text.rpartition(": ")
    stem, keep = (head, sep + tail) if sep else (text, "")
    for n in range(len(stem) - 1, 0, -1):
        short = stem[:n] + "…" + keep
        if draw.textlength(short, font=font) <= width:
            return short
    return stem[:1] + "…" + keep if keep else text[:1]


def display_rgb(array: np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 picture of a 2D image or slice (non-8-bit grey: 0.5-99.5 % clip)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return arr
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if arr.dtype != np.uint8:
        arr = PercentileClip(nonzero_only=False)(arr)
    return to_rgb_uint8(arr)
