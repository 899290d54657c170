"""The box baseline for Kvasir-SEG: the filled ground-truth box as the predicted mask.

Writes one 0/255 PNG per image (same size as the image, named ``<id>.png``) with the
``gt_boxes.json`` box (inclusive pixel bounds x0, y0, x1, y1) filled. Any segmentation model
prompted with that box should beat it; ``medsamkit compare`` shows by how much::

    python benchmarks/box_baseline.py -o /work/runs/kvasir-box
    medsamkit evaluate --pred /work/runs/kvasir-box --gt ../shared/data/kvasir-seg/masks \
        -o reports/box --tolerance 2 --cases splits/kvasir-seg.json:val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from medsamkit.io.writers import write_png

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"


def box_mask(size_hw: tuple[int, int], box: list[int]) -> np.ndarray:
    """A 0/255 uint8 mask of ``size_hw`` with the inclusive box filled (clipped to the image)."""
    h, w = size_hw
    x0, y0, x1, y1 = (int(v) for v in box)
    mask = np.zeros((h, w), np.uint8)
    mask[max(0, y0):min(h, y1 + 1), max(0, x0):min(w, x1 + 1)] = 255
    return mask


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder for <id>.png masks")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="kvasir-seg folder")
    args = ap.parse_args(argv)
    boxes_file = args.data / "gt_boxes.json"
    if not boxes_file.is_file():
        print(f"{boxes_file} not found", file=sys.stderr)
        return 2
    boxes = json.loads(boxes_file.read_text(encoding="utf-8"))
    for name, box in sorted(boxes.items()):
        with Image.open(args.data / "images" / f"{name}.jpg") as im:  # header only
            w, h = im.size
        write_png(args.output / f"{name}.png", box_mask((h, w), box))
    print(f"wrote {len(boxes)} box masks to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
