"""A compact standard U-Net (Ronneberger et al. 2015, with BatchNorm and padded convolutions)."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``levels`` resolutions and ``width * 2**i`` channels at level i.

    Input (B, in_channels, S, S) with S divisible by 2**(levels - 1); output (B, 1, S, S) logits.
    The default (width 32, 5 levels) has 7.8M parameters.
    """

    uses_box = False

    def __init__(self, in_channels: int = 3, width: int = 32, levels: int = 5) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList([conv_block(in_channels, chans[0])] +
                                  [conv_block(chans[i - 1], chans[i]) for i in range(1, levels)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)])
        self.merge = nn.ModuleList([conv_block(2 * chans[i - 1], chans[i - 1]) for i in range(levels - 1, 0, -1)])
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        skips = []
        x = images
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)
