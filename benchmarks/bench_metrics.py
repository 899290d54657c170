"""Speed of the per-label metrics (DSC, IoU, NSD, HD95) on a large synthetic label volume.

A 200 x 512 x 512 (z, y, x) uint8 label map with N ellipsoids (labels 1..N, semi-axes 8-40
voxels, anisotropic spacing 2.5 x 0.8 x 0.8 mm) as the ground truth; the prediction is the same
ellipsoids shifted by one or two voxels and slightly resized. Times
``medsamkit.evaluation.metrics.label_scores`` (all labels, NSD tolerance 2 mm, HD95), best of
``--repeat`` runs, after one warm-up call (table building). ``--far-false-positives`` adds two
tiny blobs of every label in opposite corners of the prediction, so every label's crop is the
whole volume (the worst case for cropping)::

    python benchmarks/bench_metrics.py                # 200 x 512 x 512, 10 labels
    python benchmarks/bench_metrics.py --far-false-positives
    python benchmarks/bench_metrics.py --labels 20 --shape 300,512,512
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medsamkit.evaluation.metrics import label_scores


def ellipsoids(shape: tuple[int, int, int], n: int, seed: int, jitter: bool) -> np.ndarray:
    """A label map with ``n`` non-overlapping-ish ellipsoids (later labels win overlaps)."""
    rng = np.random.default_rng(seed)
    moves = np.random.default_rng(seed + 1)  # separate stream: same ellipsoids with or without jitter
    out = np.zeros(shape, np.uint8)
    for label in range(1, n + 1):
        radii = rng.uniform(8, 40, 3) * np.array([0.4, 1.0, 1.0])
        centre = [rng.uniform(r + 2, s - r - 3) for r, s in zip(radii, shape)]
        if jitter:
            centre = [c + moves.integers(1, 3) for c in centre]
            radii = radii * moves.uniform(0.9, 1.1, 3)
        lo = [max(0, int(c - r) - 1) for c, r in zip(centre, radii)]
        hi = [min(s, int(c + r) + 2) for c, r, s in zip(centre, radii, shape)]
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
        region = out[tuple(slice(a, b) for a, b in zip(lo, hi))]
        region[inside] = label
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="200,512,512", help="z,y,x voxels")
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--far-false-positives", action="store_true",
                    help="add far-away false-positive specks of every label (worst case)")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    spacing = (2.5, 0.8, 0.8)
    gt = ellipsoids(shape, args.labels, seed=0, jitter=False)
    pred = ellipsoids(shape, args.labels, seed=0, jitter=True)
    if args.far_false_positives:
        z, y, x = shape
        for label in range(1, args.labels + 1):
            pred[z - 6:z - 3, y - 8:y - 5, 3 * label:3 * label + 2] = label
            pred[2:4, 3:5, x - 3 * label - 3:x - 3 * label - 1] = label
    label_scores(pred[:40, :64, :64], gt[:40, :64, :64], spacing=spacing)  # warm-up: tables
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        scores = label_scores(pred, gt, spacing=spacing, tolerance=2.0)
        times.append(time.perf_counter() - start)
    far = ", far false positives" if args.far_false_positives else ""
    print(f"volume {shape} uint8, {args.labels} labels{far}, spacing {spacing} mm")
    print(f"label_scores (DSC, IoU, NSD@2mm, HD95 for every label): best {min(times):.2f} s, "
          f"runs {', '.join(f'{t:.2f}' for t in times)} s")
    dsc = [s.dsc for s in scores.values()]
    nsd = [s.nsd for s in scores.values()]
    hd = [s.hd95 for s in scores.values()]
    print(f"mean DSC {np.mean(dsc):.3f}, mean NSD {np.mean(nsd):.3f}, mean HD95 {np.mean(hd):.2f} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
