"""How a model's 2D mask depends on the margin of its box: every labelled slice of the ACDC volumes,
one box per label (its truth's bounding box on that slice, grown by K pixels on every side, clipped
to the slice), decoded alone; Dice against the truth per label and K.

On ACDC the myocardium (a ring) encloses the LV cavity, so the two boxes differ only by the
wall's thickness: a box-prompted decoder must tell ring from cavity by the box's margin. This
measures where each model puts that boundary (docs/refinement.md, "The box margin decides ring or
cavity").

    python benchmarks/box_margin.py --split-val splits/acdc-mr.json --model litemedsam-clicks=litemedsam-clicks \
        [--model zero-shot=litemedsam] [--grows -4 -2 0 2 4 6 8 12] [--embedding-cache DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interactive as bench  # noqa: E402  (the same volumes, embedding cache and model loading)


def margin_dice(predictor, vol8: np.ndarray, truth: np.ndarray, grows, min_pixels: int = 20) -> dict:
    """{label: {grow: [Dice per slice]}} for one volume (``vol8`` uint8, ``truth`` labels)."""
    from medsamkit.evaluation.metrics import dice
    from medsamkit.preprocessing.labels import box_from_mask

    out: dict = {}
    h, w = truth.shape[1:]
    for z in range(truth.shape[0]):
        labels = [int(v) for v in np.unique(truth[z]) if v and (truth[z] == v).sum() >= min_pixels]
        if not labels:
            continue
        predictor.set_image(np.repeat(vol8[z][..., None], 3, axis=-1))
        for lab in labels:
            x0, y0, x1, y1 = box_from_mask(truth[z] == lab, min_component=0)
            boxes = [[max(x0 - k, 0), max(y0 - k, 0), min(x1 + k, w - 1), min(y1 + k, h - 1)] for k in grows]
            masks = predictor.predict(boxes=np.asarray(boxes, np.float64)).masks[:, 0]
            for k, mask in zip(grows, masks):
                out.setdefault(lab, {}).setdefault(k, []).append(float(dice(mask, truth[z] == lab)))
    return out


def run(args: argparse.Namespace) -> dict:
    import torch

    from medsamkit.io.volume import read_volume
    from medsamkit.preprocessing.intensity import PercentileClip

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"grows": args.grows, "models": {}}
    for name, source, predictor, cache in bench.study_models(args):
        per_label: dict = {}
        for _, case in bench._cases(args):
            cache.clear()
            image, _ = read_volume(case.images[0])
            truth = np.rint(read_volume(case.label)[0]).astype(np.int16)
            for lab, by_grow in margin_dice(predictor, PercentileClip()(image), truth, args.grows).items():
                for k, values in by_grow.items():
                    per_label.setdefault(str(lab), {}).setdefault(str(k), []).extend(values)
        results["models"][name] = {"source": source, "dice": per_label}
    return results


def print_table(results: dict) -> None:
    grows = results["grows"]
    print("| model | label | slices | " + " | ".join(f"{k:+d} px" for k in grows) + " |")
    print("|---|---|---|" + "---|" * len(grows))
    for name, entry in results["models"].items():
        for lab, by_grow in sorted(entry["dice"].items(), key=lambda kv: int(kv[0])):
            n = len(by_grow[str(grows[0])])
            cells = " | ".join(f"{statistics.fmean(by_grow[str(k)]):.3f}" for k in grows)
            print(f"| {name} | {lab} | {n} | {cells} |")


def parser() -> argparse.ArgumentParser:
    p = bench.slice_study_parser(__doc__)
    p.add_argument("--grows", nargs="+", type=int, default=[-4, -2, 0, 2, 4, 6, 8, 12],
                   help="box margins in slice pixels (negative: a box inside the truth's)")
    return p


def main(argv=None) -> int:
    return bench.slice_study_main(parser().parse_args(argv), run, print_table)


if __name__ == "__main__":
    sys.exit(main())
