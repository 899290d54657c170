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
        self, logits: torch.Tensor, target: torch.Tensor, iou_pred: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``weight``: per-pixel BCE weights broadcastable to the logits (None: all 1)."""
        target = target.to(logits.dtype)
        parts = {
            "dice": soft_dice_loss(logits, target),
            "bce": F.binary_cross_entropy_with_logits(logits.float(), target.float(),
                                                      weight=None if weight is None else weight.float()),
        }
        total = self.dice * parts["dice"] + self.bce * parts["bce"]
        if self.iou_mse and iou_pred is not None:
            parts["iou_mse"] = F.mse_loss(iou_pred.float(), mask_iou(logits.detach(), target))
            total = total + self.iou_mse * parts["iou_mse"]
        parts["loss"] = total
        return parts


# ------------------------------------------------------------------------------ SAM2 family
def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
                  ) -> torch.Tensor:
    """Per-pixel sigmoid focal loss (RetinaNet's, as SAM2's trainer; ``alpha < 0`` switches the
    class weighting off, ``gamma = 0`` makes it plain BCE)."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


def _dice_plus_one(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM2's Dice loss per mask (smoothing 1, plain denominators) over the last two axes."""
    prob = torch.sigmoid(logits).flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)


@dataclass(frozen=True)
class Sam2FrameLoss:
    """The loss of one frame of B objects, as SAM2's (and MedSAM2's) ``MultiStepMultiMasksAndIous``.

    ``kind="sam2"``: focal (alpha 0.25, gamma 2) and Dice of every multimask output; the output
    with the lowest ``focal * w + dice * w`` is the one supervised; the IoU head learns the
    actual IoU of every output (L1); the object score learns presence (BCE); mask, Dice and IoU
    terms count only where the object is present. ``kind="dice-bce"``: squared Dice + BCE on
    the chosen mask (present objects) plus the object-score BCE. Terms are summed over objects
    (the caller divides by the number of objects, as the reference does).
    """

    kind: str = "sam2"
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    bce: float = 1.0

    def __call__(self, multimask: torch.Tensor, chosen: torch.Tensor, iou_pred: torch.Tensor,
                 object_score: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """multimask (B, M, S, S) and chosen (B, 1, S, S) logits at the target's size, iou_pred
        (B, M), object_score (B, 1), target (B, 1, S, S) in {0, 1}."""
        target = target.float()
        present = (target.flatten(1).amax(1) > 0).float()  # (B,)
        parts = {"object_score": F.binary_cross_entropy_with_logits(
            object_score.float().reshape(-1), present, reduction="sum")}
        if self.kind == "dice-bce":
            chosen = chosen.float()
            dice = torch.stack([soft_dice_loss(c[None], t[None]) for c, t in zip(chosen, target)])
            bce = F.binary_cross_entropy_with_logits(chosen, target, reduction="none").flatten(1).mean(1)
            parts["dice"], parts["bce"] = (dice * present).sum(), (bce * present).sum()
            parts["loss"] = self.dice * parts["dice"] + self.bce * parts["bce"] + \
                self.object_score * parts["object_score"]
            return parts
        multimask = multimask.float()
        focal = sigmoid_focal(multimask, target.expand_as(multimask)).flatten(2).mean(-1)  # (B, M)
        dice = _dice_plus_one(multimask, target.expand_as(multimask))
        best = torch.argmin(self.focal * focal + self.dice * dice, dim=1)
        rows = torch.arange(multimask.shape[0], device=multimask.device)
        actual = mask_iou(multimask.detach().flatten(0, 1)[:, None], target.repeat_interleave(
            multimask.shape[1], 0)).reshape(iou_pred.shape)
        iou = F.l1_loss(iou_pred.float(), actual, reduction="none").mean(1)  # every output's IoU
        parts["focal"] = (focal[rows, best] * present).sum()
        parts["dice"] = (dice[rows, best] * present).sum()
        parts["iou"] = (iou * present).sum()
        parts["loss"] = (self.focal * parts["focal"] + self.dice * parts["dice"] + self.iou * parts["iou"]
                         + self.object_score * parts["object_score"])
        return parts
