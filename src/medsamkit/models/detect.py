"""Recognise a checkpoint's architecture from its keys and shapes."""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: ViT encoder depth -> architecture name
_VIT_DEPTHS = {12: "vit-b", 24: "vit-l", 32: "vit-h"}


#: (Hiera stage-1 width, number of blocks) -> SAM2 size
_HIERA = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}


def _detect_sam2(state: Mapping[str, torch.Tensor]) -> str | None:
    """"sam2-hiera-t" ... "sam2.1-hiera-l" from the Hiera width and depth; SAM2.1 checkpoints
    have ``no_obj_embed_spatial``. MedSAM2 has SAM2.1-tiny's keys: only the name tells them apart."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    depth = 1 + max((int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")), default=-1)
    size = _HIERA.get((int(patch.shape[0]), depth))
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"{version}-hiera-{size}"


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """Return "tinyvit", "vit-b", "vit-l", "vit-h", a SAM2 architecture ("sam2-hiera-t",
    "sam2.1-hiera-b+", ...) or None when the keys fit none of them."""
    if "image_encoder.patch_embed.seq.0.c.weight" in state:
        return "tinyvit"
    sam2 = _detect_sam2(state)
    if sam2 is not None:
        return sam2
    pos = state.get("image_encoder.pos_embed")
    if pos is not None:
        depth = 1 + max(
            (int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")), default=-1
        )
        arch = _VIT_DEPTHS.get(depth)
        widths = {"vit-b": 768, "vit-l": 1024, "vit-h": 1280}
        if arch is not None and pos.shape[-1] == widths[arch]:
            return arch
    return None
