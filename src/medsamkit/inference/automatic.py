"""Prompt-free ("automatic") prediction with a decoder fine-tuned in automatic mode.

The decoder was trained with the prompt encoder's no-prompt embeddings, so at inference it
segments the image's single target without a box. ``medsamkit segment`` calls
:func:`predict_automatic` when no box is given and the checkpoint's sidecar says
``"automatic": true`` (:func:`medsamkit.training.export.is_automatic`), through
:class:`AutomaticSegmenter` (single images and folders, with the usual resume and overlays).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .baseline import BaselinePredictor
from .batch import list_images
from .predictor import Prediction, Predictor
from .prompts import BoxPrompt
from .segment2d import Segmenter2D, label_map_from_prediction, output_labels


@torch.inference_mode()
def predict_automatic(predictor: Predictor | BaselinePredictor, image: np.ndarray | None = None) -> Prediction:
    """Segment the target of ``image`` (H x W x 3 uint8 RGB; default: the predictor's current
    image) with no prompt; returns one mask (1, 1, H, W) at the original size. A prompt-free
    baseline (the U-Net) works the same way."""
    if isinstance(predictor, BaselinePredictor):
        if image is not None:
            predictor.set_image(image)
        return predictor.predict()
    if image is not None:
        predictor.set_image(image)
    if predictor.embedding is None:
        raise RuntimeError("give an image, or call set_image() first")
    embedding = predictor.embedding
    low_res, iou = predictor.model.decode(embedding.features)
    logits = predictor.geometry.logits_to_original(low_res.float(), embedding.frame).cpu().numpy()
    return Prediction(masks=logits > 0, logits=logits, iou_scores=iou.float().cpu().numpy(),
                      low_res_logits=low_res.cpu())


class AutomaticSegmenter(Segmenter2D):
    """A :class:`~medsamkit.inference.segment2d.Segmenter2D` that ignores boxes: every image gets
    its single target segmented without a prompt and written as a 0/255 mask (the overlay draws
    no box). Works with :func:`~medsamkit.inference.batch.segment_folder` and
    :func:`automatic_prompts`."""

    #: the folder runner encodes no image ahead for it: its model has its own predict
    prefetch = False

    def segment(self, rgb: np.ndarray, boxes: np.ndarray | None = None, labels: Sequence[int | None] | None = None,
                source: str | None = None, embedding: object = None) -> tuple[np.ndarray, Prediction]:
        prediction = predict_automatic(self.predictor, rgb)
        return label_map_from_prediction(prediction, output_labels(1, None)), prediction

    def segment_file(self, image_path: str | Path, boxes: np.ndarray | None, output: str | Path,
                     labels: Sequence[int | None] | None = None, overlay: str | Path | None = None) -> np.ndarray:
        return super().segment_file(image_path, np.zeros((0, 4)), output, None, overlay)


def automatic_prompts(folder: str | Path) -> list[BoxPrompt]:
    """One placeholder prompt per image of ``folder`` (the box is ignored by
    :class:`AutomaticSegmenter`), so the folder runner visits every image."""
    return [BoxPrompt((0.0, 0.0, 0.0, 0.0), image=path.name) for path in list_images(Path(folder))]
