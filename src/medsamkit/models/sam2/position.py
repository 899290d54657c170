"""Position encodings of SAM2: 2D sine (image features, memories), 1D sine (object-pointer
time offsets) and axial rotary encodings (memory attention).

Numerics follow facebookresearch/sam2 (``sam2/modeling/position_encoding.py`` and
``sam2_utils.get_1d_sine_pe``) so the parity targets in ../shared/data/parity/ are met; the
code is ours. Nothing here has weights.
"""

from __future__ import annotations

import math

import torch


def sine_encoding_2d(channels: int, height: int, width: int, device: torch.device | None = None,
                     temperature: float = 10000.0) -> torch.Tensor:
    """(1, channels, height, width) DETR-style sine encoding of a feature grid.

    Row and column indices 1..H and 1..W are normalised to (0, 2*pi]; the first half of the
    channels encodes y, the second x, each as interleaved (sin, cos) pairs.
    """
    if channels % 2:
        raise ValueError(f"the sine encoding needs an even number of channels, got {channels}")
    half = channels // 2
    scale, eps = 2 * math.pi, 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device).view(-1, 1).expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device).view(1, -1).expand(height, width)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    pos_x = x[..., None] / dim_t
    pos_y = y[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).unsqueeze(0)


def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N,) positions -> (N, dim): sines in the first half, cosines in the second."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    angles = positions.unsqueeze(-1) / dim_t
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def axial_rope_frequencies(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> torch.Tensor:
    """(end_x * end_y, dim // 2) complex rotations of an end_y x end_x grid in raster order.

    The first dim // 4 frequencies rotate by the column index, the next dim // 4 by the row.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles_x = torch.outer(t_x, freqs)
    angles_y = torch.outer(t_y, freqs)
    rot_x = torch.polar(torch.ones_like(angles_x), angles_x)
    rot_y = torch.polar(torch.ones_like(angles_y), angles_y)
    return torch.cat([rot_x, rot_y], dim=-1)


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of (B, heads, N, C) by (N, C/2) complex ``freqs``."""
    as_complex = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(as_complex * freqs).flatten(3).type_as(x)


def apply_rope(q: torch.Tensor, k: torch.Tensor, freqs: torch.Tensor, repeat_for_k: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary encoding of queries (B, h, Nq, C) and keys (B, h, Nk, C).

    ``freqs`` holds one rotation per query position. With ``repeat_for_k`` the keys are
    ``Nk / Nq`` stacked copies of the query grid (several memory frames) and the rotations are
    tiled accordingly.
    """
    q_out = _rotate(q, freqs)
    if k.shape[-2] == 0:
        return q_out, k
    if repeat_for_k:
        repeats = k.shape[-2] // q.shape[-2]
        freqs = freqs.repeat(repeats, 1)
    return q_out, _rotate(k, freqs)
