"""Decoder-only fine-tuning speed: cached image embeddings vs re-encoding every step.

Same model (LiteMedSAM, real weights), same Kvasir-SEG training samples (the first N of the
preprocess cache's train split), same loss/optimiser/batch size, one Lightning epoch each:

  - cached:    the embeddings computed once (timed separately: the one-off cost) and read from
               the memory-mapped cache each step; an epoch runs only the mask decoder.
  - re-encode: the frozen image encoder runs on every image of every step (no_grad), then the
               decoder.

The cached run stores float32; the float16 storage (the default) is then measured from the same
values: bytes per image, and how much the decoder's logits and masks change.

    python benchmarks/bench_train.py --cache /work/runs/cache/kvasir-seg --samples 64 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
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


def run_epoch(model, sources: DataSources, out: Path, cached: bool, batch_size: int, epochs: int) -> dict:
    config = load_config([], [
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
    return {"epoch_seconds": timer.seconds, "fit_seconds": total,
            "one_off_seconds": total - sum(timer.seconds)}


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
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = PreprocessedCache(args.cache)
    cache.check_model("litemedsam")
    sources = DataSources(head(cache.subset("train"), args.samples))
    model = load_model("litemedsam", device="cpu", allow_download=False).model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cached = run_epoch(model, sources, tmp / "cached", True, args.batch_size, args.epochs)
        encode = run_epoch(model, sources, tmp / "encode", False, args.batch_size, args.epochs)
        f16 = float16_effect(model, sources, tmp / "cached" / "embeddings")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads",
        "samples": len(sources.train), "batch_size": args.batch_size, "epochs": args.epochs,
        "cached": cached, "re_encode": encode,
        "speed_up_per_epoch": float(np.mean(encode["epoch_seconds"]) / np.mean(cached["epoch_seconds"])),
        "float16": f16,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
