"""The CVPR 2025 interactive protocol on real MR volumes, through the public API.

For every case of ../shared/data/volumes/{acdc-mr, brats2015-mr, brats2021-mr} (channel 0 image,
MR intensity scheme volume-wide), every label present is one object of a 3D session
(``Session3D``, as ``medsamkit.Session`` makes it, with ``--overlap``):

- step 0: the label's box on the middle slice of its z extent, with the z range
  (:func:`medsamkit.evaluation.interactive.protocol_prompt`); all objects added together;
- steps 1-5: for every label, one click at the distance-transform maximum of the largest
  26-connected error component of the current label map (foreground if the truth has the label
  there, else background; :func:`~medsamkit.evaluation.interactive.next_click`); the clicks of a
  step are all computed from the same label map, then applied (``session.add_click``, timed one
  object at a time: the "seconds per click" are per object).

Recorded per case and label: DSC after every step, final NSD (2 mm, DeepMind surface definition,
spacing as stored: the ACDC files store none, so 2 voxels there), DSC AUC over the 5 click steps
(max 4), seconds per click. Variants (``--modes``): ``box`` (step 0 only), ``clicks`` (box +
clicks, no mask prompt), ``clicks+mask`` (SAM's loop: the previous logits as mask prompt),
``clicks+carry`` (propagated slices get their neighbour's new logits), ``clicks+mask+carry``.
Models: zero-shot LiteMedSAM and any ``--model NAME=CHECKPOINT_OR_REGISTRY_NAME``. ``--overlap``
(default ``last``, ``Session3D``'s and the CLI's) is the rule of every session's label map for a
voxel several objects claim (``medsamkit.choices.OVERLAP_RULES``); it matters on ACDC, where the
myocardium's box step claims the LV disc. The rule is recorded per model (``"models"``) and per
case entry in the JSON and printed in the tables; a file holding a model under another rule is
not resumed into (give the run another ``--out`` or model NAME). ``--grow PX`` sets the growth of
the boxes propagated from slice to slice (model-input pixels; default: the model's, 3, or 1 for
``litemedsam-clicks``: ``Predictor.grow_px``); the growth used is recorded and checked the same way.
``--keep-topology`` / ``--no-keep-topology`` set ``PropagationConfig.keep_topology`` (default: the
model's, on for ``litemedsam-clicks``: :mod:`medsamkit.inference.topology`); recorded and checked too.

Results go to a JSON file after each case; rerunning skips what is there (resume). Slice
embeddings are memoised per case across variants (the encoder is a pure function of the slice),
so only the first variant of a case pays for encoding in its step 0.

    python benchmarks/interactive.py [--out /work/runs/i13/interactive.json] [--datasets acdc-mr]
        [--cases patient008_frame01 ...] [--split-val splits/acdc-mr.json] [--modes box clicks ...]
        [--model zero-shot=litemedsam --model clicks=/path/model.pth] [--threads 2] [--embedding-cache DIR]
        [--overlap last|logit|smallest] [--grow PX] [--keep-topology | --no-keep-topology]
    python benchmarks/interactive.py --table [--out ...]     # markdown tables from the JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

VOLUMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes"
DATASETS = ("acdc-mr", "brats2015-mr", "brats2021-mr")
MODES = {
    "box": None,
    "clicks": {"mask_prompt": False, "carry_mask": False},
    "clicks+mask": {"mask_prompt": True, "carry_mask": False},
    "clicks+carry": {"mask_prompt": False, "carry_mask": True},
    "clicks+mask+carry": {"mask_prompt": True, "carry_mask": True},
    "clicks+reach1": {"click_reach": 1},
    "clicks+reach2": {"click_reach": 2},
    "clicks+local": {"local_clicks": True},
    "clicks+local+reach1": {"local_clicks": True, "click_reach": 1},
    "clicks+local+reach2": {"local_clicks": True, "click_reach": 2},
}
STEPS = 5
TOLERANCE_MM = 2.0


def encoder_digest(predictor) -> str:
    """SHA-1 of the image encoder's weights: models that share them share slice embeddings."""
    h = hashlib.sha1()
    for key, tensor in sorted(predictor.model.image_encoder.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(-1).numpy().tobytes())
    return h.hexdigest()[:16]


