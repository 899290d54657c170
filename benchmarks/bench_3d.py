"""3D slice propagation on real MR volumes: our strategy against the reference strategy.

For every case of ../shared/data/volumes/{acdc-mr, brats2015-mr, brats2021-mr} (nnU-Net layout;
channel 0 image ``_0000``), one box per label is derived from the label volume (key slice = the
slice with the label's largest area, 2D box from that slice, z range = the label's extent), the
MR intensity scheme (0.5-99.5 percentiles of voxels > 0, volume-wide) is applied once, and:

- **ours**: :func:`medsamkit.inference.volume3d.segment_volume` -- each slice encoded once, all
  objects of a slice decoded in one batched call, overlaps to the highest logit;
- **reference**: the LiteMedSAM script's strategy -- one object at a time, every slice encoded
  again for every object, later objects overwriting earlier ones -- with the same boxes, the same
  propagation rule and the same model (it is :func:`segment_volume` run once per object);
Each object's own masks (before overlaps between objects are resolved) are kept from both runs:
they should be the same (the optimisation changes nothing but the cost), and the voxels that
differ are counted. From our masks the label map is also built with the other overlap rules
(``smallest``; ``last`` = the reference's rule), so the effect of the rule is seen apart from the
strategy. (Keeping the masks costs both runs ``objects x volume`` bytes of memory.)

Recorded per case: Dice per label (evaluation.metrics.dice) for both, the Dice between the two
strategies' masks, wall time of the propagation (the intensity scheme, computed once, excluded
from both; also the process's CPU time, less sensitive to other jobs on a shared machine), encoder
calls, and the peak resident memory during each run (RSS sampled every 10 ms
in a thread; also the increase over the RSS at the run's start). Results go to a JSON file after
each case; rerunning skips the cases already there (resume).

    python benchmarks/bench_3d.py [--out /work/runs/bench3d.json] [--reference-limit brats2015-mr=3] [--threads 2]
    python benchmarks/bench_3d.py --table        # markdown tables from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import torch

from medsamkit.data.layouts import read_dataset
from medsamkit.evaluation.metrics import dice
from medsamkit.inference.predictor import Predictor
from medsamkit.inference.prompts3d import prompts_from_labels
from medsamkit.inference.propagate import BoxPropagator, SliceResult
from medsamkit.inference.volume3d import LabelAssembler, VolumeOptions, segment_volume
from medsamkit.io.volume import read_volume
from medsamkit.models.loader import load_model
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.preprocessing.intensity import Identity, PercentileClip

VOLUMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes"
DATASETS = ("acdc-mr", "brats2015-mr", "brats2021-mr")


class PeakRSS:
    """Samples the process's resident memory in a thread while the ``with`` block runs."""

    def __init__(self, every: float = 0.01) -> None:
        self.every, self.process = every, psutil.Process()
        self.start = self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


class Recording:
    """Wraps a propagator and keeps each object's own masks (before overlaps are resolved)."""

    def __init__(self, inner: BoxPropagator) -> None:
        self.inner, self.masks = inner, None

    def init_state(self, slices, prompts):
        self.masks = np.zeros((len(prompts), *slices.shape), bool)
        return self.inner.init_state(slices, prompts)

    def propagate(self, state):
        for result in self.inner.propagate(state):
            for obj, mask in zip(result.obj_ids, result.masks):
                self.masks[obj, result.z] = mask
            yield result


def relabel(masks: np.ndarray, label_ids, rule: str) -> np.ndarray:
    """Label map from per-object masks with a mask-only overlap rule ("smallest" or "last")."""
    assembler = LabelAssembler(masks.shape[1:], label_ids, rule)
    ids = tuple(range(len(masks)))
    for z in range(masks.shape[1]):
        assembler.add(SliceResult(z, ids, masks[:, z], masks[:, z].astype(np.float32), final=True))
    return assembler.volume


