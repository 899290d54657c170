"""SAM2-family speed and memory on this machine: 2D latency, 3D seconds per slice, peak RSS.

Parts (each in its own process, so each peak resident memory is its own):
  2d:sam2.1-hiera-tiny, 2d:medsam2  encode (preprocessing + image encoder), decode (1 box, one
                                     batched call for 10 boxes) on Kvasir-SEG images (synthetic
                                     512x512 images when ../shared is absent)
  3d:brats                           MedSAM2 through segment_volume on the parity BraTS FLAIR
                                     volume (24 x 160 x 160, one box, whole volume), split into
                                     encoder time and the rest (memory attention, decoder, memory
                                     encoder); median of --runs
  3d:ct                              MedSAM2 on a synthetic 512 x 512 x --ct-slices CT (int16 HU,
                                     a sphere), one 2D box, whole volume: seconds per slice and the
                                     peak RSS (the 4 GB question); run once
  import                             import time of medsamkit's SAM2 modules vs transformers' Sam2
                                     (the architecture decision, docs/sam2.md)
  encoder                            image encoder at 1024 px: ours vs transformers' Sam2VisionModel
                                     (same Hiera-T configuration, random weights)

No real SAM2/MedSAM2 weights can be downloaded here: the models carry the deterministic stand-in
weights of ../shared/docs/parity.md (the work per slice does not depend on the weight values),
unless --checkpoint-2d/--checkpoint-3d name real files.

    python benchmarks/bench_sam2.py [--runs 5] [--images 5] [--ct-slices 300] [--parts 2d,3d,ct,import,encoder]
                                    [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(name: str, checkpoint: str | None):
    import torch

    from medsamkit.inference.factory import make_predictor
    from medsamkit.models.checkpoint import load_state_dict_strict
    from medsamkit.models.loader import load_model
    from medsamkit.models.registry import get_spec
    from medsamkit.models.standin import standin_state_dict

    if checkpoint:
        return make_predictor(load_model(name, checkpoint, device="cpu")), "real weights"
    spec = get_spec(name)
    model = spec.build()
    load_state_dict_strict(model, standin_state_dict({k: v.shape for k, v in model.state_dict().items()}),
                           "stand-in", name)
    model.eval()
    from medsamkit.models.loader import LoadedModel

    return make_predictor(LoadedModel(model, spec, Path("stand-in"), torch.device("cpu"))), "stand-in weights"


def part_2d(name: str, args) -> dict:
    import numpy as np

    from medsamkit.io.image2d import read_image_2d
    from medsamkit.preprocessing.intensity import select_scheme, to_rgb_uint8

    predictor, weights = _load(name, args.checkpoint_2d)
    images = []
    boxes_file = SHARED / "kvasir-seg" / "gt_boxes.json"
    if boxes_file.exists():
        boxes = json.loads(boxes_file.read_text(encoding="utf-8"))
        for stem in sorted(boxes)[: args.images]:
            img = read_image_2d(SHARED / "kvasir-seg" / "images" / f"{stem}.jpg")
            images.append((to_rgb_uint8(select_scheme(img.kind)[0](img.pixels)), np.array(boxes[stem], float)))
        source = f"Kvasir-SEG ({len(images)} images)"
    else:
        rng = np.random.default_rng(0)
        images = [(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), np.array([100, 120, 300, 340], float))
                  for _ in range(args.images)]
        source = f"synthetic 512x512 ({len(images)} images)"
    predictor.set_image(images[0][0])  # warm-up
    encode, decode1, decode10 = [], [], []
    for _ in range(args.runs):
        for image, box in images:
            t = time.perf_counter()
            predictor.set_image(image)
            encode.append(time.perf_counter() - t)
            box = box.reshape(-1, 4)[:1]
            t = time.perf_counter()
            predictor.predict(boxes=box)
            decode1.append(time.perf_counter() - t)
            t = time.perf_counter()
            predictor.predict(boxes=np.repeat(box, 10, axis=0))
            decode10.append(time.perf_counter() - t)
    return {"part": f"2d:{name}", "weights": weights, "source": source, "encode_s": statistics.median(encode),
            "decode1_s": statistics.median(decode1), "decode10_s": statistics.median(decode10),
            "peak_rss_mib": _rss_mib()}


class _TimedEncoder:
    def __init__(self, encode):
        self.encode, self.seconds, self.calls = encode, 0.0, 0

    def __call__(self, tensor):
        t = time.perf_counter()
        out = self.encode(tensor)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def _volume_run(predictor, volume, prompts) -> tuple[float, float, int]:
    from medsamkit.inference.volume3d import segment_volume
    from medsamkit.io.geometry import Geometry

    timed = _TimedEncoder(predictor.model.encode)
    predictor.encoder = timed
    t = time.perf_counter()
    result = segment_volume(volume, Geometry.identity(), prompts, predictor)
    return time.perf_counter() - t, timed.seconds, result.encoder_calls


def part_3d_brats(args) -> dict:
    import numpy as np

    from medsamkit.inference.prompts3d import VolumePrompt

    predictor, weights = _load("medsam2", args.checkpoint_3d)
    target = SHARED / "parity" / "medsam2_3d_brats2021.npz"
    if target.is_file():
        ref = np.load(target)
        volume, box, key, source = ref["imgs"], tuple(float(v) for v in ref["box"]), int(ref["key"]), "BraTS FLAIR"
    else:
        rng = np.random.default_rng(0)
        volume = rng.integers(0, 255, (24, 160, 160), dtype=np.uint8)
        box, key, source = (44.0, 34.0, 76.0, 90.0), 12, "synthetic"
    prompt = VolumePrompt(box, key, (0, volume.shape[0] - 1))
    totals, encoders = [], []
    calls = 0
    for _ in range(args.runs):
        total, enc, calls = _volume_run(predictor, volume, [prompt])
        totals.append(total)
        encoders.append(enc)
    n = volume.shape[0]
    return {"part": "3d:brats", "weights": weights, "source": f"{source} {volume.shape[0]}x{volume.shape[1]}x"
            f"{volume.shape[2]}", "s_per_slice": statistics.median(totals) / n,
            "encoder_s_per_slice": statistics.median(encoders) / n,
            "rest_s_per_slice": (statistics.median(totals) - statistics.median(encoders)) / n,
            "encoder_calls": calls, "peak_rss_mib": _rss_mib()}


def part_3d_ct(args) -> dict:
    import numpy as np

    from medsamkit.inference.prompts3d import VolumePrompt

    predictor, weights = _load("medsam2", args.checkpoint_3d)
    d, h, w = args.ct_slices, 512, 512
    z, y, x = np.ogrid[:d, :h, :w]
    volume = np.full((d, h, w), -1000, np.int16)
    volume[(z - d / 2) ** 2 / (d / 4) ** 2 + ((y - 256) ** 2 + (x - 256) ** 2) / 200**2 < 1] = 40
    sphere = (z - d / 2) ** 2 / (d / 8) ** 2 + ((y - 230) ** 2 + (x - 280) ** 2) / 60**2 < 1
    volume[sphere] = 180
    volume += np.random.default_rng(0).integers(-20, 20, volume.shape, dtype=np.int16)
    # a 2D box on the middle slice without a z range: MedSAM2 propagates through the whole volume
    prompt = VolumePrompt((210.0, 160.0, 350.0, 300.0), d // 2, (d // 2, d // 2), z_range_given=False)
    before = _rss_mib()
    total, enc, calls = _volume_run(predictor, volume, [prompt])
    return {"part": "3d:ct", "weights": weights, "source": f"synthetic CT {d}x{h}x{w} int16",
            "s_per_slice": total / d, "encoder_s_per_slice": enc / d, "rest_s_per_slice": (total - enc) / d,
            "total_s": total, "encoder_calls": calls, "rss_before_mib": before, "peak_rss_mib": _rss_mib()}


def part_import(args) -> dict:
    code_ours = "import time; t=time.perf_counter(); import medsamkit.models.sam2.config, medsamkit.inference.memory_propagate; print(time.perf_counter()-t)"
    code_hf = ("import time, torch; t=time.perf_counter(); from transformers.models.sam2.modeling_sam2 import Sam2Model; "
               "from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoModel; print(time.perf_counter()-t)")
    code_torch = "import time; t=time.perf_counter(); import torch; print(time.perf_counter()-t)"
    out = {}
    for label, code in (("torch", code_torch), ("medsamkit_sam2_after_torch", "import torch; " + code_ours),
                        ("transformers_sam2_after_torch", code_hf)):
        times = []
        for _ in range(args.runs):
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
            if res.returncode != 0:
                times = []
                break
            times.append(float(res.stdout.strip().splitlines()[-1]))
        out[label + "_s"] = statistics.median(times) if times else None
    return {"part": "import", **out}


def part_encoder(args) -> dict:
    import torch

    from medsamkit.models.sam2.config import build_architecture

    ours = build_architecture("sam2.1-hiera-t").eval()
    x = torch.randn(1, 3, 1024, 1024)
    result = {"part": "encoder"}
    with torch.inference_mode():
        ours.encode(x)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            ours.encode(x)
            times.append(time.perf_counter() - t)
        result["ours_s"] = statistics.median(times)
        try:
            from transformers.models.sam2.configuration_sam2 import Sam2VisionConfig
            from transformers.models.sam2.modeling_sam2 import Sam2VisionModel
        except ImportError:
            return result
        hf = Sam2VisionModel(Sam2VisionConfig()).eval()
        ours_params = sum(p.numel() for p in ours.image_encoder.parameters())
        result["same_size"] = sum(p.numel() for p in hf.parameters()) == ours_params
        hf(pixel_values=x)
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            hf(pixel_values=x)
            times.append(time.perf_counter() - t)
        result["transformers_s"] = statistics.median(times)
    return result


PARTS = {"2d": ("2d:sam2.1-hiera-tiny", "2d:medsam2"), "3d": ("3d:brats",), "ct": ("3d:ct",),
         "import": ("import",), "encoder": ("encoder",)}


def run_part(part: str, args) -> dict:
    if part.startswith("2d:"):
        return part_2d(part[3:], args)
    return {"3d:brats": part_3d_brats, "3d:ct": part_3d_ct, "import": part_import, "encoder": part_encoder}[part](args)


def _table(results: list[dict]) -> str:
    lines = ["| part | input | weights | result | peak RSS |", "|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['part']} | | | failed: {r['error']} | |")
            continue
        p = r["part"]
        if p.startswith("2d:"):
            res = (f"encode {r['encode_s']:.2f} s, decode 1 box {r['decode1_s'] * 1000:.0f} ms, "
                   f"10 boxes {r['decode10_s'] * 1000:.0f} ms")
        elif p.startswith("3d:"):
            res = (f"{r['s_per_slice']:.2f} s/slice (encoder {r['encoder_s_per_slice']:.2f}, memory attention + "
                   f"decoder + memory encoder {r['rest_s_per_slice']:.2f}); {r['encoder_calls']} encoder calls")
            if "total_s" in r:
                res += f"; {r['total_s']:.0f} s in all"
        elif p == "import":
            res = (f"import torch {r['torch_s']:.2f} s; then medsamkit SAM2 {r['medsamkit_sam2_after_torch_s']:.2f} s, "
                   f"transformers Sam2 + Sam2Video {r['transformers_sam2_after_torch_s'] or float('nan'):.2f} s")
        else:
            res = f"Hiera-T encoder at 1024 px: ours {r['ours_s']:.2f} s"
            if "transformers_s" in r:
                res += f", transformers {r['transformers_s']:.2f} s (same size: {r['same_size']})"
        rss = f"{r['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in r else ""
        lines.append(f"| {p} | {r.get('source', '')} | {r.get('weights', '')} | {res} | {rss} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--ct-slices", type=int, default=300)
    ap.add_argument("--parts", default="2d,3d,ct,import,encoder")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpoint-2d", default=None, help="real sam2.1_hiera_tiny.pt / MedSAM2 file (2D parts)")
    ap.add_argument("--checkpoint-3d", default=None, help="real MedSAM2_latest.pt (3D parts)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)  # internal: run one part, print JSON
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.part:
        print(json.dumps(run_part(args.part, args)))
        return 0
    load_before = os.getloadavg()
    results = []
    for key in args.parts.split(","):
        for part in PARTS[key.strip()]:
            cmd = [sys.executable, __file__, "--part", part, "--runs", str(args.runs), "--images", str(args.images),
                   "--ct-slices", str(args.ct_slices)]
            for flag, value in (("--threads", args.threads), ("--checkpoint-2d", args.checkpoint_2d),
                                ("--checkpoint-3d", args.checkpoint_3d)):
                if value:
                    cmd += [flag, str(value)]
            res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
            if res.returncode != 0:
                results.append({"part": part, "error": (res.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                results.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"done {part}", file=sys.stderr)
    load_after = os.getloadavg()
    import torch

    header = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{args.threads or torch.get_num_threads()} threads, {args.runs} runs (median); "
              f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(header)
    print(_table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": header, "results": results}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
