"""Prompted segmentation of 2D images: file -> intensity scheme -> session -> label map -> PNG.

This is the library behind ``medsamkit segment IMAGE`` and the folder mode; the CLI only
parses arguments and prints. Prompts (boxes, clicks) go through an interactive
:class:`~medsamkit.inference.session.Session2D`: a file's clicks are replayed in order exactly as
if they had been clicked, and boxes without clicks are decoded in one batched call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .predictor import ImageEmbedding, Prediction, Predictor
from .prompts import BoxPrompt
from .segment2d_io import RgbReader, label_map_from_logits, output_labels, validate_boxes, write_outputs
from .session import RefineConfig, Session2D

log = logging.getLogger(__name__)


def label_map_from_prediction(prediction: Prediction, labels: Sequence[int]) -> np.ndarray:
    """Combine N single-mask predictions into one (H, W) label map.

    A pixel takes the label of the object whose logit there is highest among the objects that
    claim it (logit > 0), so overlapping boxes split the overlap instead of the last box winning.
    """
    logits = prediction.logits[:, 0]  # (N, H, W)
    return label_map_from_logits(list(logits), labels, logits.shape[1:])


@dataclass
class Segmenter2D(RgbReader):
    """A predictor plus the intensity scheme options; segments images box by box.

    Args:
        predictor: model + geometry with the embedding cache.
        modality: intensity scheme name (see :func:`medsamkit.preprocessing.intensity.select_scheme`).
        window: CT window preset or "L,W".
        refine: how clicks update an object (mask prompt or not).
    """

    predictor: Predictor
    modality: str | None = None
    window: str | None = None
    refine: RefineConfig = field(default_factory=RefineConfig)
    _last_scheme: str | None = field(default=None, init=False, repr=False)

    #: the folder runner (:func:`~medsamkit.inference.batch.run_plan`) may read and encode the next
    #: images while this one is decoded, when the predictor's encoder takes several at once
    prefetch: ClassVar[bool] = True

    def segment(
        self, rgb: np.ndarray, boxes: np.ndarray, labels: Sequence[int | None] | None = None, source: str | None = None,
        embedding: ImageEmbedding | None = None,
    ) -> tuple[np.ndarray, Prediction]:
        """Segment all ``boxes`` on one image with one encoder pass and one decoder call."""
        boxes = validate_boxes(boxes, rgb.shape[:2], source)
        labels = list(labels) if labels is not None else [None] * len(boxes)
        return self.segment_prompts(rgb, [BoxPrompt(tuple(b), label=lab) for b, lab in zip(boxes, labels)], source,
                                    embedding)

    def segment_prompts(self, rgb: np.ndarray, prompts: Sequence[BoxPrompt], source: str | None = None,
                        embedding: ImageEmbedding | None = None) -> tuple[np.ndarray, Prediction]:
        """Segment the objects ``prompts`` (boxes and/or clicks) on one image: one encoder pass
        (none when ``embedding``, the image's, is given), the boxes in one decoder call, then the
        clicks replayed in order (a :class:`~medsamkit.inference.session.Session2D`)."""
        if len(prompts) == 0:
            raise InputError(source, "no box given for this image")
        labels = output_labels(len(prompts), [p.label for p in prompts])
        if not hasattr(self.predictor, "embed"):  # a baseline: boxes only, its own predict
            if any(p.points or p.box is None for p in prompts):
                raise InputError(source, "this model takes boxes only: points need a SAM-family model")
            boxes = validate_boxes(np.array([p.box for p in prompts]), rgb.shape[:2], source)
            self.predictor.set_image(rgb)
            prediction = self.predictor.predict(boxes=boxes)
            return label_map_from_prediction(prediction, labels), prediction
        session = Session2D(self.predictor, rgb, self.refine, embedding)
        session.add_objects([(p.box, p.points, lab) for p, lab in zip(prompts, labels)], source=source)
        objects = session.objects
        prediction = Prediction(
            masks=np.stack([o.result.mask for o in objects])[:, None],
            logits=np.stack([o.result.logits for o in objects])[:, None],
            iou_scores=np.array([[o.result.score] for o in objects], np.float32),
            low_res_logits=torch.stack([o.result.low_res_logits for o in objects]),
        )
        return session.label_map(), prediction

    def segment_file(
        self,
        image_path: str | Path,
        boxes: np.ndarray | Sequence[BoxPrompt],
        output: str | Path,
        labels: Sequence[int | None] | None = None,
        overlay: str | Path | None = None,
        *,
        rgb: np.ndarray | None = None,
        embedding: ImageEmbedding | None = None,
    ) -> np.ndarray:
        """Read, segment and write the mask (and optionally the overlay) atomically.

        ``boxes``: an (N, 4) array (with ``labels``) or :class:`BoxPrompt` objects (boxes and/or
        clicks, their own labels). ``rgb`` (from :meth:`load_rgb`) and ``embedding`` (its
        encoding) skip the reading and the encoder: the folder pipeline does both ahead.
        """
        image_path = Path(image_path)
        if rgb is None:
            rgb = self.load_rgb(image_path, output, overlay)
        prompts = boxes if _are_prompts(boxes) else None
        if prompts is not None:
            label_map, _ = self.segment_prompts(rgb, prompts, source=str(image_path), embedding=embedding)
            ids = output_labels(len(prompts), [p.label for p in prompts])
            drawn = [(p.box, lab) for p, lab in zip(prompts, ids) if p.box is not None]
            clicks = [(c.x, c.y, c.label) for p in prompts for c in p.points]
        else:
            label_map, _ = self.segment(rgb, boxes, labels, source=str(image_path), embedding=embedding)
            ids = output_labels(len(boxes), labels)
            drawn = list(zip(np.asarray(boxes).reshape(-1, 4), ids))
            clicks = []
        write_outputs(output, label_map, overlay, rgb, drawn, clicks)
        return label_map


def _are_prompts(boxes: object) -> bool:
    return isinstance(boxes, (list, tuple)) and len(boxes) > 0 and all(isinstance(p, BoxPrompt) for p in boxes)
