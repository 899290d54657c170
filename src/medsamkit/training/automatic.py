"""Moved: prompt-free inference lives in :mod:`medsamkit.inference.automatic` (segmenting
needs no training code). This name stays for code that imported it from here."""

from __future__ import annotations

from ..inference.automatic import AutomaticSegmenter, automatic_prompts, predict_automatic

__all__ = ["AutomaticSegmenter", "automatic_prompts", "predict_automatic"]
