"""Spot-check pictures and text summaries of a preprocess cache (``medsamkit inspect-cache``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medsamkit.data.samples import Sample
from medsamkit.evaluation.overlay import draw_overlay


def sample_tile(sample: Sample) -> np.ndarray:
    """The sample's S x S image with its mask (in the label's colour) and its box drawn on it."""
    labels = sample.mask.astype(np.int32) * int(sample.label)
    return draw_overlay(sample.image, labels, [sample.box], [int(sample.label)])


def pick_samples(total: int, n: int, seed: int = 0) -> list[int]:
    """``n`` distinct sample indices out of ``total`` (all when fewer), sorted, reproducible."""
    if total <= 0 or n <= 0:
        return []
    chosen = np.random.default_rng(seed).choice(total, size=min(n, total), replace=False)
    return sorted(int(i) for i in chosen)


def contact_sheet(tiles: list[np.ndarray], columns: int = 4, gap: int = 2) -> np.ndarray:
    """Tiles of one size side by side, ``columns`` per row, on black with ``gap`` pixels."""
    if not tiles:
        raise ValueError("no tiles to put on a sheet")
    h, w = tiles[0].shape[:2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    return sheet


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Human-readable lines: model and frame, source, cases and samples per split and label."""
    counts = manifest["counts"]
    names = manifest.get("label_names", {})
    lines = [
        f"model {manifest['model']} ({manifest['family']} geometry, {manifest['input_size']} px), "
        f"layout {manifest['layout']}, source {manifest['source_root']}",
        f"split from {manifest.get('split_source', '?')}",
        f"{counts['cases']} cases ({_per(counts['cases_per_split'])}), {counts['samples']} samples "
        f"({_per(counts['samples_per_split'])}), {counts['slices_stored']} slices stored",
    ]
    for label, per_split in counts["samples_per_label"].items():
        name = f" {names[label]}" if label in names else ""
        lines.append(f"  label {label}{name}: {sum(per_split.values())} samples ({_per(per_split)})")
    if counts.get("slice_size_min"):
        lines.append(f"original slice sizes (y, x) from {tuple(counts['slice_size_min'])} to "
                     f"{tuple(counts['slice_size_max'])}")
    return lines


def _per(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counter.items()) or "none"
