"""Training losses and the batch Dice used for validation.

MedSAM's loss is MONAI's ``DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")`` plus
``BCEWithLogitsLoss``, on logits at the input size; LiteMedSAM adds the MSE between the IoU
head's prediction and the IoU of the predicted mask (../shared/docs/design.md, "Training
recipes"). Tensors: logits and targets (B, 1, H, W), targets in {0, 1}; IoU predictions (B, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - soft Dice per sample with squared denominators (MONAI's ``squared_pred``), averaged.

    The smoothing ``eps`` is added to numerator and denominator as MONAI does, so an empty
    target predicted empty gives a loss near 0.
    """
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (prob * target).sum(1)
    denom = (prob * prob).sum(1) + (target * target).sum(1)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 1) IoU of ``logits > 0`` with the target; 1 when both are empty (LiteMedSAM's target)."""
    pred = (logits > 0).flatten(1)
    target = target.bool().flatten(1)
    inter = (pred & target).sum(1).float()
    union = (pred | target).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))[:, None]


def batch_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) Dice of ``logits > 0`` against the target; NaN where both are empty.

    Args:
        valid: (B, 2) (h, w) of the image inside the padded square: only that region counts.
    """
    pred = logits > 0
    target = target.bool()
    if valid is not None:
        h, w = pred.shape[-2:]
        rows = torch.arange(h, device=pred.device)[None, :, None] < valid[:, 0, None, None]
        cols = torch.arange(w, device=pred.device)[None, None, :] < valid[:, 1, None, None]
        region = (rows & cols)[:, None]
        pred, target = pred & region, target & region
    pred, target = pred.flatten(1), target.flatten(1)
    total = (pred.sum(1) + target.sum(1)).float()
    inter = (pred & target).sum(1).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.full_like(total, float("nan")))


@dataclass(frozen=True)
class SegmentationLoss:
    """``dice * Dice + bce * BCE + iou_mse * MSE(iou_pred, IoU)``; returns the total and its parts."""

    dice: float = 1.0
    bce: float = 1.0
    iou_mse: float = 0.0

    def __call__(
        self, logits: torch.Tensor, target: torch.Tensor, iou_pred: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        target = target.to(logits.dtype)
        parts = {
            "dice": soft_dice_loss(logits, target),
            "bce": F.binary_cross_entropy_with_logits(logits.float(), target.float()),
        }
        total = self.dice * parts["dice"] + self.bce * parts["bce"]
        if self.iou_mse and iou_pred is not None:
            parts["iou_mse"] = F.mse_loss(iou_pred.float(), mask_iou(logits.detach(), target))
            total = total + self.iou_mse * parts["iou_mse"]
        parts["loss"] = total
        return parts
