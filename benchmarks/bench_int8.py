"""int8 (NNCF post-training quantisation) of the LiteMedSAM image encoder on OpenVINO: its masks
against the official pipeline's and the ground truth, and its speed, next to bf16 and fp32.

The encoder is quantised on ``--calibration`` Kvasir-SEG images (names sorted, from index
``--calibration-start``) and evaluated on the first ``--images`` images (none of them used for
calibration), each with its ``gt_boxes.json`` box; the official masks are
``../shared/data/kvasir-seg/ref-litemedsam/``. Encoder speed: one image at a time, latency mode,
``--threads`` threads, median over the evaluation images (wall and process CPU seconds).

    python benchmarks/bench_int8.py --images 20 --calibration 16 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
KVASIR = HERE.parents[1] / "shared" / "data" / "kvasir-seg"


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--calibration", type=int, default=16)
    ap.add_argument("--calibration-start", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16,int8")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch

    from medsamkit.inference.factory import make_predictor
    from medsamkit.io.image2d import read_image_2d
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.intensity import select_scheme, to_rgb_uint8

    torch.set_num_threads(args.threads)
    boxes = json.loads((KVASIR / "gt_boxes.json").read_text(encoding="utf-8"))
    names = sorted(boxes)
    evaluation = [n for n in names[: args.images] if (KVASIR / "ref-litemedsam" / f"{n}.png").exists()]
    calib_names = names[args.calibration_start: args.calibration_start + args.calibration]
    assert not set(calib_names) & set(evaluation)

    def rgb(name: str) -> np.ndarray:
        image = read_image_2d(KVASIR / "images" / f"{name}.jpg")
        return to_rgb_uint8(select_scheme(image.kind)[0](image.pixels))

    loaded = load_model("litemedsam", device="cpu")
    result: dict = {"load_before": os.getloadavg(), "evaluation_images": len(evaluation),
                    "calibration_images": calib_names}
    for precision in args.precisions.split(","):
        t = time.perf_counter()
        calibration = ()
        if precision == "int8":
            geometry = make_predictor(loaded).geometry
            calibration = [geometry.prepare_image(rgb(n))[0].numpy() for n in calib_names]
        predictor = make_predictor(loaded, backend="openvino", precision=precision, threads=args.threads,
                                   calibration=calibration)
        build = time.perf_counter() - t
        agree, truth, walls, cpus = [], [], [], []
        for name in evaluation:
            image = rgb(name)
            tensor, _ = predictor.geometry.prepare_image(image)
            w, c = time.perf_counter(), time.process_time()
            predictor.encoder(tensor)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
            predictor.set_image(image)
            mask = predictor.predict(boxes=np.asarray(boxes[name], float).reshape(-1, 4)).masks[:, 0].any(0)
            agree.append(_dice(mask, _mask(KVASIR / "ref-litemedsam" / f"{name}.png")))
            truth.append(_dice(mask, _mask(KVASIR / "masks" / f"{name}.jpg")))
        result[precision] = {"build_s": build, "encoder_wall_median_s": statistics.median(walls),
                             "encoder_cpu_median_s": statistics.median(cpus),
                             "dice_vs_official_mean": float(np.mean(agree)),
                             "dice_vs_official_min": float(np.min(agree)),
                             "dice_vs_truth_mean": float(np.mean(truth)), "load": os.getloadavg()}
        print(precision, json.dumps(result[precision]), flush=True)
    if "fp32" in result:
        for p in args.precisions.split(","):
            result[p]["dice_vs_truth_drop_vs_fp32"] = result["fp32"]["dice_vs_truth_mean"] - result[p]["dice_vs_truth_mean"]
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
