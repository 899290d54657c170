"""SAM / MedSAM ViT-B at 1024 px on the CPU: the image encoder through each engine.

MedSAM ViT-B and SAM ViT-B share the architecture (ViT-B/16 encoder at 1024 x 1024, the SAM
prompt encoder and mask decoder), so one measurement stands for both. No real ViT-B weights are
reachable offline: the model gets the deterministic stand-in weights of ../shared/docs/parity.md
(``medsamkit.models.standin``), with which ``tests/inference/test_predictor_medsam_parity.py``
reproduces the official MedSAM output. The seconds do not depend on the weight values; the masks
would, so only the embedding error of each engine against torch fp32 is given.

For every engine (torch fp32, torch bf16 autocast, ONNX Runtime fp32, OpenVINO fp32 and bf16):
the first build with an empty engine cache (export/compile), a second build from the cache, the
encoder seconds per image (median of ``--runs`` after one warm-up) and the largest embedding
difference against torch fp32 as a fraction of the embedding's range. Then the box decoder: the
seconds of one extra box on an encoded image, torch and the engine decoder.

    OMP_NUM_THREADS=2 python benchmarks/bench_vitb_cpu.py --threads 2 --runs 5 [--json out.json]
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

from medsamkit.inference.engines import EngineChoice, build_decoder, build_encoder
from medsamkit.models.loader import load_model
from medsamkit.models.registry import get_spec
from medsamkit.models.standin import standin_state_dict

CHOICES = (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    out = fn()  # warm-up
    seconds = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds), seconds, out


def built_twice(choice: EngineChoice, loaded, threads: int, cache: Path):
    """The engine encoder for ``choice`` and the seconds of its first build (export + compile into
    the empty ``cache``) and of a second, cached build."""
    t = time.perf_counter()
    encoder = build_encoder(choice, loaded, threads, cache)
    first = time.perf_counter() - t
    t = time.perf_counter()
    build_encoder(choice, loaded, threads, cache)
    return encoder, first, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="medsam-vit-b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma-separated backend:precision, e.g. onnx:fp32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    choices = [tuple(c.split(":")) for c in args.only.split(",")] if args.only else CHOICES
    with tempfile.TemporaryDirectory(prefix="bench-vitb-") as tmp:
        tmp = Path(tmp)
        layout = {k: tuple(v.shape) for k, v in get_spec(args.model).build().state_dict().items()}
        checkpoint = tmp / f"{args.model}.pth"
        torch.save(standin_state_dict(layout), checkpoint)
        loaded = load_model(args.model, checkpoint=checkpoint, device="cpu")
        model = loaded.model.eval()
        size = model.image_size
        image = torch.from_numpy(np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))
        with torch.inference_mode():
            reference = model.encode(image)
        span = float(reference.max() - reference.min())
        rows = []
        for backend, precision in choices:
            choice = EngineChoice(backend, precision)
            encoder, first, cached = built_twice(choice, loaded, args.threads, tmp / f"cache-{backend}-{precision}")
            run = encoder if encoder is not None else model.encode
            with torch.inference_mode():
                median, seconds, emb = timed(lambda: run(image), args.runs)
            error = float((emb.float() - reference).abs().max()) / span
            row = {"backend": backend, "precision": precision, "first_build_s": first, "cached_build_s": cached,
                   "encode_s": median, "encode_runs_s": seconds, "max_error_of_range": error}
            rows.append(row)
            print(json.dumps(row), flush=True)
        box = torch.tensor([[200.0, 240.0, 700.0, 800.0]])
        with torch.inference_mode():
            torch_box, _, _ = timed(lambda: model.decode(reference, boxes=box), max(args.runs, 10))
        decoder = build_decoder(EngineChoice("onnx", "fp32"), loaded, args.threads, tmp / "cache-decoder")
        engine_box = None
        if decoder is not None:
            engine_box, _, _ = timed(lambda: decoder(reference, box), max(args.runs, 10))
    result = {
        "model": args.model, "image_size": size, "threads": args.threads, "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average_after": os.getloadavg(), "encoders": rows,
        "extra_box_s": {"torch": torch_box, "engine": engine_box},
    }
    print(json.dumps(result["extra_box_s"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
