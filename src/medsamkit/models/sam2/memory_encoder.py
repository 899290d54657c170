"""Memory encoder: fuses a frame's features with its predicted mask into a 64-channel memory.

The mask (already through sigmoid, scale and bias) is downsampled 16x by strided convolutions,
added to the projected image features, refined by two ConvNeXt blocks and projected to 64
channels. Keys are the official ``memory_encoder.*`` ones (facebookresearch/sam2
``sam2/modeling/memory_encoder.py``); the code is ours.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common import LayerNorm2d


class MaskDownSampler(nn.Module):
    """(B, 1, S, S) -> (B, embed_dim, S/16, S/16): 3x3/2 convolutions (channels x4 each),
    LayerNorm2d and GELU, then a 1x1 projection (keys ``encoder.0`` ... ``encoder.12``)."""

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 total_stride: int = 16) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        self.encoder = nn.Sequential()
        channels_in = channels_out = 1
        for _ in range(num_layers):
            channels_out = channels_in * stride**2
            self.encoder.append(nn.Conv2d(channels_in, channels_out, kernel_size, stride, padding))
            self.encoder.append(LayerNorm2d(channels_out))
            self.encoder.append(nn.GELU())
            channels_in = channels_out
        self.encoder.append(nn.Conv2d(channels_out, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm, pointwise MLP (x4, GELU), layer scale, residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7, padding: int = 3,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """A stack of :class:`CXBlock` (keys ``layers.i``)."""

    def __init__(self, num_layers: int = 2, dim: int = 256) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(features (B, 256, h, w), mask (B, 1, 16h, 16w)) -> memory (B, out_dim, h, w).

    The mask must already be what the memory takes (the model applies the sigmoid, scale and
    bias: :meth:`medsamkit.models.sam2.base.SAM2Base.mask_for_memory`). The memory's position
    encoding is a 2D sine encoding of its shape (:func:`~.position.sine_encoding_2d`).
    """

    def __init__(self, mask_downsampler: MaskDownSampler, fuser: Fuser, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        self.out_dim = out_dim

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.pix_feat_proj(features.to(mask.device)) + self.mask_downsampler(mask)
        return self.out_proj(self.fuser(x))
