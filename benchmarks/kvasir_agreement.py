"""Kvasir-SEG: Dice of medsamkit's masks against the ground truth and against the official
LiteMedSAM pipeline's masks (ref-litemedsam/).

Run ``medsamkit segment`` first, e.g.::

    medsamkit segment ../shared/data/kvasir-seg/images \
        --boxes-file ../shared/data/kvasir-seg/gt_boxes.json -o runs/kvasir-lite
    python benchmarks/kvasir_agreement.py runs/kvasir-lite

Ground-truth masks are JPEG-compressed: thresholded at > 127 (see the data README).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from medsamkit.evaluation.metrics import dice

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("masks", type=Path, help="folder of predicted masks STEM.png")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="kvasir-seg folder")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"kvasir-seg not found at {args.data}", file=sys.stderr)
        return 2
    names = sorted(json.loads((args.data / "gt_boxes.json").read_text(encoding="utf-8")))
    vs_gt, vs_ref, missing = [], [], []
    for name in names:
        pred_path = args.masks / f"{name}.png"
        if not pred_path.exists():
            missing.append(name)
            continue
        pred = np.array(Image.open(pred_path)) > 0
        gt = np.array(Image.open(args.data / "masks" / f"{name}.jpg").convert("L")) > 127
        ref = np.array(Image.open(args.data / "ref-litemedsam" / f"{name}.png")) > 127
        vs_gt.append(dice(pred, gt))
        vs_ref.append(dice(pred, ref))
    result = {
        "n": len(vs_gt),
        "missing": len(missing),
        "dice_vs_gt_mean": float(np.nanmean(vs_gt)),
        "dice_vs_gt_median": float(np.nanmedian(vs_gt)),
        "dice_vs_official_mean": float(np.nanmean(vs_ref)),
        "dice_vs_official_min": float(np.nanmin(vs_ref)),
        "identical_to_official": int(sum(d == 1.0 for d in vs_ref)),
    }
    for key, value in result.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    reference = (args.data / "ref-litemedsam" / "RESULT.txt").read_text(encoding="utf-8").splitlines()
    print("official pipeline (ref-litemedsam/RESULT.txt):",
          next((line.strip() for line in reference if "dice_mean" in line), "no dice_mean line"))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