def _run_ours(vol8, geometry, prompts, predictor) -> tuple[np.ndarray, np.ndarray, dict]:
    recording = Recording(BoxPropagator(predictor))
    with PeakRSS() as mem:
        t, cpu = time.perf_counter(), time.process_time()
        result = segment_volume(vol8, geometry, prompts, predictor, VolumeOptions(), scheme=Identity(),
                                propagator=recording)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    return result.labels, recording.masks, {
        "seconds": seconds, "cpu_seconds": cpu, "encoder_calls": result.encoder_calls,
        "decoder_calls": result.decoder_calls, "spilled": result.spilled,
        "peak_rss_mb": mem.peak / 2**20, "rss_increase_mb": (mem.peak - mem.start) / 2**20}


def _run_reference(vol8, geometry, prompts, predictor) -> tuple[np.ndarray, np.ndarray, dict]:
    masks = np.zeros((len(prompts), *vol8.shape), bool)
    encoder = decoder = 0
    with PeakRSS() as mem:
        t, cpu = time.perf_counter(), time.process_time()
        for i, prompt in enumerate(prompts):  # one object at a time, its slices encoded again
            result = segment_volume(vol8, geometry, [prompt], predictor, VolumeOptions(), scheme=Identity())
            masks[i] = result.labels > 0
            encoder += result.encoder_calls
            decoder += result.decoder_calls
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    labels = relabel(masks, [p.label for p in prompts], "last")  # later objects overwrite, as the script
    return labels, masks, {"seconds": seconds, "cpu_seconds": cpu, "encoder_calls": encoder, "decoder_calls": decoder,
                           "peak_rss_mb": mem.peak / 2**20, "rss_increase_mb": (mem.peak - mem.start) / 2**20}


def _dice_per_label(pred: np.ndarray, ref: np.ndarray, labels) -> dict[str, float]:
    return {str(lab): dice(pred == lab, ref == lab) for lab in labels}


def _save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, allow_nan=True), encoding="utf-8")
    os.replace(tmp, out)


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {"cases": {}}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()}
    loaded = load_model(args.model, device="cpu", allow_download=False)
    predictor = Predictor(loaded.model, geometry_for(loaded.spec.preprocessing))
    predictor.embed(np.zeros((256, 256, 3), np.uint8))  # warm-up: the first encoder call is slower
    print(f"model {loaded.spec.name} ({loaded.weights_path}) on cpu, {torch.get_num_threads()} threads", flush=True)
    for name in args.datasets:
        dataset = read_dataset(VOLUMES / name)
        for index, case in enumerate(dataset.cases):
            key = f"{name}/{case.case_id}"
            limit = args.reference_limit.get(name)
            want_ref = limit is None or index < limit
            done = results["cases"].get(key, {})
            if "ours" in done and ("reference" in done or not want_ref):
                print(f"{key}: done, skipped", flush=True)
                continue
            image, geometry = read_volume(case.images[0])
            truth, _ = read_volume(case.label)
            prompts = prompts_from_labels(truth, source=case.label)
            ids = [p.label for p in prompts]
            t = time.perf_counter()
            vol8 = PercentileClip()(image)  # the MR scheme, volume-wide, once for both strategies
            entry = {"dataset": name, "case": case.case_id, "image": str(case.images[0]), "shape": list(image.shape),
                     "spacing": list(geometry.spacing), "labels": ids, "scheme_seconds": time.perf_counter() - t,
                     "prompts": [{"label": p.label, "box": list(p.box), "key_slice": p.key_slice,
                                  "z_range": list(p.z_range)} for p in prompts]}
            ours, ours_masks, stats = _run_ours(vol8, geometry, prompts, predictor)
            entry["ours"] = {**stats, "dice": _dice_per_label(ours, truth, ids)}
            for rule in ("smallest", "last"):  # the other overlap rules on the same masks
                entry[f"ours_{rule}"] = {"dice": _dice_per_label(relabel(ours_masks, ids, rule), truth, ids)}
            print(f"{key}: ours {stats['seconds']:.1f} s, {stats['encoder_calls']} encoder calls, "
                  f"dice {entry['ours']['dice']}", flush=True)
            if want_ref:
                ref, ref_masks, stats = _run_reference(vol8, geometry, prompts, predictor)
                entry["reference"] = {
                    **stats, "dice": _dice_per_label(ref, truth, ids),
                    # each object's own masks, ours (shared embeddings, batched decoding) vs the reference's
                    "object_mask_dice": {str(lab): dice(a, b) for lab, a, b in zip(ids, ours_masks, ref_masks)},
                    "object_voxels_differing": int((ours_masks != ref_masks).sum())}
                entry["time_ratio"] = stats["seconds"] / entry["ours"]["seconds"]
                entry["cpu_time_ratio"] = stats["cpu_seconds"] / entry["ours"]["cpu_seconds"]
                print(f"{key}: reference {stats['seconds']:.1f} s, {stats['encoder_calls']} encoder calls, "
                      f"ratio {entry['time_ratio']:.2f}, object masks differ in "
                      f"{entry['reference']['object_voxels_differing']} voxels", flush=True)
            results["cases"][key] = entry
            _save(results, args.out)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else float("nan")


