"""Memory attention: the current frame's features attend to themselves and to the memories of
earlier frames (spatial memories and object pointers), with rotary position encodings.

Keys are the official ``memory_attention.*`` ones (facebookresearch/sam2
``sam2/modeling/memory_attention.py`` and ``RoPEAttention``); the code is ours. Tensors are
batch-first here: (B, tokens, C). Dropout is active in training mode (MedSAM2 trains with 0.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .position import apply_rope, axial_rope_frequencies


class RoPEAttention(nn.Module):
    """Multi-head attention with axial rotary encodings of a square token grid.

    Args:
        dim: query width (and output width).
        num_heads: attention heads.
        kv_in_dim: width of keys and values (64 for memories), default ``dim``.
        rope_k_repeat: keys are several stacked grids of the query's size (memory frames).
        feat_sizes: the (x, y) grid of the rotations; a query of another square size gets
            its own grid, as the reference recomputes it (rotations are made on first use).
        dropout: attention dropout in training mode.
        theta: rotary base.
    """

    def __init__(self, dim: int, num_heads: int = 1, kv_in_dim: int | None = None, rope_k_repeat: bool = False,
                 feat_sizes: tuple[int, int] = (64, 64), dropout: float = 0.0, theta: float = 10000.0) -> None:
        super().__init__()
        kv_in_dim = kv_in_dim or dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_in_dim, dim)
        self.v_proj = nn.Linear(kv_in_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout_p = dropout
        self.rope_k_repeat = rope_k_repeat
        self.theta = theta
        self.head_dim = dim // num_heads
        # rotations per token count; not weights, so not in the state_dict
        self.feat_sizes = tuple(feat_sizes)
        self._freqs: dict[tuple[int, str], torch.Tensor] = {}

    def _frequencies(self, tokens: int, device: torch.device) -> torch.Tensor:
        key = (tokens, str(device))
        if key not in self._freqs:
            if tokens == self.feat_sizes[0] * self.feat_sizes[1]:
                end_x, end_y = self.feat_sizes
            else:  # another square grid, as the reference recomputes it
                end_x = end_y = int(round(tokens ** 0.5))
                if end_x * end_y != tokens:
                    raise ValueError(f"rotary encoding needs a square grid of tokens, got {tokens}")
            with torch.device("cpu"):
                freqs = axial_rope_frequencies(self.head_dim, end_x, end_y, self.theta)
            self._freqs[key] = freqs.to(device)
        return self._freqs[key]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        """q (B, Nq, dim), k and v (B, Nk, kv_in_dim); the last ``num_k_exclude_rope`` keys
        (object pointers) are not rotated."""
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        if q.shape[-2] != k.shape[-2] and not self.rope_k_repeat:
            raise ValueError("keys of another length than the queries need rope_k_repeat")
        freqs = self._frequencies(q.shape[-2], q.device)
        rotated = k.shape[-2] - num_k_exclude_rope
        q, k_rot = apply_rope(q, k[:, :, :rotated], freqs, self.rope_k_repeat)
        if num_k_exclude_rope:
            k = torch.cat([k_rot, k[:, :, rotated:]], dim=2)
        else:
            k = k_rot
        dropout = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class MemoryAttentionLayer(nn.Module):
    """Self-attention, cross-attention to the memories (keys carry their position encoding),
    then a ReLU MLP; pre-norm with residuals."""

    def __init__(self, self_attention: RoPEAttention, cross_attention: RoPEAttention, d_model: int = 256,
                 dim_feedforward: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_k_exclude_rope: int = 0) -> torch.Tensor:
        x = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(x, x, x))
        x = self.norm2(tgt)
        x = self.cross_attn_image(x, memory + memory_pos, memory, num_k_exclude_rope=num_k_exclude_rope)
        tgt = tgt + self.dropout2(x)
        x = self.linear2(self.dropout(F.relu(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(x)


class MemoryAttention(nn.Module):
    """``layers`` memory-attention layers and a final LayerNorm."""

    def __init__(self, layers: list[MemoryAttentionLayer], d_model: int = 256) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                num_obj_ptr_tokens: int = 0) -> torch.Tensor:
        """curr (B, HW, C) features of the current frame and their position encoding; memory
        (B, M, C_mem) and its encoding, the last ``num_obj_ptr_tokens`` being object pointers.
        Returns (B, HW, C)."""
        out = curr + 0.1 * curr_pos
        for layer in self.layers:
            out = layer(out, memory, memory_pos, num_k_exclude_rope=num_obj_ptr_tokens)
        return self.norm(out)


def build_memory_attention(d_model: int = 256, mem_dim: int = 64, num_layers: int = 4,
                           feat_sizes: tuple[int, int] = (64, 64), dropout: float = 0.1) -> MemoryAttention:
    """The memory attention of every SAM2 configuration (RoPE grid ``feat_sizes``: 64x64 at
    1024 px, 32x32 for MedSAM2 at 512 px)."""
    layers = [
        MemoryAttentionLayer(
            RoPEAttention(d_model, 1, feat_sizes=feat_sizes, dropout=dropout),
            RoPEAttention(d_model, 1, kv_in_dim=mem_dim, rope_k_repeat=True, feat_sizes=feat_sizes, dropout=dropout),
            d_model, 2048, dropout,
        )
        for _ in range(num_layers)
    ]
    return MemoryAttention(layers, d_model)