def memo_predictor(predictor, folder: Path | None = None):
    """The predictor with its encoder memoised on the slice's pixels: in memory (cleared per case)
    and, with ``folder``, on disk under the encoder's digest (a later run or another model with the
    same encoder, e.g. a decoder adapter, reads them back instead of encoding again)."""
    import torch

    cache: dict = {}
    embed = predictor.embed
    disk = folder / encoder_digest(predictor) if folder is not None else None

    def memo(image):
        key = (image.shape, hashlib.sha1(image.tobytes()).hexdigest())
        if key not in cache:
            path = disk / f"{key[1]}.pt" if disk is not None else None
            if path is not None and path.is_file():
                cache[key] = torch.load(path, map_location="cpu", weights_only=False)
            else:
                cache[key] = embed(image)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".part")
                    torch.save(cache[key], tmp)
                    os.replace(tmp, path)
        return cache[key]

    predictor.embed = memo
    return predictor, cache


def make_session(vol8: np.ndarray, predictor, config: dict | None, overlap: str, grow: int | None = None,
                 topology: bool | None = None):
    """The 3D session of one run: what ``medsamkit.Session(vol8, predictor, volume=True,
    modality="rgb", config=...)`` makes (uint8 volume as is, default propagation), with the
    benchmark's ``overlap`` rule, which ``medsamkit.Session`` does not take, ``grow`` and
    ``topology`` (``PropagationConfig.keep_topology``; None: the model's)."""
    from medsamkit.inference.propagate import PropagationConfig
    from medsamkit.inference.session import RefineConfig
    from medsamkit.inference.session3d import Session3D

    return Session3D(predictor, vol8, RefineConfig(**config) if config else RefineConfig(),
                     PropagationConfig(grow_px=grow, keep_topology=topology), overlap=overlap)


def _check_overlap(results: dict, model_name: str, overlap: str, grow: int | None = None,
                   topology: bool | None = None) -> None:
    """Refuse to resume a model's entries measured under another (or an unrecorded) rule or
    growth or topology rule (None: not checked)."""
    entries = [e for runs in results["runs"].get(model_name, {}).values() for e in runs.values()]
    for key, value in (("overlap", overlap), ("grow", grow), ("topology", topology)):
        if value is None:
            continue
        other = {e.get(key) for e in entries} - {value}
        if other:
            found = ", ".join(sorted(str(r) if r is not None else "not recorded" for r in other))
            raise SystemExit(f"{model_name}: the results file holds entries with {key} {found}, not {value}: "
                             f"use another --out or another --model NAME")


def run_case(session_factory, truth: np.ndarray, spacing, labels, mode: str) -> dict:
    from medsamkit.evaluation.interactive import dsc_auc, next_click, protocol_prompt
    from medsamkit.evaluation.metrics import dice, nsd

    session = session_factory(MODES[mode])
    prompts = [protocol_prompt(truth == lab, lab) for lab in labels]
    t = time.perf_counter()
    ids = session.add_objects(prompts)
    step0 = time.perf_counter() - t
    out = {"step0_seconds": step0, "labels": {}}
    seg = session.label_map()
    history = {lab: [dice(seg == lab, truth == lab)] for lab in labels}
    seconds = {lab: [] for lab in labels}
    clicks = {lab: [] for lab in labels}
    for _ in range(STEPS if MODES[mode] is not None else 0):
        step = []
        for lab, obj in zip(labels, ids):
            click = next_click(seg == lab, truth == lab)
            if click is not None:
                step.append((lab, obj, click))
        for lab, obj, click in step:
            x, y, z = click.xyz
            t = time.perf_counter()
            session.add_click(obj, (x, y, z, int(click.positive)))
            seconds[lab].append(time.perf_counter() - t)
            clicks[lab].append([x, y, z, int(click.positive)])
        seg = session.label_map()
        for lab in labels:
            history[lab].append(dice(seg == lab, truth == lab))
    for lab in labels:
        dscs = history[lab]
        out["labels"][str(lab)] = {
            "dsc": dscs, "final_dsc": dscs[-1], "nsd": nsd(seg == lab, truth == lab, TOLERANCE_MM, spacing),
            "auc": dsc_auc(dscs[1:]) if len(dscs) > 1 else None, "click_seconds": seconds[lab], "clicks": clicks[lab]}
    return out


