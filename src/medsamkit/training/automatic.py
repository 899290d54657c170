"""Prompt-free ("automatic") prediction with a decoder fine-tuned in automatic mode.

The decoder was trained with the prompt encoder's no-prompt embeddings, so at inference it
segments the image's single target without a box. ``medsamkit segment`` calls
:func:`predict_automatic` when no box is given and the checkpoint's sidecar says
``"automatic": true`` (:func:`medsamkit.training.export.is_automatic`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..inference.predictor import Prediction, Predictor


@torch.inference_mode()
def predict_automatic(predictor: Predictor, image: np.ndarray | None = None) -> Prediction:
    """Segment the target of ``image`` (H x W x 3 uint8 RGB; default: the predictor's current
    image) with no prompt; returns one mask (1, 1, H, W) at the original size."""
    if image is not None:
        predictor.set_image(image)
    if predictor.embedding is None:
        raise RuntimeError("give an image, or call set_image() first")
    embedding = predictor.embedding
    low_res, iou = predictor.model.decode(embedding.features)
    logits = predictor.geometry.logits_to_original(low_res.float(), embedding.frame).cpu().numpy()
    return Prediction(masks=logits > 0, logits=logits, iou_scores=iou.float().cpu().numpy(),
                      low_res_logits=low_res.cpu())
