"""Distributed data parallel through Lightning: strategy "ddp" with 2 CPU processes (gloo).

The run is a subprocess (Lightning's DDP launcher re-executes the script for rank 1): each
process trains on half of the samples, only rank 0 computes the cached embeddings and exports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from medsamkit.models.checkpoint import read_checkpoint

SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import torch
    from training_fixtures import TinyGeometry, make_samples, quick_config, tiny_sam
    from medsamkit.training.datamodule import DataSources
    from medsamkit.training.fit import fit

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = tiny_sam()
    encoded = []
    model.image_encoder.register_forward_hook(lambda m, a, o: encoded.append(a[0].shape[0]))
    config = quick_config({out!r}, "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
                          "--trainer.devices", "2", "--trainer.max_epochs", "2", "--output.csv", "false")
    result = fit(config, DataSources(make_samples(8), make_samples(4, seed=1)), model=model, geometry=TinyGeometry())
    print("RESULT " + json.dumps({{"rank": int(os.environ.get("LOCAL_RANK", 0)), "processes": result.processes,
                                   "encoded": sum(encoded), "export": str(result.export_path),
                                   "dice": result.best_val_dice}}), flush=True)
""")


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "run_ddp.py"
    out = tmp_path / "run"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)), encoding="utf-8")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8", timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")),
                     key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1] and all(r["processes"] == 2 for r in results)
    assert results[0]["encoded"] == 12 and results[1]["encoded"] == 0  # embeddings computed once, by rank 0
    assert results[0]["export"] == str(out / "model.pth") and results[1]["export"] == "None"
    assert results[0]["dice"] == results[1]["dice"]  # the validation Dice is reduced over both processes
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # 8 samples, 4 per process, batch 4: one step per epoch
    assert read_checkpoint(out / "model.pth")
