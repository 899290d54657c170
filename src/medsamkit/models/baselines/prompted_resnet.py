"""A box-prompted ResNet: a small ResNet-18-style encoder written here (no torchvision), a light
convolutional decoder with skip connections, and the box as a fourth input channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def box_channel(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 4) x0, y0, x1, y1 model-input boxes -> (B, 1, size, size): 1 on the box's pixels
    (inclusive bounds), 0 elsewhere."""
    grid = torch.arange(size, device=boxes.device, dtype=boxes.dtype)
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    cols = (grid[None] >= x0) & (grid[None] <= x1)
    rows = (grid[None] >= y0) & (grid[None] <= y1)
    return (rows[:, :, None] & cols[:, None, :]).to(boxes.dtype)[:, None]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PromptedResNet(nn.Module):
    """ResNet encoder (a full-resolution 3x3 stem, then four stages of ``blocks`` basic blocks at
    /2, /4, /8, /16 with ``width * (1, 2, 4, 8)`` channels) and a decoder that upsamples x2 per stage, adding the
    encoder feature of the same resolution, to (B, 1, S, S) logits.

    Input: the normalised image (B, 3, S, S) and its boxes (B, 4) (S divisible by 16).
    The default (width 32, blocks 2) has 3.2M parameters.
    """

    uses_box = True

    def __init__(self, width: int = 32, blocks: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        chans = [width, 2 * width, 4 * width, 8 * width]
        self.stem = _conv_bn_relu(in_channels + 1, width)
        stages, cin = [], width
        for i, cout in enumerate(chans):
            layers = [BasicBlock(cin, cout, stride=2)] + [BasicBlock(cout, cout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.decode = nn.ModuleList([_conv_bn_relu(chans[i], chans[i - 1] if i else width) for i in range(3, -1, -1)])
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        x = self.stem(torch.cat([images, box_channel(boxes, images.shape[-1]).to(images.dtype)], dim=1))
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        # feats: full, /2, /4, /8, /16; decode from /16 back to full resolution
        for block, skip in zip(self.decode, reversed(feats[:-1])):
            x = F.interpolate(block(x), size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
        return self.head(x)
