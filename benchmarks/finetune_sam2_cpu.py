"""A short, real MedSAM2 fine-tuning run on the CPU: ACDC clips, the stand-in weights.

No real MedSAM2 weights can be downloaded here, so the run starts from the deterministic stand-in
weights of ../shared/docs/parity.md (saved as an official ``{"model": state_dict}`` file and
given as ``model.checkpoint``, the path a user's file takes). It goes through ``fit`` with
``configs/medsam2-3d.yaml`` (image encoder frozen, features cached per slice, clips of 8
slices, box on the first), then reports:

- the mean loss over a fixed set of training clips (no reversal, exact boxes, eval mode) before
  and after, and the loss per step (CSV log);
- seconds per optimiser step (median; forward over the clip, backward, AdamW), the feature
  cache's build time, and the process's peak resident memory;
- that the export loads strictly through ``load_model("medsam2", checkpoint=...)``.

    python benchmarks/finetune_sam2_cpu.py --cache runs/cache/acdc-mr-medsam2 [--steps 12]
        [--out runs/fit/medsam2-cpu] [--lr 1e-4] [--eval-clips 6] [--json out.json]

The cache is a ``medsamkit preprocess ... --model medsam2`` folder of ACDC
(../shared/data/volumes/acdc-mr, splits/acdc-mr.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _clip_loss(module, dataset, n: int) -> float:
    import torch

    items = [dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // n))][:n]
    module.net.eval()
    losses = []
    with torch.no_grad():
        for item in items:
            batch = {k: v[None] for k, v in item.items()}
            losses.append(module._clip_losses(batch)[0]["loss"].item())
    return float(sum(losses) / len(losses))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", default="runs/fit/medsam2-cpu")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-clips", type=int, default=6)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from medsamkit.data.cache import PreprocessedCache
    from medsamkit.models.checkpoint import save_checkpoint
    from medsamkit.models.loader import load_model
    from medsamkit.models.registry import get_spec
    from medsamkit.models.standin import standin_state_dict
    from medsamkit.training import fit as fit_mod
    from medsamkit.training.clips import ClipDataset, ClipSettings
    from medsamkit.training.config import load_config
    from medsamkit.training.sam2_module import Sam2Module

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    model = get_spec("medsam2").build()
    model.load_state_dict(standin_state_dict({k: v.shape for k, v in model.state_dict().items()}))
    standin = save_checkpoint(model, out / "MedSAM2_standin.pt")
    del model

    overrides = ["--data.cache", args.cache, "--model.checkpoint", str(standin), "--output.dir", str(out),
                 "--trainer.max_steps", str(args.steps), "--trainer.max_epochs", "1000",
                 "--trainer.log_every_n_steps", "1", "--optim.lr", str(args.lr), "--optim.warmup_steps", "0",
                 "--optim.scheduler", "none", "--data.val_split", "none", "--output.resume", "false",
                 "--output.tensorboard", "false", "--output.progress_bar", "false"]
    config = load_config([ROOT / "configs" / "medsam2-3d.yaml"], overrides)

    step_times: list[float] = []
    marks: dict[str, float] = {}
    module_ref: dict[str, object] = {}

    def on_start(self, batch, batch_idx):  # noqa: ANN001
        marks["t"] = time.perf_counter()

    def on_end(self, outputs, batch, batch_idx):  # noqa: ANN001
        step_times.append(time.perf_counter() - marks["t"])

    def on_fit_start(self):  # noqa: ANN001
        module_ref["m"] = self
        marks["fit_start"] = time.perf_counter()
        self.net.train()

    Sam2Module.on_train_batch_start = on_start
    Sam2Module.on_train_batch_end = on_end
    Sam2Module.on_fit_start = on_fit_start

    # the loss on fixed clips before training (same net, same cached features as the run)
    geometry = fit_mod.config_geometry(config)
    cache = PreprocessedCache(args.cache)
    train = cache.subset("train")
    t0 = time.perf_counter()
    result = fit_mod.fit(config)
    total = time.perf_counter() - t0
    module = module_ref["m"]
    cache_build_s = marks["fit_start"] - t0
    datamodule = module.trainer.datamodule
    eval_set = ClipDataset(train, geometry, ClipSettings(config.data.clip_length, "box"),
                           datamodule.train_set.cache, train=False)
    after = _clip_loss(module, eval_set, args.eval_clips)
    # the same clips through the stand-in weights (a fresh net from the checkpoint file)
    fresh = fit_mod.build_net(config)
    before = _clip_loss(fit_mod.build_module(config, fresh, ("val_dice", "max")), eval_set, args.eval_clips)

    rows = list(csv.DictReader(open(next((out / "csv").glob("version_*/metrics.csv")), encoding="utf-8")))
    per_step = [float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")]
    loaded = load_model("medsam2", result.export_path, device="cpu")  # strict load of the export
    report = {
        "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
                   f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}",
        "train_clips": len(train), "steps": len(step_times), "clip_length": config.data.clip_length,
        "seconds_per_step_median": statistics.median(step_times) if step_times else None,
        "seconds_per_step_min": min(step_times) if step_times else None,
        "feature_cache_and_setup_s": cache_build_s, "total_s": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "eval_loss_before": before, "eval_loss_after": after, "loss_per_step": per_step,
        "export": str(result.export_path), "export_loads_strictly": type(loaded.model).__name__,
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
