"""Deterministic stand-in weights, for parity checks and benchmarks without the real files.

The recipe of ../shared/docs/parity.md: every key seeds its own generator with the CRC32 of its
name, so a model built here and the official code given the same recipe hold identical weights,
whatever the key order. Matrices are scaled by 1/sqrt(fan-in), 1-D ``*.weight`` tensors (norm
scales) are 1 + 0.1 * noise, everything else 0.1 * noise. Outputs of such weights are meaningless
as segmentations; they pin down architecture, key layout and pre/post-processing exactly.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import torch


def standin_tensor(key: str, shape: Sequence[int]) -> torch.Tensor:
    """The stand-in value of one state_dict entry."""
    shape = tuple(int(s) for s in shape)
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    t = torch.randn(shape, generator=generator, dtype=torch.float32)
    if len(shape) >= 2:
        return t / math.sqrt(math.prod(shape[1:]))
    if len(shape) == 1 and key.endswith(".weight"):
        return 1 + 0.1 * t
    return 0.1 * t


def standin_state_dict(layout: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Stand-in weights for a layout (key -> shape, e.g. a model's ``state_dict()`` or a
    ../shared/data/parity/keys/*.json file)."""
    return {key: standin_tensor(key, shape) for key, shape in layout.items()}