def table(out: Path) -> str:
    cases = json.loads(out.read_text(encoding="utf-8"))["cases"].values()
    by_label: dict[tuple[str, str], list[dict]] = defaultdict(list)
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        by_dataset[c["dataset"]].append(c)
        for lab in c["ours"]["dice"]:
            by_label[(c["dataset"], lab)].append(c)
    lines = ["| dataset | label | cases | Dice ours: highest logit (default) | smallest wins | last wins | "
             "cases with reference | Dice reference (last wins) | object masks ours vs reference (Dice) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (ds, lab), cs in sorted(by_label.items()):
        refs = [c for c in cs if "reference" in c]
        lines.append(f"| {ds} | {lab} | {len(cs)} | {_mean(c['ours']['dice'][lab] for c in cs):.3f} | "
                     f"{_mean(c['ours_smallest']['dice'][lab] for c in cs):.3f} | "
                     f"{_mean(c['ours_last']['dice'][lab] for c in cs):.3f} | {len(refs)} | "
                     f"{_mean(c['reference']['dice'][lab] for c in refs):.3f} | "
                     f"{_mean(c['reference']['object_mask_dice'][lab] for c in refs):.4f} |")
    lines += ["", "| dataset | cases (with reference) | s/volume ours (CPU s) | s/volume reference (CPU s) | "
              "time ratio ref/ours, wall (CPU) | encoder calls ours / reference | peak RSS ours / reference (MB) | "
              "RSS increase ours / reference (MB) |",
              "|---|---|---|---|---|---|---|---|"]
    for ds, cs in sorted(by_dataset.items()):
        refs = [c for c in cs if "reference" in c]
        lines.append(
            f"| {ds} | {len(cs)} ({len(refs)}) | {_mean(c['ours']['seconds'] for c in cs):.1f} "
            f"({_mean(c['ours']['cpu_seconds'] for c in cs):.1f}) | {_mean(c['reference']['seconds'] for c in refs):.1f} "
            f"({_mean(c['reference']['cpu_seconds'] for c in refs):.1f}) | {_mean(c['time_ratio'] for c in refs):.2f} "
            f"({_mean(c['cpu_time_ratio'] for c in refs):.2f}) | "
            f"{_mean(c['ours']['encoder_calls'] for c in refs):.0f} / {_mean(c['reference']['encoder_calls'] for c in refs):.0f} | "
            f"{max(c['ours']['peak_rss_mb'] for c in cs):.0f} / {max((c['reference']['peak_rss_mb'] for c in refs), default=float('nan')):.0f} | "
            f"{max(c['ours']['rss_increase_mb'] for c in cs):.0f} / {max((c['reference']['rss_increase_mb'] for c in refs), default=float('nan')):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/runs/bench3d.json"))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--reference-limit", action="append", default=[], metavar="DATASET=N",
                    help="run the reference strategy on the first N cases of DATASET only (default: every case)")
    ap.add_argument("--model", default="litemedsam")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    args = ap.parse_args(argv)
    args.reference_limit = {k: int(v) for k, v in (item.split("=") for item in args.reference_limit)}
    if args.table:
        print(table(args.out))
        return 0
    if not VOLUMES.is_dir():
        ap.exit(1, f"no data: {VOLUMES} is missing\n")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
