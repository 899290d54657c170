"""SAM2's mask decoder: SAM's two-way transformer decoder plus an object-score token, the
stride-4 and stride-8 backbone features mixed into the upscaling, and a dynamic fallback to the
best multimask output when the single mask is unstable.

Keys are the official ``sam_mask_decoder.*`` ones (facebookresearch/sam2
``sam2/modeling/sam/mask_decoder.py``); the code is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..common import MLP, LayerNorm2d
from ..transformer import TwoWayTransformer


def two_way_transformer(dim: int = 256, depth: int = 2, mlp_dim: int = 2048, num_heads: int = 8) -> TwoWayTransformer:
    """SAM's two-way transformer with SAM2's MLP layout (keys ``mlp.layers.0/1`` instead of
    ``mlp.lin1/lin2``; the same ReLU MLP)."""
    transformer = TwoWayTransformer(depth=depth, embedding_dim=dim, num_heads=num_heads, mlp_dim=mlp_dim)
    for block in transformer.layers:
        block.mlp = MLP(dim, mlp_dim, dim, 2)
    return transformer


@dataclass(frozen=True)
class StabilityFallback:
    """Single-mask output falls back to the best multimask output (by predicted IoU) when its
    stability score (IoU of the masks at logit > delta and > -delta) is below ``threshold``.
    The official predictors switch this on (``build_sam2(apply_postprocessing=True)``)."""

    enabled: bool = True
    delta: float = 0.05
    threshold: float = 0.98


@dataclass
class DecoderOutput:
    """masks (B, M, 4h, 4w) logits; iou (B, M); tokens (B, 1 or 3, C) for object pointers;
    object_score (B, 1) logit that the object is present."""

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score: torch.Tensor


class SAM2MaskDecoder(nn.Module):
    def __init__(self, transformer: nn.Module, transformer_dim: int = 256, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 stability: StabilityFallback | None = None) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       sigmoid_output=True)
        self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)
        self.stability = stability or StabilityFallback()

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool,
                high_res_features: tuple[torch.Tensor, torch.Tensor]) -> DecoderOutput:
        """Decode B prompts.

        Args:
            image_embeddings: (B or 1, C, h, w); one embedding is shared by all B prompts.
            image_pe: (1, C, h, w).
            sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (B, C, h, w).
            multimask_output: the 3 multimask outputs; else the single output (with the
                stability fallback in eval mode).
            high_res_features: stride-4 (B or 1, C/8, 4h, 4w) and stride-8 (B or 1, C/4, 2h, 2w)
                features, already through :attr:`conv_s0` and :attr:`conv_s1`.
        """
        masks, iou, mask_tokens, object_score = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, high_res_features)
        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
            tokens = mask_tokens[:, 1:]
        else:
            if self.stability.enabled and not self.training:
                masks, iou = self._stability_fallback(masks, iou)
            else:
                masks, iou = masks[:, 0:1], iou[:, 0:1]
            # the pointer always comes from the single-mask token here (as in the reference)
            tokens = mask_tokens[:, 0:1]
        return DecoderOutput(masks, iou, tokens, object_score)

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                      dense: torch.Tensor, high_res_features: tuple[torch.Tensor, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 masks, their IoU, the 4 mask tokens and the object score, before selection."""
        batch = sparse.shape[0]
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1)
        if image_embeddings.shape[0] not in (1, batch):
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {batch} prompts: "
                             "give one embedding per prompt or one shared by all")
        src = image_embeddings.expand(batch, -1, -1, -1) + dense
        pos = image_pe.expand(batch, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_token = hs[:, 1, :]
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        upscaled = act1(norm1(deconv1(src) + feat_s1))
        upscaled = act2(deconv2(upscaled) + feat_s0)
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou = self.iou_prediction_head(iou_token)
        object_score = self.pred_obj_score_head(hs[:, 0, :])
        return masks, iou, mask_tokens, object_score

    def _stability_fallback(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token 0's mask where it is stable, else the multimask output with the best IoU."""
        multi_masks, multi_iou = masks[:, 1:], iou[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(multi_iou.shape[0], device=iou.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, 0:1], iou[:, 0:1]
        flat = single_masks.flatten(-2)
        inner = torch.sum(flat > self.stability.delta, dim=-1).float()
        outer = torch.sum(flat > -self.stability.delta, dim=-1).float()
        stability = torch.where(outer > 0, inner / outer, 1.0)
        stable = stability >= self.stability.threshold
        masks_out = torch.where(stable[..., None, None].expand_as(single_masks), single_masks, best_masks)
        iou_out = torch.where(stable.expand_as(single_iou), single_iou, best_iou)
        return masks_out, iou_out
