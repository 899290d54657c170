"""The from-scratch baselines: shapes, the box channel, and a few steps that reduce the loss."""

from __future__ import annotations

import pytest
import torch

from medsamkit.models.baselines import BASELINES, PromptedResNet, UNet, box_channel, build_baseline
from medsamkit.training.losses import SegmentationLoss


def test_box_channel_marks_the_inclusive_box():
    channel = box_channel(torch.tensor([[2.0, 1.0, 4.0, 3.0], [0.0, 0.0, 7.0, 7.0]]), 8)
    assert channel.shape == (2, 1, 8, 8)
    expected = torch.zeros(8, 8)
    expected[1:4, 2:5] = 1
    assert torch.equal(channel[0, 0], expected) and channel[1].sum() == 64


@pytest.mark.parametrize("name", list(BASELINES))
def test_forward_shapes(name):
    net = build_baseline(name, width=4).eval()
    images = torch.randn(2, 3, 64, 64)
    boxes = torch.tensor([[4.0, 4.0, 30.0, 40.0]] * 2)
    assert net(images, boxes).shape == (2, 1, 64, 64)


def test_default_sizes():
    assert sum(p.numel() for p in UNet().parameters()) == pytest.approx(7.76e6, rel=0.01)
    assert sum(p.numel() for p in PromptedResNet().parameters()) == pytest.approx(3.19e6, rel=0.01)


def test_prompted_resnet_uses_the_box():
    torch.manual_seed(0)
    net = PromptedResNet(width=4).eval()
    images = torch.randn(1, 3, 64, 64)
    a = net(images, torch.tensor([[4.0, 4.0, 20.0, 20.0]]))
    b = net(images, torch.tensor([[30.0, 30.0, 60.0, 60.0]]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", list(BASELINES))
def test_a_few_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    net = build_baseline(name, width=8)
    images = torch.randn(4, 3, 64, 64)
    masks = torch.zeros(4, 1, 64, 64)
    masks[:, :, 16:40, 20:44] = 1
    images = images + 2 * masks  # the target is brighter
    boxes = torch.tensor([[20.0, 16.0, 43.0, 39.0]] * 4)
    loss_fn = SegmentationLoss()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = loss_fn(net(images, boxes), masks)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
