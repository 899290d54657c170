"""3D slice propagation with the fast image encoder (``--backend auto``) against the torch path.

For each case (default: the first ACDC case and the BraTS 2021 case), one box per label from the
label volume (as ``bench_3d.py`` derives them), the MR intensity scheme once, then
:func:`medsamkit.inference.volume3d.segment_volume` with a torch fp32 predictor and with a predictor
on each ``--backends`` engine, alternately. Reported per case: propagation seconds of each, the
ratio, and each object's own masks (before overlaps are resolved) compared with the torch path's:
Dice per object.

    python benchmarks/bench_engines_3d.py [--cases acdc-mr:0 brats2021-mr:0] [--backends auto] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_3d import VOLUMES, Recording  # noqa: E402

from medsamkit.data.layouts import read_dataset  # noqa: E402
from medsamkit.evaluation.metrics import dice  # noqa: E402
from medsamkit.inference.factory import make_predictor  # noqa: E402
from medsamkit.inference.prompts3d import prompts_from_labels  # noqa: E402
from medsamkit.inference.propagate import BoxPropagator  # noqa: E402
from medsamkit.inference.volume3d import VolumeOptions, segment_volume  # noqa: E402
from medsamkit.io.volume import read_volume  # noqa: E402
from medsamkit.models.loader import load_model  # noqa: E402
from medsamkit.preprocessing.intensity import Identity, PercentileClip  # noqa: E402


def _propagate(vol8, geometry, prompts, predictor) -> tuple[float, np.ndarray]:
    recording = Recording(BoxPropagator(predictor))
    t = time.perf_counter()
    segment_volume(vol8, geometry, prompts, predictor, VolumeOptions(), scheme=Identity(), propagator=recording)
    return time.perf_counter() - t, recording.masks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["acdc-mr:0", "brats2021-mr:0"], metavar="DATASET:INDEX")
    ap.add_argument("--backends", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model("litemedsam", device="cpu")
    predictors = {"torch": make_predictor(loaded, backend="torch")}
    for b in args.backends.split(","):
        predictors[b] = make_predictor(loaded, backend=b, threads=args.threads)
    for p in predictors.values():
        p.embed(np.zeros((256, 256, 3), np.uint8))  # warm-up
    out: dict = {"load_before": os.getloadavg(), "engines": {k: str(p.engine) for k, p in predictors.items()},
                 "cases": {}}
    for item in args.cases:
        name, index = item.split(":")
        case = read_dataset(VOLUMES / name).cases[int(index)]
        image, geometry = read_volume(case.images[0])
        truth, _ = read_volume(case.label)
        prompts = prompts_from_labels(truth, source=case.label)
        vol8 = PercentileClip()(image)
        entry: dict = {"shape": list(image.shape), "objects": len(prompts)}
        masks = {}
        for key, predictor in predictors.items():
            entry[f"{key}_seconds"], masks[key] = _propagate(vol8, geometry, prompts, predictor)
        for key in predictors:
            if key != "torch":
                entry[f"{key}_speedup_vs_torch"] = entry["torch_seconds"] / entry[f"{key}_seconds"]
                entry[f"{key}_object_dice_vs_torch"] = [dice(a, b) for a, b in zip(masks[key], masks["torch"])]
        out["cases"][f"{name}/{case.case_id}"] = entry
        print(item, json.dumps(entry), flush=True)
    out["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