def _save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1), encoding="utf-8")
    os.replace(tmp, out)


def slice_study_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the per-slice 2D studies that reuse these volumes (box_margin.py,
    click_response.py): cases, models, embedding cache, threads and ``--out``."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["acdc-mr"], choices=DATASETS)
    p.add_argument("--cases", nargs="+", help="only these case ids")
    p.add_argument("--split-val", help="a split file: only its 'val' cases (with --cases: both)")
    p.add_argument("--model", action="append", metavar="NAME=SOURCE",
                   help="a registry model name or a checkpoint file (repeatable; default zero-shot=litemedsam)")
    p.add_argument("--embedding-cache", type=Path, default=None, help="slice embeddings kept on disk here")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the per-slice results as JSON")
    return p


def study_models(args: argparse.Namespace):
    """(name, source, predictor, in-memory embedding cache) of each ``--model`` of a per-slice study."""
    import medsamkit

    models = dict(m.split("=", 1) for m in args.model) if args.model else {"zero-shot": "litemedsam"}
    for name, source in models.items():
        predictor = medsamkit.load(checkpoint=source) if Path(source).is_file() else medsamkit.load(source)
        yield (name, source, *memo_predictor(predictor, args.embedding_cache))


def slice_study_main(args: argparse.Namespace, run, print_table) -> int:
    """Run a per-slice study (``run(args) -> results``), save ``--out`` and print its table; skip
    cleanly without the shared data."""
    if not VOLUMES.is_dir():
        print(f"skipped: {VOLUMES} not found (the shared data is not on this machine)")
        return 0
    results = run(args)
    if args.out is not None:
        _save(results, args.out)
    print_table(results)
    return 0


def _cases(args):
    from medsamkit.data.layouts import read_dataset

    wanted = set(args.cases or [])
    if args.split_val:
        wanted |= set(json.loads(Path(args.split_val).read_text(encoding="utf-8"))["val"])
    for name in args.datasets:
        if not (VOLUMES / name).is_dir():
            print(f"{name}: not found under {VOLUMES}, skipped", flush=True)
            continue
        for case in read_dataset(VOLUMES / name).cases:
            if not wanted or case.case_id in wanted:
                yield name, case


