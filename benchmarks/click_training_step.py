"""Seconds per click-training step: SAM's interactive loop (box + 5 protocol clicks) on the real
LiteMedSAM decoder with its LoRA adapters (``decoder-lora``), one optimiser step at a time, with
``model.clicks.backprop`` ``all`` (every step back-propagated) or ``sampled`` (the box step and one
random click step; :mod:`medsamkit.training.interactive`).

The batch is synthetic, so the timing needs no data set: random embeddings and a ring target (the
myocardium's shape) in a 256 px frame; the mask prompt in half the batches (the probability the
first click config used). The loss is plain BCE (the step's cost is the decoder's).

    python benchmarks/click_training_step.py --backprop all sampled [--batch 8] [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backprop", nargs="+", default=["all", "sampled"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import medsamkit.training.interactive as interactive
    from medsamkit.models.loader import load_model
    from medsamkit.training.config import LoraConfig
    from medsamkit.training.nets import SamNet

    torch.set_num_threads(args.threads)
    yy, xx = np.mgrid[:256, :256]
    r = np.hypot(yy - 128, xx - 128)
    ring = torch.from_numpy(((r > 30) & (r < 45)).astype(np.float32))
    b = args.batch
    simulate = interactive.simulate_clicks
    for backprop in args.backprop:
        torch.manual_seed(0)
        net = SamNet(load_model("litemedsam", device="cpu").model, "decoder-lora", lora=LoraConfig(rank=16, alpha=32.0),
                     clicks=interactive.ClickTraining(steps=5, mask_prompt=0.5, backprop=backprop)).train()
        batch = {"embedding": torch.randn(b, 256, 64, 64) * 0.3,
                 "box": torch.tensor([[80.0, 80.0, 176.0, 176.0]]).repeat(b, 1),
                 "mask": ring[None, None].repeat(b, 1, 1, 1),
                 "valid": torch.tensor([[256, 256]]).repeat(b, 1), "index": torch.arange(b)}
        opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], 1e-3)
        sim = [0.0]

        def timed(*a, **k):
            t = time.perf_counter()
            out = simulate(*a, **k)
            sim[0] += time.perf_counter() - t
            return out

        interactive.simulate_clicks = timed
        for step in range(args.steps):
            sim[0] = 0.0
            t0 = time.perf_counter()
            logits, _ = net(batch)
            target = batch["mask"].repeat(logits.shape[0] // b, 1, 1, 1)
            F.binary_cross_entropy_with_logits(logits, target).backward()
            opt.step()
            opt.zero_grad()
            print(f"backprop {backprop}: step {step} {time.perf_counter() - t0:.2f} s (click simulation "
                  f"{sim[0]:.2f} s), {logits.shape[0] // b} steps with gradient, batch {b}, "
                  f"{torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f}", flush=True)
        interactive.simulate_clicks = simulate
    return 0


if __name__ == "__main__":
    sys.exit(main())
