"""One decoding step of interactive refinement: box + clicks + previous logits -> a mask.

SAM's interactive loop (segment-anything's predictor): every update decodes the object's box,
all its clicks so far and, as the mask prompt, the low-resolution logits of its previous
prediction; the image embedding is computed once. :func:`decode_requests` runs such steps for
many objects on one embedding, batching those whose prompts have the same form (with or without
a box, the same number of clicks, with or without a mask prompt) in one decoder call, so the
result of each object does not depend on what else is decoded with it.

A single click without a box is ambiguous (a part or the whole?): as SAM recommends, the decoder
then gives its three candidate masks and the one with the highest predicted IoU is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .clicks import Click
from .predictor import ImageEmbedding, Predictor


@dataclass(frozen=True)
class DecodeRequest:
    """What to decode for one object on one image (or slice).

    Attributes:
        box: ``(x0, y0, x1, y1)`` original pixels, or None.
        clicks: the clicks on this image (their x, y; z is ignored), in order.
        mask_input: (1, 256, 256) low-resolution logits of a previous prediction, or None.
    """

    box: tuple[float, float, float, float] | None
    clicks: tuple[Click, ...] = ()
    mask_input: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.box is None and not self.clicks:
            raise ValueError("a decode request needs a box or a click")

    @property
    def multimask(self) -> bool:
        """One click and nothing else: pick the best of SAM's three candidates."""
        return self.box is None and len(self.clicks) == 1 and self.mask_input is None

    def signature(self) -> tuple[bool, int, bool]:
        return self.box is not None, len(self.clicks), self.mask_input is not None


@dataclass(frozen=True)
class MaskResult:
    """One object's mask on one image (or slice).

    Attributes:
        mask: (H, W) bool at the original size (``logits > 0``).
        logits: (H, W) float32 logits at the original size (overlaps between objects go to the
            highest logit).
        low_res_logits: (1, 256, 256) float32 decoder logits (the next step's mask prompt).
        score: the decoder's IoU estimate.
    """

    mask: np.ndarray
    logits: np.ndarray
    low_res_logits: torch.Tensor
    score: float


def decode_requests(predictor: Predictor, embedding: ImageEmbedding,
                    requests: Sequence[DecodeRequest]) -> list[MaskResult]:
    """Decode every request on ``embedding``; one decoder call per group of same-form prompts."""
    results: list[MaskResult | None] = [None] * len(requests)
    groups: dict[tuple[bool, int, bool], list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.signature(), []).append(i)
    predictor.set_embedding(embedding)
    for (has_box, n_clicks, has_mask), members in groups.items():
        chosen = [requests[i] for i in members]
        boxes = np.array([r.box for r in chosen], dtype=np.float64) if has_box else None
        points = labels = None
        if n_clicks:
            points = np.array([[(c.x, c.y) for c in r.clicks] for r in chosen], dtype=np.float64)
            labels = np.array([[c.label for c in r.clicks] for r in chosen], dtype=np.int64)
        masks = torch.stack([r.mask_input for r in chosen]) if has_mask else None
        multimask = chosen[0].multimask
        prediction = predictor.predict(boxes=boxes, points=points, point_labels=labels, mask_input=masks,
                                       multimask_output=multimask)
        best = np.argmax(prediction.iou_scores, axis=1) if multimask else np.zeros(len(chosen), dtype=np.int64)
        for row, (i, k) in enumerate(zip(members, best)):
            results[i] = MaskResult(
                mask=prediction.masks[row, k],
                logits=prediction.logits[row, k],
                low_res_logits=prediction.low_res_logits[row, k:k + 1].float().clone(),
                score=float(prediction.iou_scores[row, k]),
            )
    return results  # type: ignore[return-value]
