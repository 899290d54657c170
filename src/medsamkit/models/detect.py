"""Recognise a checkpoint's architecture from its keys and shapes."""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: ViT encoder depth -> architecture name
_VIT_DEPTHS = {12: "vit-b", 24: "vit-l", 32: "vit-h"}


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """Return "tinyvit", "vit-b", "vit-l", "vit-h" or None when the keys fit none of them."""
    if "image_encoder.patch_embed.seq.0.c.weight" in state:
        return "tinyvit"
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
