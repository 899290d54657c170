"""Dice + BCE (+ IoU MSE) loss and the validation Dice on logits."""

from __future__ import annotations

import math

import torch

from medsamkit.training.losses import SegmentationLoss, batch_dice, mask_iou, soft_dice_loss


def _target() -> torch.Tensor:
    t = torch.zeros(2, 1, 16, 16)
    t[0, 0, 4:12, 4:12] = 1
    t[1, 0, 0:4, 0:8] = 1
    return t


def test_soft_dice_loss_bounds():
    t = _target()
    perfect = (t * 2 - 1) * 50  # confident and right
    wrong = -perfect
    assert soft_dice_loss(perfect, t) < 1e-4
    assert soft_dice_loss(wrong, t) > 0.999
    # squared denominators: p = 0.5 everywhere against an 8x8 target
    half = torch.zeros(1, 1, 16, 16)
    expected = 1 - (2 * 0.5 * 64) / (0.25 * 256 + 64)
    assert math.isclose(soft_dice_loss(half, t[:1]).item(), expected, rel_tol=1e-4)


def test_segmentation_loss_parts():
    t = _target()
    logits = torch.randn(2, 1, 16, 16)
    parts = SegmentationLoss(dice=1.0, bce=1.0)(logits, t)
    assert set(parts) == {"dice", "bce", "loss"}
    assert torch.isclose(parts["loss"], parts["dice"] + parts["bce"])
    iou_pred = torch.tensor([[0.3], [0.9]])
    parts = SegmentationLoss(dice=0.5, bce=2.0, iou_mse=1.0)(logits, t, iou_pred)
    real = mask_iou(logits, t)
    assert torch.isclose(parts["iou_mse"], ((iou_pred - real) ** 2).mean())
    assert torch.isclose(parts["loss"], 0.5 * parts["dice"] + 2.0 * parts["bce"] + parts["iou_mse"])


def test_loss_gradient_flows_to_logits():
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    SegmentationLoss()(logits, _target())["loss"].backward()
    g = logits.grad
    assert (g[_target() > 0] < 0).all() and (g[_target() == 0] > 0).all()  # raise inside, lower outside


def test_mask_iou_and_batch_dice():
    t = _target()
    logits = torch.full_like(t, -5.0)
    logits[0, 0, 4:12, 4:8] = 5  # half of the first target
    assert torch.allclose(mask_iou(logits, t), torch.tensor([[0.5], [0.0]]))
    dice = batch_dice(logits, t)
    assert math.isclose(dice[0].item(), 2 * 32 / (32 + 64), rel_tol=1e-6) and dice[1].item() == 0.0
    empty = batch_dice(torch.full((1, 1, 8, 8), -1.0), torch.zeros(1, 1, 8, 8))
    assert torch.isnan(empty).all()


def test_batch_dice_ignores_the_padding():
    t = torch.zeros(1, 1, 16, 16)
    t[0, 0, 2:6, 2:6] = 1
    logits = (t * 2 - 1) * 5
    logits[0, 0, 12:, :] = 5  # false positives in the padding below the valid 10 rows
    assert batch_dice(logits, t).item() < 0.5
    assert batch_dice(logits, t, torch.tensor([[10, 16]])).item() == 1.0
