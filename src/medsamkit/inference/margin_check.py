"""Masks too close to call on a bf16 image embedding are decoded again from the fp32 one.

OpenVINO bf16 runs LiteMedSAM's image encoder about 2x faster than fp32. It perturbs the embedding
slightly, and that moves every decoder logit a little. Where a mask is sure (its logits far from 0)
the mask does not change. Where many pixels sit near 0, the mask can lose or gain a large part.
On 1 of the 880 Kvasir-SEG images the bf16 mask fell to Dice 0.876 against the official one
(``docs/benchmarks.md``).

:class:`MarginCheck` finds those masks from the bf16 decoder logits alone: the pixels of the
resized image (padding excluded) whose low-resolution logit is within ``band`` of 0, as a fraction
of the mask's pixels. Above ``max_fraction`` the predictor encodes the image again in fp32 and
decodes that prompt from the fp32 embedding. The thresholds were set on the 880 Kvasir-SEG images
(``benchmarks/margin_check.py``, docs/benchmarks.md): the outlier's fraction is 0.64, the next
ones' 0.36 and below; at 0.25, 12 images (1.4%) are re-checked and none ends below Dice 0.95
against the official masks. Torch-free: the fast path (:mod:`~medsamkit.inference.fast2d`) uses
it too.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..preprocessing.frames import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MarginCheck:
    """Which masks decoded from an approximate (bf16) embedding must be decoded again in fp32.

    band: a low-resolution logit with ``|logit| < band`` counts as near the threshold.
    max_fraction: near pixels / mask pixels above which a mask is decoded again.
    """

    band: float = 1.0
    max_fraction: float = 0.25

    def near_fraction(self, low_res: np.ndarray, frame: Frame) -> np.ndarray:
        """(N, S', S') low-resolution logits of N prompts -> (N,) near pixels / mask pixels, over
        the resized image's part of the decoder output (S' may differ from the input side S)."""
        low_res = np.asarray(low_res, np.float32)
        if low_res.ndim != 3:
            raise ValueError(f"expected (N, S, S) logits, got shape {low_res.shape}")
        side = low_res.shape[-1]
        nh, nw = (max(1, round(v * side / frame.input_size)) for v in frame.resized_size)
        inside = low_res[:, :nh, :nw]
        near = (np.abs(inside) < self.band).sum(axis=(1, 2))
        area = np.maximum((inside > 0).sum(axis=(1, 2)), 1)
        return near / area

    def uncertain(self, low_res: np.ndarray, frame: Frame) -> np.ndarray:
        """(N,) bool: the prompts whose mask is too close to call."""
        return self.near_fraction(low_res, frame) > self.max_fraction


@dataclass
class FallbackTracker:
    """Whether to stop encoding in bf16: once most recent decodes needed the fp32 embedding anyway.

    On images where bf16 is often too close to call (BraTS tumour slices: 56% of prompts), encoding
    every image twice costs more than fp32 alone. After ``share`` of the last ``window`` decodes
    needed fp32, :attr:`exact_only` turns on and the predictor encodes in fp32 from then on (the
    masks are the fp32 ones either way)."""

    window: int = 8
    share: float = 0.5
    exact_only: bool = False
    _recent: deque = field(default_factory=deque, repr=False)

    def record(self, needed_exact: bool) -> None:
        self._recent.append(bool(needed_exact))
        if len(self._recent) > self.window:
            self._recent.popleft()
        if not self.exact_only and len(self._recent) == self.window \
                and sum(self._recent) >= self.share * self.window:
            self.exact_only = True
            log.info("%d of the last %d decodes needed the fp32 embedding: encoding in fp32 from now on",
                     sum(self._recent), self.window)
