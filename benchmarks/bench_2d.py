"""2D latency and memory of box-prompted segmentation.

Measures, per image, with the model already loaded:
  - full:      intensity scheme + resize + encoder + decoder (1 box) + upsampling
  - encode:    preprocessing + image encoder only
  - decode x1: decoder + upsampling for 1 box on a cached embedding
  - decode x10: the same for 10 boxes in ONE batched decoder call
and the process's peak resident memory. Images: Kvasir-SEG from ../shared/data when present
(its gt_boxes.json boxes), else synthetic 512x512 images.

    python benchmarks/bench_2d.py --images 30 [--model litemedsam] [--backend torch|onnx] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medsamkit.inference.onnx_encoder import OnnxEncoder
from medsamkit.inference.predictor import Predictor
from medsamkit.io.image2d import read_image_2d
from medsamkit.models.loader import load_model
from medsamkit.models.zoo import cache_dir
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.preprocessing.intensity import select_scheme, to_rgb_uint8

KVASIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"


def _images(n: int, seed: int = 0):
    boxes_file = KVASIR / "gt_boxes.json"
    if boxes_file.exists():
        boxes = json.loads(boxes_file.read_text(encoding="utf-8"))
        for name in sorted(boxes)[:n]:
            img = read_image_2d(KVASIR / "images" / f"{name}.jpg")
            scheme, _ = select_scheme(img.kind)
            yield to_rgb_uint8(scheme(img.pixels)), np.array(boxes[name], float)
        return
    rng = np.random.default_rng(seed)
    for _ in range(n):
        img = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
        yield img, np.array([100, 120, 300, 340], float)


def _jitter_boxes(box: np.ndarray, shape: tuple[int, int], k: int, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    out = np.repeat(box[None], k, axis=0) + rng.integers(-10, 11, (k, 4))
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--model", default="litemedsam")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                    help="image encoder runtime (onnx: ONNX Runtime on the CPU, exported once and cached)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.checkpoint, device=args.device)
    encoder = None
    if args.backend == "onnx":
        encoder = OnnxEncoder(loaded.model.image_encoder, loaded.model.image_size, cache_dir() / "onnx",
                              loaded.spec.architecture, args.threads)
    predictor = Predictor(loaded.model, geometry_for(loaded.spec.preprocessing), encoder)
    rng = np.random.default_rng(0)
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)

    # warm-up (first calls allocate and pick kernels)
    warm = np.zeros((300, 300, 3), np.uint8)
    warm[100:200, 100:200] = 200
    predictor.set_image(warm)
    predictor.predict(boxes=np.array([[90, 90, 210, 210]]))

    full, encode, dec1, dec10 = [], [], [], []
    for rgb, box in _images(args.images):
        box = box.reshape(-1, 4)[:1]
        boxes10 = _jitter_boxes(box[0], rgb.shape[:2], 10, rng)

        def run_full():
            predictor.set_image(rgb)
            predictor.predict(boxes=box)
            sync()

        full.append(_timed(run_full))
        encode.append(_timed(lambda: (predictor.set_image(rgb), sync())))
        dec1.append(_timed(lambda: (predictor.predict(boxes=box), sync())))
        dec10.append(_timed(lambda: (predictor.predict(boxes=boxes10), sync())))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "model": loaded.spec.name,
        "device": str(loaded.device),
        "backend": args.backend,
        "threads": torch.get_num_threads(),
        "images": len(full),
        "data": "kvasir-seg" if (KVASIR / "gt_boxes.json").exists() else "synthetic 512x512",
        "median_s": {
            "full_1_box": statistics.median(full),
            "encode": statistics.median(encode),
            "decode_1_box": statistics.median(dec1),
            "decode_10_boxes_batched": statistics.median(dec10),
        },
        "peak_rss_mb": round(peak_mb, 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if loaded.device.type == "cuda" else None,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
