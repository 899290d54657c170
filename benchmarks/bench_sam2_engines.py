"""SAM2 family on the CPU: the image encoder (``SAM2Base.encode``: three feature maps) through each engine,
and whether each engine keeps the masks of torch fp32.

Models: SAM2.1 Hiera-tiny at 1024 px and MedSAM2 (SAM2.1 Hiera-tiny at 512 px). No real SAM2 or
MedSAM2 weights are reachable offline: the models carry the deterministic stand-in weights of
../shared/docs/parity.md (``medsamkit.models.standin``), with which
``tests/inference/test_sam2_predictor.py`` reproduces the official SAM2.1 2D output and
``tests/inference/test_memory_propagate.py`` the official MedSAM2 3D output. The seconds do not
depend on the weight values; the masks do, so agreement is measured on these weights.

For every engine (torch fp32, torch bf16 autocast, ONNX Runtime fp32, OpenVINO fp32 and bf16):
the first build with an empty engine cache (export/compile), a second build from the cache, the
encoder seconds per image (median of ``--runs`` after one warm-up) on a real Kvasir-SEG image, the
largest difference of each of the 3 outputs (vision, stride-4, stride-8) against torch fp32 as a
fraction of that output's range, the whole 2D predict (``set_image`` + one box) and, on the
first ``--agreement`` Kvasir-SEG images with their ground-truth boxes, the Dice of the engine's
masks against the torch fp32 masks (and of the torch fp32 masks against the ground truth, to show
the stand-in masks are not empty or trivial). ``--interleaved N`` then times every engine in turn
for N rounds (the same load for each when the machine is shared).

    OMP_NUM_THREADS=2 python benchmarks/bench_sam2_engines.py --threads 2 --runs 3 --agreement 20 \\
        [--interleaved 5] [--models sam2.1-hiera-tiny,medsam2] [--only onnx:fp32,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_vitb_cpu import built_twice, timed  # sibling script: the same timing and build helpers
from medsamkit.inference.engines import EngineChoice
from medsamkit.inference.sam2_predictor import SAM2Predictor
from medsamkit.models.checkpoint import load_state_dict_strict
from medsamkit.models.loader import LoadedModel
from medsamkit.models.registry import get_spec
from medsamkit.models.standin import standin_state_dict
from medsamkit.preprocessing.geometry import geometry_for

CHOICES = (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))
KVASIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"
OUTPUTS = ("vision", "stride4", "stride8")


def standin_model(name: str) -> LoadedModel:
    spec = get_spec(name)
    model = spec.build()
    load_state_dict_strict(model, standin_state_dict({k: v.shape for k, v in model.state_dict().items()}),
                           "stand-in", name)
    return LoadedModel(model.eval(), spec, Path("stand-in"), torch.device("cpu"))


def kvasir(count: int) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, RGB image, box, ground-truth mask) of the first ``count`` Kvasir-SEG images by name."""
    from PIL import Image

    boxes_file = KVASIR / "gt_boxes.json"
    if not boxes_file.exists():
        return []
    boxes = json.loads(boxes_file.read_text(encoding="utf-8"))
    out = []
    for stem in sorted(boxes)[:count]:
        image = np.asarray(Image.open(KVASIR / "images" / f"{stem}.jpg").convert("RGB"))
        truth = np.asarray(Image.open(KVASIR / "masks" / f"{stem}.jpg").convert("L")) > 127
        out.append((stem, image, np.array(boxes[stem], float).reshape(-1, 4)[:1], truth))
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def bench_model(name: str, choices, args, images, tmp: Path) -> dict:
    loaded = standin_model(name)
    model, geometry = loaded.model, geometry_for(loaded.spec.preprocessing)
    if images:
        _, image, box, _ = images[0]
    else:
        image = np.random.default_rng(0).integers(0, 255, (512, 600, 3), dtype=np.uint8)
        box = np.array([[100.0, 120.0, 300.0, 340.0]])
    x, _ = geometry.prepare_image(image)
    with torch.inference_mode():
        reference = model.encode(x)
    spans = [float(r.max() - r.min()) for r in reference]
    torch_masks = None
    rows, runners = [], {}
    for backend, precision in choices:
        choice = EngineChoice(backend, precision)
        encoder, first, cached = built_twice(choice, loaded, args.threads, tmp / f"cache-{name}-{backend}-{precision}")
        run = encoder if encoder is not None else model.encode
        runners[(backend, precision)] = run
        with torch.inference_mode():
            median, seconds, out = timed(lambda: run(x), args.runs)
        errors = {k: float((o.float() - r).abs().max()) / s for k, o, r, s in zip(OUTPUTS, out, reference, spans)}
        predictor = SAM2Predictor(model, geometry, encoder)
        predict, _, _ = timed(lambda: (predictor.set_image(image), predictor.predict(boxes=box)), args.runs)
        masks = []
        for _, img, b, _ in images[: args.agreement]:
            predictor.set_image(img)
            masks.append(predictor.predict(boxes=b).masks[0, 0])
        if (backend, precision) == ("torch", "fp32"):
            torch_masks = masks
        row = {"backend": backend, "precision": precision, "first_build_s": first, "cached_build_s": cached,
               "encode_s": median, "encode_runs_s": seconds, "max_error_of_range": errors,
               "predict_1box_s": predict}
        if torch_masks is not None and masks:
            d = [dice(m, t) for m, t in zip(masks, torch_masks)]
            row["dice_vs_torch_fp32"] = {"mean": float(np.mean(d)), "min": float(np.min(d)), "n": len(d)}
        rows.append(row)
        print(name, json.dumps(row), flush=True)
    for _ in range(args.interleaved):  # every engine in turn: the same load for each (a busy machine)
        for row, run in zip(rows, runners.values()):
            with torch.inference_mode():
                t = time.perf_counter()
                run(x)
                row.setdefault("interleaved_runs_s", []).append(time.perf_counter() - t)
    for row in rows:
        if "interleaved_runs_s" in row:
            row["encode_interleaved_s"] = statistics.median(row["interleaved_runs_s"])
    result = {"model": name, "image_size": model.image_size, "encoders": rows}
    if torch_masks:
        truth = [dice(m, t) for m, (_, _, _, t) in zip(torch_masks, images)]
        result["torch_fp32_masks"] = {"dice_vs_ground_truth_mean": float(np.mean(truth)),
                                      "foreground_fraction_mean": float(np.mean([m.mean() for m in torch_masks])),
                                      "empty": int(sum(not m.any() for m in torch_masks))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sam2.1-hiera-tiny,medsam2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agreement", type=int, default=20, help="Kvasir-SEG images for the mask agreement")
    parser.add_argument("--interleaved", type=int, default=0,
                        help="then this many rounds of every engine in turn (fair under a changing load)")
    parser.add_argument("--only", default=None, help="comma-separated backend:precision, e.g. onnx:fp32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    choices = [tuple(c.split(":")) for c in args.only.split(",")] if args.only else list(CHOICES)
    if ("torch", "fp32") in choices:  # the reference masks come first
        choices.remove(("torch", "fp32"))
        choices.insert(0, ("torch", "fp32"))
    images = kvasir(max(args.agreement, 1))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-sam2-engines-") as tmp:
        models = [bench_model(name, choices, args, images, Path(tmp)) for name in args.models.split(",")]
    result = {
        "threads": args.threads, "runs": args.runs, "agreement_images": min(args.agreement, len(images)),
        "image": images[0][0] if images else "synthetic", "weights": "stand-in (../shared/docs/parity.md)",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "models": models,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
