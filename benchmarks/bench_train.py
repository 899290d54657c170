"""Decoder-only fine-tuning speed: cached image embeddings vs re-encoding every step.

Same model (LiteMedSAM, real weights), same Kvasir-SEG training samples (the first N of the
preprocess cache's train split), same loss/optimiser/batch size, one Lightning epoch each:

  - cached:    the embeddings computed once (timed separately: the one-off cost) and read from
               the memory-mapped cache each step; an epoch runs only the mask decoder.
  - re-encode: the frozen image encoder runs on every image of every step (no_grad), then the
               decoder.

Both arms run with the same ``--precision`` (Lightning's, e.g. ``bf16-mixed``: the encoder of the
re-encoding arm runs under the same autocast) and ``--compile`` (``trainer.compile``: the decoder
step is torch.compile'd; the first epoch includes the compilation, so use ``--epochs 2`` and read
the later epochs). ``--reference`` adds a third arm: re-encoding with the defaults (32-true, not
compiled), i.e. what decoder fine-tuning cost before any of these settings.

The cached run stores float32; the float16 storage (the default) is then measured from the same
values: bytes per image, and how much the decoder's logits and masks change.

    python benchmarks/bench_train.py --cache /work/runs/cache/kvasir-seg --samples 64 [--json out.json]
    python benchmarks/bench_train.py --precision bf16-mixed --compile --epochs 2 --reference
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from medsamkit.data.cache import PreprocessedCache
from medsamkit.models.loader import load_model
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.training.config import load_config
from medsamkit.training.datamodule import DataSources
from medsamkit.training.datasets import head
from medsamkit.training.fit import build_datamodule, build_net, build_trainer
from medsamkit.training.losses import SegmentationLoss
from medsamkit.training.module import SegmentationModule


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def run_epoch(model, sources: DataSources, out: Path, cached: bool, batch_size: int, epochs: int,
              precision: str = "32-true", compile: bool = False, embedding_backend: str = "auto") -> dict:
    config = load_config([], ["--data.embedding_backend", embedding_backend,
        "--trainer.precision", precision, "--trainer.compile", str(compile).lower(),
        "--model.mode", "decoder", "--data.embeddings", str(cached).lower(), "--data.batch_size", str(batch_size),
        "--data.embedding_dtype", "float32",
        "--data.box_jitter", "5", "--trainer.max_epochs", str(epochs), "--output.dir", str(out),
        "--output.tensorboard", "false", "--output.csv", "false", "--output.progress_bar", "false",
        "--output.resume", "false"])
    L.seed_everything(0, workers=True, verbose=False)
    net = build_net(config, model)
    geometry = geometry_for("litemedsam")
    datamodule = build_datamodule(config, net, geometry, sources, out / "embeddings")
    module = SegmentationModule(net, SegmentationLoss(), config.optim, ("train_loss_epoch", "min"))
    trainer = build_trainer(config, out, has_val=False)
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    total = time.perf_counter() - start
    return {"precision": precision, "compile": compile, "embedding_backend": embedding_backend, "epoch_seconds": timer.seconds, "fit_seconds": total,
            "one_off_seconds": total - sum(timer.seconds), "load_after": os.getloadavg()}


@torch.inference_mode()
def float16_effect(model, sources: DataSources, embeddings_root: Path) -> dict:
    """Decoder logits/masks from the float32 cache vs the same values stored as float16."""
    [path] = list(embeddings_root.glob("*/embeddings.npy"))
    f32 = np.load(path, mmap_mode="r")
    f16_path = path.with_name("as_float16.npy")
    np.save(f16_path, np.asarray(f32).astype(np.float16))
    max_logit, flipped, pixels = 0.0, 0, 0
    for i in range(len(sources.train)):
        e32 = torch.from_numpy(np.array(f32[0, i]))[None]
        e16 = e32.half().float()
        box = torch.tensor([sources.train[i].box], dtype=torch.float32)
        l32, _ = model.decode(e32, boxes=box)
        l16, _ = model.decode(e16, boxes=box)
        max_logit = max(max_logit, float((l32 - l16).abs().max()))
        flipped += int(((l32 > 0) != (l16 > 0)).sum())
        pixels += l32.numel()
    n = f32.shape[1]
    return {"bytes_per_image_float32": path.stat().st_size / n, "bytes_per_image_float16": f16_path.stat().st_size / n,
            "max_abs_logit_difference": max_logit, "mask_pixels_flipped": flipped, "mask_pixels": pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="/work/runs/cache/kvasir-seg", help="preprocess cache (LiteMedSAM frame)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="32-true", help="Lightning precision of both arms (e.g. bf16-mixed)")
    parser.add_argument("--compile", action="store_true", help="trainer.compile in both arms")
    parser.add_argument("--embedding-backend", default="auto", help="data.embedding_backend of the cached arm")
    parser.add_argument("--reference", action="store_true",
                        help="also re-encode with the defaults (32-true, not compiled)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = PreprocessedCache(args.cache)
    cache.check_model("litemedsam")
    sources = DataSources(head(cache.subset("train"), args.samples))
    model = load_model("litemedsam", device="cpu", allow_download=False).model
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cached = run_epoch(model, sources, tmp / "cached", True, args.batch_size, args.epochs, args.precision,
                           args.compile, args.embedding_backend)
        encode = run_epoch(model, sources, tmp / "encode", False, args.batch_size, args.epochs, args.precision,
                           args.compile)
        reference = (run_epoch(model, sources, tmp / "reference", False, args.batch_size, 1)
                     if args.reference else None)
        f16 = float16_effect(model, sources, tmp / "cached" / "embeddings")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads",
        "samples": len(sources.train), "batch_size": args.batch_size, "epochs": args.epochs,
        "load_before": load_before, "cached": cached, "re_encode": encode,
        "speed_up_per_epoch": float(np.mean(encode["epoch_seconds"]) / np.mean(cached["epoch_seconds"])),
        # later epochs: the compilation (--compile) and warm-up are in the first
        "speed_up_last_epoch": encode["epoch_seconds"][-1] / cached["epoch_seconds"][-1],
        "float16": f16,
    }
    if reference is not None:
        result["reference_re_encode"] = reference
        result["speed_up_last_epoch_vs_reference"] = reference["epoch_seconds"][-1] / cached["epoch_seconds"][-1]
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
