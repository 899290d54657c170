"""Hiera, SAM2's hierarchical image backbone, and the FPN neck on top of it.

A 7x7/4 patch embedding, then ``sum(stages)`` transformer blocks in four stages; the first
block of stages 2-4 halves the resolution by max-pooling its queries and doubles the width and
the number of heads. Blocks attend within windows (per-stage sizes) except the listed global
blocks. The neck projects every stage to 256 channels and adds the upsampled coarser level to
the two coarsest outputs; the coarsest level is then dropped, leaving strides 4, 8 and 16.

State_dict keys are the official ones (``image_encoder.trunk.*``, ``image_encoder.neck.*``,
facebookresearch/sam2 ``sam2/modeling/backbones/``); the code is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLP
from ..image_encoder_vit import window_partition, window_unpartition
from .position import sine_encoding_2d


@dataclass(frozen=True)
class HieraSize:
    """The numbers that tell the Hiera sizes apart (facebookresearch/sam2 configs).

    Attributes:
        embed_dim, num_heads: width and heads of stage 1 (doubled at each later stage).
        stages: blocks per stage.
        global_blocks: indices of the blocks with global attention.
        window_spec: attention window per stage (the first block of a stage still uses the
            previous stage's window, as the reference does).
        pos_embed_grid: size of the background position embedding, interpolated to the input.
    """

    embed_dim: int
    num_heads: int
    stages: tuple[int, int, int, int]
    global_blocks: tuple[int, ...]
    window_spec: tuple[int, int, int, int] = (8, 4, 14, 7)
    pos_embed_grid: tuple[int, int] = (14, 14)

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Widths of the four stage outputs, coarsest first (the neck's input order)."""
        return tuple(self.embed_dim * 2**i for i in (3, 2, 1, 0))  # type: ignore[return-value]


def _pool(x: torch.Tensor, pool: nn.Module | None) -> torch.Tensor:
    """Max-pool a (B, H, W, C) tensor spatially."""
    if pool is None:
        return x
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention whose queries may be pooled (the stage transitions)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_pool is not None:
            q = _pool(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block with optional windowing, query pooling and width change."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None,
                 window_size: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.drop_path = drop_path
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Stochastic depth (training only)."""
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = _pool(self.proj(x), self.pool)
        window = self.window_size
        if window > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # the queries were pooled: the windows shrank, and so does the frame
                window = window // self.q_stride[0]
                h, w = shortcut.shape[1:3]
                padded = (h + (window - h % window) % window, w + (window - w % window) % window)
            x = window_unpartition(x, window, padded, (h, w))
        x = shortcut + self._drop(x)
        return x + self._drop(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """7x7 convolution with stride 4: (B, 3, S, S) -> (B, S/4, S/4, C)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The Hiera trunk: (B, 3, S, S) -> four (B, C_i, S/4/2^i, S/4/2^i) maps, finest first."""

    def __init__(self, size: HieraSize, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.size = size
        depth = sum(size.stages)
        self.stage_ends = [sum(size.stages[: i + 1]) - 1 for i in range(len(size.stages))]
        pool_blocks = {end + 1 for end in self.stage_ends[:-1]}
        self.patch_embed = PatchEmbed(size.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, size.embed_dim, *size.pos_embed_grid))
        first_window = size.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, size.embed_dim, first_window, first_window))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear decay rule
        self.blocks = nn.ModuleList()
        dim, heads, stage = size.embed_dim, size.num_heads, 0
        for i in range(depth):
            # the window lags by one block: a stage's first block uses the previous window
            window = 0 if i in size.global_blocks else size.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            self.blocks.append(MultiScaleBlock(dim, dim_out, heads, (2, 2) if i in pool_blocks else None,
                                               window, drop_path=rates[i]))
            dim = dim_out

    def _position(self, h: int, w: int) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        tiles = [a // b for a, b in zip(pos.shape, self.pos_embed_window.shape)]
        return (pos + self.pos_embed_window.tile(tiles)).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._position(x.shape[1], x.shape[2])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """1x1 projections of each stage to ``d_model`` channels; levels in ``top_down_levels``
    also receive the nearest-upsampled coarser level."""

    def __init__(self, d_model: int, backbone_channels: Sequence[int], top_down_levels: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channels = tuple(backbone_channels)
        self.top_down_levels = tuple(top_down_levels)
        self.convs = nn.ModuleList()
        for channels in backbone_channels:
            branch = nn.Sequential()
            branch.add_module("conv", nn.Conv2d(channels, d_model, kernel_size=1))
            self.convs.append(branch)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.convs) - 1
        out: list[torch.Tensor] = [xs[0]] * (n + 1)
        previous = None
        for i in range(n, -1, -1):  # coarsest first
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and previous is not None:
                up = F.interpolate(previous.to(torch.float32), scale_factor=2.0, mode="nearest")
                previous = lateral + up
            else:
                previous = lateral
            out[i] = previous
        return out


class ImageEncoder(nn.Module):
    """Trunk + neck, keeping the three finest levels (``scalp`` drops the coarsest).

    Returns the feature maps at strides 4, 8 and 16 (finest first), each ``d_model`` wide.
    Their sine position encodings depend on the shape only: :meth:`position_encoding`.
    """

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if trunk.size.channels != neck.backbone_channels:
            raise ValueError(f"trunk widths {trunk.size.channels} do not match the neck's {neck.backbone_channels}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.neck(self.trunk(images))
        return features[: len(features) - self.scalp] if self.scalp else features

    def position_encoding(self, feature: torch.Tensor) -> torch.Tensor:
        """(1, d_model, h, w) sine encoding of a (B, d_model, h, w) feature map."""
        return sine_encoding_2d(self.neck.d_model, feature.shape[-2], feature.shape[-1], feature.device).to(feature.dtype)
