"""The composed promptable segmentation model (image encoder + prompt encoder + mask decoder).

The model holds weights only; image normalisation and resizing belong to the model's geometry
(:mod:`medsamkit.preprocessing.geometry`) and cached embeddings to the predictor, so one
forward path serves inference, fine-tuning and export alike.
"""

from __future__ import annotations

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """SAM-family model built from injected parts; state_dict keys are the official ones
    (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``)."""

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def image_size(self) -> int:
        """Side of the square model input in pixels (256 LiteMedSAM, 1024 SAM/MedSAM)."""
        return int(self.prompt_encoder.input_image_size[0])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, 256, 64, 64) embeddings."""
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts against one shared (1, C, h, w) or B per-prompt embeddings.

        Coordinates are in model-input pixels. Returns low-resolution logits (B, K, 4h, 4w)
        and IoU predictions (B, K), K = 3 with ``multimask_output`` else 1.
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def forward(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and decode in one call (training); one prompt per image."""
        return self.decode(self.encode(images), boxes, points, masks, multimask_output)
