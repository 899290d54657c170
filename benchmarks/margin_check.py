"""How the bf16 image encoder's masks compare with fp32's, and which ones MarginCheck re-checks.

For each Kvasir-SEG image with its ``gt_boxes.json`` box, LiteMedSAM (real weights) is run on
OpenVINO bf16 and fp32 (the same ONNX export, the same ONNX Runtime box decoder). Per image it
records the Dice of each mask against the official pipeline's mask (``ref-litemedsam/``) and the
bf16 logits' near fraction (:class:`~medsamkit.inference.margin_check.MarginCheck`: pixels within
``band`` of 0 / mask pixels) for several bands. The table then says, for each (band,
max_fraction), how many images would be re-checked in fp32 and the agreement that results.

    python benchmarks/margin_check.py --json runs/margin_check.json            # all 880, ~20 min
    python benchmarks/margin_check.py --from-json runs/margin_check.json       # the table again
    python benchmarks/margin_check.py --volumes ../shared/data/volumes/acdc-mr  # held out: MR slices vs fp32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kvasir-seg"
VOLUMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "volumes"
BANDS = (0.25, 0.5, 1.0, 2.0)
FRACTIONS = (0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0)


def kvasir_items(data: Path, limit: int | None) -> Iterator[tuple[str, np.ndarray, list, list | None]]:
    """(name, RGB image, [box], [official mask]) per Kvasir-SEG image (sorted names)."""
    import cv2

    boxes = json.loads((data / "gt_boxes.json").read_text(encoding="utf-8"))
    for name in sorted(boxes)[:limit]:
        rgb = cv2.cvtColor(cv2.imread(str(data / "images" / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        ref = cv2.imread(str(data / "ref-litemedsam" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127
        yield name, rgb, [boxes[name]], [ref]


def volume_items(folder: Path, limit: int | None, every: int = 1,
                 min_pixels: int = 20) -> Iterator[tuple[str, np.ndarray, list, None]]:
    """(volume:slice, RGB slice, boxes, None) for every ``every``-th slice with a label: one box per
    label (the bounding box of its pixels on that slice, labels of >= ``min_pixels``), on the slice as
    ``medsamkit segment VOLUME`` makes it (the volume's intensity scheme, then grey to RGB).
    The thresholds were set on Kvasir-SEG: these slices were not used to choose them."""
    from medsamkit.inference.propagate import VolumeSlices
    from medsamkit.inference.volume3d import volume_kind
    from medsamkit.io.volume import read_volume
    from medsamkit.preprocessing.intensity import select_scheme

    labels = sorted((folder / "labelsTr").glob("*.nii.gz"))[:limit]
    for label_path in labels:
        case = label_path.name[: -len(".nii.gz")]
        image, _ = read_volume(folder / "imagesTr" / f"{case}_0000.nii.gz")
        truth, _ = read_volume(label_path)
        slices = VolumeSlices(select_scheme(volume_kind(image))[0](image))
        truth = np.rint(truth).astype(np.int64)
        for z in [z for z in range(truth.shape[0]) if truth[z].any()][::every]:
            boxes = []
            for lab in (v for v in np.unique(truth[z]) if v):
                ys, xs = np.nonzero(truth[z] == lab)
                if len(ys) >= min_pixels:
                    boxes.append([int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())])
            if boxes:
                yield f"{case}:{z}", slices.rgb(z), boxes, None


def measure(items: Iterable[tuple[str, np.ndarray, list, list | None]], threads: int) -> dict:
    """Per prompt: Dice of the bf16 and fp32 masks against the reference (the official mask, or,
    without one, the fp32 mask) and the bf16 logits' near fractions."""
    import torch

    from medsamkit.evaluation.metrics import dice
    from medsamkit.inference.factory import make_predictor
    from medsamkit.inference.margin_check import MarginCheck
    from medsamkit.models.loader import load_model

    torch.set_num_threads(threads)
    loaded = load_model("litemedsam", device="cpu", allow_download=False)
    # precisions asked by name: the raw bf16 masks (no re-check; it is simulated below from the logits)
    predictors = {p: make_predictor(loaded, backend="openvino", precision=p, threads=threads) for p in ("bf16", "fp32")}
    out: dict = {}
    start = time.perf_counter()
    for i, (name, rgb, boxes, refs) in enumerate(items):
        masks, near = {}, {}
        for precision, predictor in predictors.items():
            embedding = predictor.set_image(rgb)
            prediction = predictor.predict(boxes=np.asarray(boxes, np.float64))
            masks[precision] = prediction.masks[:, 0]
            if precision == "bf16":
                low = prediction.low_res_logits[:, 0].float().numpy()
                near = {str(b): MarginCheck(band=b).near_fraction(low, embedding.frame) for b in BANDS}
        for k in range(len(boxes)):
            ref = masks["fp32"][k] if refs is None else refs[k]
            out[f"{name}#{k}" if len(boxes) > 1 else name] = {
                "dice_bf16": float(dice(masks["bf16"][k], ref)), "dice_fp32": float(dice(masks["fp32"][k], ref)),
                "near": {b: float(v[k]) for b, v in near.items()}}
        if (i + 1) % 50 == 0:
            print(f"{i + 1} images, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return {"reference": "official" if refs is not None else "fp32", "images": out, "load_after": os.getloadavg()}


def table(result: dict) -> str:
    images = result["images"].values()
    bf16 = np.array([r["dice_bf16"] for r in images])
    fp32 = np.array([r["dice_fp32"] for r in images])
    bf16, fp32 = np.nan_to_num(bf16, nan=1.0), np.nan_to_num(fp32, nan=1.0)  # both masks empty: agree
    lines = [f"{len(bf16)} prompts. bf16 alone: mean Dice vs {result.get('reference', 'official')} "
             f"{bf16.mean():.4f}, min {bf16.min():.4f}, "
             f"{(bf16 < 0.99).sum()} below 0.99, {(bf16 < 0.95).sum()} below 0.95; fp32 alone: mean {fp32.mean():.4f}, "
             f"min {fp32.min():.4f}", "",
             "| band | max_fraction | re-checked | mean Dice | min Dice | below 0.99 | below 0.95 |",
             "|---|---|---|---|---|---|---|"]
    for band in BANDS:
        near = np.array([r["near"][str(band)] for r in images])
        for fraction in FRACTIONS:
            redo = near > fraction
            got = np.where(redo, fp32, bf16)
            lines.append(f"| {band} | {fraction} | {redo.sum()} ({100 * redo.mean():.1f}%) | {got.mean():.4f} | "
                         f"{got.min():.4f} | {(got < 0.99).sum()} | {(got < 0.95).sum()} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="kvasir-seg folder")
    ap.add_argument("--volumes", type=Path, default=None,
                    help="instead of Kvasir-SEG: an nnU-Net-layout folder of labelled volumes (e.g. "
                         "../shared/data/volumes/acdc-mr); slices with labels, one box per label, against fp32")
    ap.add_argument("--every", type=int, default=1, help="--volumes: every N-th labelled slice")
    ap.add_argument("--limit", type=int, default=None, help="the first N images (sorted names)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the per-image figures here")
    ap.add_argument("--from-json", type=Path, help="print the table of an earlier run")
    args = ap.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        if args.volumes is not None:
            if not (args.volumes / "labelsTr").is_dir():
                print(f"no labelsTr/ in {args.volumes}", file=sys.stderr)
                return 2
            result = measure(volume_items(args.volumes, args.limit, args.every), args.threads)
        elif not (args.data / "gt_boxes.json").is_file():
            print(f"kvasir-seg not found at {args.data}", file=sys.stderr)
            return 2
        else:
            result = measure(kvasir_items(args.data, args.limit), args.threads)
        if args.json:
            args.json.write_text(json.dumps(result) + "\n", encoding="utf-8")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
