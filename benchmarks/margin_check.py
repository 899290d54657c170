"""How the bf16 image encoder's masks compare with fp32's, and which ones MarginCheck re-checks.

For each Kvasir-SEG image with its ``gt_boxes.json`` box, LiteMedSAM (real weights) is run on
OpenVINO bf16 and fp32 (the same ONNX export, the same ONNX Runtime box decoder). Per image it
records the Dice of each mask against the official pipeline's mask (``ref-litemedsam/``) and the
bf16 logits' near fraction (:class:`~medsamkit.inference.margin_check.MarginCheck`: pixels within
``band`` of 0 / mask pixels) for several bands. The table then says, for each (band,
max_fraction), how many images would be re-checked in fp32 and the agreement that results.

    python benchmarks/margin_check.py --json runs/margin_check.json            # all 880, ~20 min
    python benchmarks/margin_check.py --from-json runs/margin_check.json       # the table again
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"
BANDS = (0.25, 0.5, 1.0, 2.0)
FRACTIONS = (0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0)


def measure(data: Path, limit: int | None, threads: int) -> dict:
    import cv2
    import torch

    from medsamkit.evaluation.metrics import dice
    from medsamkit.inference.factory import make_predictor
    from medsamkit.inference.margin_check import MarginCheck
    from medsamkit.models.loader import load_model

    torch.set_num_threads(threads)
    loaded = load_model("litemedsam", device="cpu", allow_download=False)
    predictors = {p: make_predictor(loaded, backend="openvino", precision=p, threads=threads) for p in ("bf16", "fp32")}
    predictors["bf16"].exact_encoder = None  # the raw bf16 masks: the check is simulated below
    boxes = json.loads((data / "gt_boxes.json").read_text(encoding="utf-8"))
    names = sorted(boxes)[:limit]
    out: dict = {}
    start = time.perf_counter()
    for i, name in enumerate(names):
        rgb = cv2.cvtColor(cv2.imread(str(data / "images" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        ref = cv2.imread(str(data / "ref-litemedsam" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127
        record = {}
        for precision, predictor in predictors.items():
            embedding = predictor.set_image(rgb)
            prediction = predictor.predict(boxes=np.asarray([boxes[name]], np.float64))
            record[f"dice_{precision}"] = float(dice(prediction.masks[0, 0], ref))
            if precision == "bf16":
                low = prediction.low_res_logits[:, 0].float().numpy()
                record["near"] = {str(b): float(MarginCheck(band=b).near_fraction(low, embedding.frame)[0])
                                  for b in BANDS}
        out[name] = record
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(names)} images, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return {"images": out, "load_after": os.getloadavg()}


def table(result: dict) -> str:
    images = result["images"].values()
    bf16 = np.array([r["dice_bf16"] for r in images])
    fp32 = np.array([r["dice_fp32"] for r in images])
    lines = [f"{len(bf16)} images. bf16 alone: mean Dice vs official {bf16.mean():.4f}, min {bf16.min():.4f}, "
             f"{(bf16 < 0.99).sum()} below 0.99, {(bf16 < 0.95).sum()} below 0.95; fp32 alone: mean {fp32.mean():.4f}, "
             f"min {fp32.min():.4f}", "",
             "| band | max_fraction | re-checked | mean Dice | min Dice | below 0.99 | below 0.95 |",
             "|---|---|---|---|---|---|---|"]
    for band in BANDS:
        near = np.array([r["near"][str(band)] for r in images])
        for fraction in FRACTIONS:
            redo = near > fraction
            got = np.where(redo, fp32, bf16)
            lines.append(f"| {band} | {fraction} | {redo.sum()} ({100 * redo.mean():.1f}%) | {got.mean():.4f} | "
                         f"{got.min():.4f} | {(got < 0.99).sum()} | {(got < 0.95).sum()} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="kvasir-seg folder")
    ap.add_argument("--limit", type=int, default=None, help="the first N images (sorted names)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the per-image figures here")
    ap.add_argument("--from-json", type=Path, help="print the table of an earlier run")
    args = ap.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        if not (args.data / "gt_boxes.json").is_file():
            print(f"kvasir-seg not found at {args.data}", file=sys.stderr)
            return 2
        result = measure(args.data, args.limit, args.threads)
        if args.json:
            args.json.write_text(json.dumps(result) + "\n", encoding="utf-8")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
