"""Does a model answer clicks? Every labelled slice of the ACDC volumes in 2D: one box per label (its
truth's bounding box on that slice), then 5 protocol clicks, each at the distance-transform maximum
of the largest error region of that slice's current mask (foreground where the truth has the label),
decoded with the box and all the clicks so far (no mask prompt), each label alone. Reports the Dice
after each step and the share of clicks whose pixel holds the clicked label after its step.

The 3D protocol (benchmarks/interactive.py) mixes this with propagation; this isolates the decoder's
answer to a click (docs/refinement.md, "Does the decoder answer a click?"). With --local-clicks each
click's decode is kept near the click only and the click holds (RefineConfig.local_clicks).

    python benchmarks/click_response.py --split-val splits/acdc-mr.json --model litemedsam-clicks=litemedsam-clicks \
        [--model zero-shot=litemedsam] [--cases patient007_frame01 ...] [--embedding-cache DIR] [--threads 2] \
        [--local-clicks]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interactive as bench  # noqa: E402  (the same volumes, embedding cache and model loading)


def click_response(predictor, vol8: np.ndarray, truth: np.ndarray, steps: int = 5, min_pixels: int = 20,
                   seed: int = 0, local_clicks: bool = False) -> dict:
    """{label: {"dice": [[Dice per slice] per step 0..steps], "satisfied": [bool per click]}}.

    A slice whose mask is already exact gets no more clicks; its Dice is carried to the later steps.
    """
    from medsamkit.evaluation.interactive import next_click
    from medsamkit.evaluation.metrics import dice
    from medsamkit.inference.clicks import Click
    from medsamkit.inference.local_clicks import local_click_update, smoothed_grey
    from medsamkit.inference.refine import DecodeRequest, decode_requests
    from medsamkit.preprocessing.labels import box_from_mask

    rng = np.random.RandomState(seed)
    out: dict = {}
    for z in range(truth.shape[0]):
        labels = [int(v) for v in np.unique(truth[z]) if v and (truth[z] == v).sum() >= min_pixels]
        if not labels:
            continue
        embedding = predictor.embed(np.repeat(vol8[z][..., None], 3, axis=-1))
        grey = smoothed_grey(vol8[z]) if local_clicks else None
        for lab in labels:
            target = truth[z] == lab
            entry = out.setdefault(lab, {"dice": [[] for _ in range(steps + 1)], "satisfied": []})
            box = tuple(float(v) for v in box_from_mask(target, min_component=0))
            clicks: tuple[Click, ...] = ()
            result = decode_requests(predictor, embedding, [DecodeRequest(box, clicks)])[0]
            mask = result.mask
            entry["dice"][0].append(float(dice(mask, target)))
            for step in range(1, steps + 1):
                click = next_click(mask, target, rng)
                if click is not None:
                    y, x = click.index
                    clicks = clicks + (Click(float(x), float(y), int(click.positive)),)
                    decoded = decode_requests(predictor, embedding, [DecodeRequest(box, clicks)])[0]
                    result = local_click_update(result, decoded, clicks[-1], grey) if local_clicks else decoded
                    mask = result.mask
                    entry["satisfied"].append(bool(mask[y, x]) == bool(click.positive))
                entry["dice"][step].append(float(dice(mask, target)))
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    from medsamkit.io.volume import read_volume
    from medsamkit.preprocessing.intensity import PercentileClip

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"steps": args.steps, "local_clicks": args.local_clicks, "models": {}}
    for name, source, predictor, cache in bench.study_models(args):
        per_label: dict = {}
        cases = []
        for _, case in bench._cases(args):
            cache.clear()
            cases.append(case.case_id)
            image, _ = read_volume(case.images[0])
            truth = np.rint(read_volume(case.label)[0]).astype(np.int16)
            found = click_response(predictor, PercentileClip()(image), truth, args.steps, local_clicks=args.local_clicks)
            for lab, entry in found.items():
                into = per_label.setdefault(str(lab), {"dice": [[] for _ in range(args.steps + 1)], "satisfied": []})
                for k, values in enumerate(entry["dice"]):
                    into["dice"][k].extend(values)
                into["satisfied"].extend(entry["satisfied"])
        results["models"][name] = {"source": source, "cases": cases, "labels": per_label}
    return results


def print_table(results: dict) -> None:
    steps = results["steps"]
    print("| model | label | slices | " + " | ".join(["box"] + [f"click {k}" for k in range(1, steps + 1)])
          + " | clicks satisfied |")
    print("|---|---|---|" + "---|" * (steps + 2))
    for name, entry in results["models"].items():
        for lab, values in sorted(entry["labels"].items(), key=lambda kv: int(kv[0])):
            cells = " | ".join(f"{statistics.fmean(d):.3f}" for d in values["dice"])
            sat = values["satisfied"]
            share = f"{statistics.fmean(sat):.2f} of {len(sat)}" if sat else "no clicks"
            print(f"| {name} | {lab} | {len(values['dice'][0])} | {cells} | {share} |")


def parser() -> argparse.ArgumentParser:
    p = bench.slice_study_parser(__doc__)
    p.add_argument("--steps", type=int, default=5, help="clicks after the box")
    p.add_argument("--local-clicks", action="store_true",
                   help="keep each click's decode near the click and make the click hold (RefineConfig.local_clicks)")
    return p


def main(argv=None) -> int:
    return bench.slice_study_main(parser().parse_args(argv), run, print_table)


if __name__ == "__main__":
    sys.exit(main())