def run(args: argparse.Namespace) -> None:
    import torch

    import medsamkit
    from medsamkit.inference.propagate import PropagationConfig, growth, topology_kept
    from medsamkit.io.volume import read_volume
    from medsamkit.preprocessing.intensity import PercentileClip

    if args.threads:
        torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.exists() else {"runs": {}}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "load_before": os.getloadavg()}
    models = dict(m.split("=", 1) for m in args.model) if args.model else {"zero-shot": "litemedsam"}
    for model_name in models:
        _check_overlap(results, model_name, args.overlap)
    for model_name, source in models.items():
        is_file = Path(source).is_file()
        predictor = medsamkit.load(checkpoint=source) if is_file else medsamkit.load(source)
        grow = growth(PropagationConfig(grow_px=args.grow), predictor)
        topology = topology_kept(PropagationConfig(keep_topology=args.keep_topology), predictor)
        _check_overlap(results, model_name, args.overlap, grow, topology)
        predictor, cache = memo_predictor(predictor, args.embedding_cache)
        results.setdefault("models", {})[model_name] = {"source": source, "overlap": args.overlap, "grow": grow,
                                                        "topology": topology}
        print(f"model {model_name}: {source}, overlap {args.overlap}, grow {grow} px, keep topology {topology}",
              flush=True)
        for dataset, case in _cases(args):
            key = f"{dataset}/{case.case_id}"
            cache.clear()
            image = truth = None
            for mode in args.modes:
                runs = results["runs"].setdefault(model_name, {}).setdefault(mode, {})
                if key in runs:
                    continue
                if image is None:
                    image, geometry = read_volume(case.images[0])
                    truth, _ = read_volume(case.label)
                    truth = np.rint(truth).astype(np.int16)
                    vol8 = PercentileClip()(image)
                    labels = [int(v) for v in np.unique(truth) if v != 0]

                def factory(config, vol8=vol8):
                    return make_session(vol8, predictor, config, args.overlap, grow, topology)

                entry = run_case(factory, truth, geometry.spacing, labels, mode)
                entry.update({"dataset": dataset, "case": case.case_id, "spacing": list(geometry.spacing),
                              "shape": list(truth.shape), "overlap": args.overlap, "grow": grow,
                              "topology": topology})
                runs[key] = entry
                _save(results, args.out)
                summary = " ".join(f"{lab}:{v['dsc'][0]:.3f}->{v['final_dsc']:.3f}" for lab, v in entry["labels"].items())
                print(f"{model_name} {mode} overlap {args.overlap} {key}: {summary} "
                      f"(step 0 {entry['step0_seconds']:.1f} s)", flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    _save(results, args.out)


# ------------------------------------------------------------------------------ tables
def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return statistics.fmean(values) if values else float("nan")


def _rule(entry: dict) -> str:
    """An entry's overlap rule (files written before ``--overlap`` did not record it)."""
    return entry.get("overlap") or "not recorded"


def table(args: argparse.Namespace) -> None:
    results = json.loads(args.out.read_text(encoding="utf-8"))
    print(f"machine: {results.get('machine')}\n")
    for model_name, modes in results["runs"].items():
        datasets = sorted({e["dataset"] for runs in modes.values() for e in runs.values()})
        for dataset in datasets:
            groups = {}  # (mode, overlap rule) -> entries
            for mode, runs in modes.items():
                for e in runs.values():
                    if e["dataset"] == dataset:
                        groups.setdefault((mode, _rule(e)), []).append(e)
            rules = sorted({rule for _, rule in groups})
            grows = sorted({str(e.get("grow", "not recorded")) for g in groups.values() for e in g})
            topologies = sorted({str(e.get("topology", "not recorded")) for g in groups.values() for e in g})
            print(f"### {model_name}, {dataset}, overlap {', '.join(rules)}, grow {', '.join(grows)}, "
                  f"keep topology {', '.join(topologies)}\n")
            print("| mode | overlap | label | n | DSC step 0 | 1 | 2 | 3 | 4 | 5 | final DSC | NSD 2 mm | DSC AUC "
                  "| s per click (median, max) |")
            print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
            for (mode, rule), entries in groups.items():
                labels = sorted({lab for e in entries for lab in e["labels"]}, key=int)
                for lab in labels + ["mean"]:
                    rows = [e["labels"][lab] for e in entries if lab in e["labels"]] if lab != "mean" else \
                        [v for e in entries for v in e["labels"].values()]
                    steps = max(len(r["dsc"]) for r in rows)
                    cols = [_mean([r["dsc"][k] for r in rows if len(r["dsc"]) > k]) for k in range(steps)]
                    cols += [float("nan")] * (STEPS + 1 - len(cols))
                    secs = [s for r in rows for s in r["click_seconds"]]
                    timing = f"{statistics.median(secs):.2f}, {max(secs):.2f}" if secs else "-"
                    auc = _mean([r["auc"] for r in rows])
                    print(f"| {mode} | {rule} | {lab} | {len(rows)} | "
                          + " | ".join(f"{c:.3f}" if not np.isnan(c) else "-" for c in cols)
                          + f" | {_mean([r['final_dsc'] for r in rows]):.3f} | {_mean([r['nsd'] for r in rows]):.3f}"
                          f" | {'-' if np.isnan(auc) else f'{auc:.3f}'} | {timing} |")
            print()


def figure(args: argparse.Namespace) -> None:
    """Panels of one case's label on its most-clicked slice: truth, box only, after the clicks."""
    import cv2

    import medsamkit
    from medsamkit.evaluation.interactive import next_click, protocol_prompt
    from medsamkit.evaluation.overlay import draw_overlay
    from medsamkit.io.volume import read_volume
    from medsamkit.preprocessing.intensity import PercentileClip, to_rgb_uint8

    dataset, case_id, label = args.figure[0], args.figure[1], int(args.figure[2])
    image, _ = read_volume(VOLUMES / dataset / "imagesTr" / f"{case_id}_0000.nii.gz")
    truth, _ = read_volume(VOLUMES / dataset / "labelsTr" / f"{case_id}.nii.gz")
    truth = np.rint(truth).astype(np.int16)
    vol8 = PercentileClip()(image)
    panels = []
    for title, (model_name, source) in zip(("zero-shot", "click-trained"), [m.split("=", 1) for m in args.model]):
        predictor = medsamkit.load(checkpoint=source) if Path(source).is_file() else medsamkit.load(source)
        predictor, _ = memo_predictor(predictor, args.embedding_cache)
        session = make_session(vol8, predictor, MODES[args.modes[0]], args.overlap, args.grow, args.keep_topology)
        labels = [int(v) for v in np.unique(truth) if v != 0]
        ids = dict(zip(labels, session.add_objects([protocol_prompt(truth == lab, lab) for lab in labels])))
        before = session.label_map() == label
        clicks = []
        for _ in range(STEPS):
            seg = session.label_map()
            step = [(lab, next_click(seg == lab, truth == lab)) for lab in labels]
            for lab, click in step:
                if click is not None:
                    x, y, z = click.xyz
                    session.add_click(ids[lab], (x, y, z, int(click.positive)))
                    if lab == label:
                        clicks.append((x, y, z, int(click.positive)))
        after = session.label_map() == label
        z = session.object(ids[label]).key_slice
        rgb = to_rgb_uint8(vol8[z])
        scale = 3
        big = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)

        def panel(mask, marks=()):
            m = cv2.resize(mask[z].astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            return draw_overlay(big, m * label, clicks=[(x * scale + 1, y * scale + 1, c) for x, y, zz, c in marks
                                                         if zz == z])

        if not panels:
            panels.append(("truth", panel(truth == label)))
        panels += [(f"{title}: box", panel(before)), (f"{title}: +5 clicks", panel(after, clicks))]
    h = max(p.shape[0] for _, p in panels)
    row = np.concatenate([np.pad(p, ((0, h - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for _, p in panels], 1)
    out = Path(args.figure[3])
    cv2.imwrite(str(out), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    print(f"wrote {out}: " + " | ".join(t for t, _ in panels))


def parser() -> argparse.ArgumentParser:
    from medsamkit.choices import DEFAULT_OVERLAP, OVERLAP_RULES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/work/runs/i13/interactive.json"))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--cases", nargs="+", help="only these case ids")
    p.add_argument("--split-val", help="a split file: only its 'val' cases (with --cases: both)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--model", action="append", metavar="NAME=SOURCE",
                   help="a registry model name or a checkpoint file (repeatable; default zero-shot=litemedsam)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--embedding-cache", type=Path, default=None,
                   help="keep slice embeddings on disk here (shared by models with the same encoder; "
                        "timings of step 0 then exclude encoding)")
    p.add_argument("--overlap", choices=OVERLAP_RULES, default=DEFAULT_OVERLAP,
                   help="who gets a voxel several objects claim in every session's label map "
                        f"(default {DEFAULT_OVERLAP}, the library's and the CLI's)")
    p.add_argument("--grow", type=int, default=None, metavar="PX",
                   help="growth of the boxes propagated from slice to slice, model-input pixels "
                        "(default: the model's: 3, litemedsam-clicks 1)")
    p.add_argument("--keep-topology", action=argparse.BooleanOptionalAction, default=None,
                   help="decode a propagated slice again when an object turns from solid into a ring or back "
                        "(default: the model's: on for litemedsam-clicks)")
    p.add_argument("--table", action="store_true", help="print the markdown tables of --out and exit")
    p.add_argument("--figure", nargs=4, metavar=("DATASET", "CASE", "LABEL", "PNG"),
                   help="draw one label's key slice: truth, then each --model's box-only and 5-click masks "
                        "(the first --modes variant)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.table:
        table(args)
        return 0
    if args.figure:
        figure(args)
        return 0
    if not VOLUMES.is_dir():
        print(f"skipped: {VOLUMES} not found (the shared data is not on this machine)")
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
