"""What an inference engine (ONNX Runtime, OpenVINO) runs in place of a model's image encoder.

For the SAM family it is ``model.image_encoder`` with one output, the embedding. For the SAM2
family it is :meth:`~medsamkit.models.sam2.base.SAM2Base.encode`: the Hiera image encoder and the
mask decoder's ``conv_s0``/``conv_s1`` projections, with three outputs (the stride-16 vision
features, the stride-4 and stride-8 features). :class:`SAM2ImageFeatures` holds exactly those
parts, so its weights digest (the engines' cache key) covers everything exported and nothing
else: fine-tuning the memory or the decoder's heads reuses the export.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: output names of the SAM-family export (the file names of its cache predate the others)
EMBEDDING_OUTPUTS: tuple[str, ...] = ("embedding",)
#: output names of the SAM2-family export, in :meth:`SAM2Base.encode`'s order
SAM2_OUTPUTS: tuple[str, ...] = ("vision", "high_res_s4", "high_res_s8")


@dataclass(frozen=True)
class EncoderGraph:
    """The module an engine exports and compiles, and the names of its outputs (one or more)."""

    module: nn.Module
    outputs: tuple[str, ...] = EMBEDDING_OUTPUTS


class SAM2ImageFeatures(nn.Module):
    """``SAM2Base.encode`` as a module of its own: (B, 3, S, S) normalised images -> (vision
    (B, C, S/16, S/16), stride-4 (B, C/8, S/4, S/4), stride-8 (B, C/4, S/8, S/8)).

    Shares the model's modules (no copy): it computes what ``model.encode`` computes.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.conv_s0 = model.sam_mask_decoder.conv_s0
        self.conv_s1 = model.sam_mask_decoder.conv_s1

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fpn = self.image_encoder(images)
        return fpn[2], self.conv_s0(fpn[0]), self.conv_s1(fpn[1])


def encoder_graph(model: nn.Module, family: str) -> EncoderGraph:
    """The part of ``model`` an engine replaces, for a model of ``family`` ("sam" or "sam2")."""
    if family == "sam2":
        return EncoderGraph(SAM2ImageFeatures(model), SAM2_OUTPUTS)
    return EncoderGraph(model.image_encoder, EMBEDDING_OUTPUTS)
