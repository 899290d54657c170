"""Box-prompted segmentation of 2D images: file -> intensity scheme -> predictor -> label map -> PNG.

This is the library behind ``medsamkit segment IMAGE`` and the folder mode; the CLI only
parses arguments and prints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.overlay import draw_overlay
from ..io.image2d import Image2D, read_image_2d
from ..io.writers import check_not_input, write_png
from ..preprocessing.intensity import select_scheme, to_rgb_uint8
from .predictor import Prediction, Predictor, validate_boxes

log = logging.getLogger(__name__)


def label_map_from_prediction(prediction: Prediction, labels: Sequence[int]) -> np.ndarray:
    """Combine N single-mask predictions into one (H, W) label map.

    A pixel takes the label of the object whose logit there is highest among the objects that
    claim it (logit > 0), so overlapping boxes split the overlap instead of the last box winning.
    """
    logits = prediction.logits[:, 0]  # (N, H, W)
    n, h, w = logits.shape
    dtype = np.uint8 if max(labels, default=0) <= 255 else np.uint16
    if n == 0:
        return np.zeros((h, w), dtype)
    best = logits.argmax(axis=0)
    claimed = logits.max(axis=0) > 0
    lut = np.asarray(labels, dtype=dtype)
    return np.where(claimed, lut[best], 0).astype(dtype)


def output_labels(n_boxes: int, labels: Sequence[int | None] | None) -> list[int]:
    """Label value of each box in the written mask: one unlabelled box -> 255 (a 0/255 mask);
    otherwise the given label or the box's 1-based position."""
    labels = list(labels) if labels is not None else [None] * n_boxes
    if n_boxes == 1 and labels[0] is None:
        return [255]
    return [lab if lab is not None else i + 1 for i, lab in enumerate(labels)]


@dataclass
class Segmenter2D:
    """A predictor plus the intensity scheme options; segments images box by box.

    Args:
        predictor: model + geometry with the embedding cache.
        modality: intensity scheme name (see :func:`medsamkit.preprocessing.intensity.select_scheme`).
        window: CT window preset or "L,W".
    """

    predictor: Predictor
    modality: str | None = None
    window: str | None = None
    _last_scheme: str | None = field(default=None, init=False, repr=False)

    def to_rgb(self, image: Image2D) -> np.ndarray:
        """Apply the intensity scheme for the image's kind -> H x W x 3 uint8.

        The scheme is logged at INFO when it first applies or changes (not once per image).
        """
        scheme, description = select_scheme(image.kind, self.modality, self.window)
        if description != self._last_scheme:
            log.info("intensity scheme: %s", description)
            self._last_scheme = description
        return to_rgb_uint8(scheme(image.pixels))

    def segment(
        self, rgb: np.ndarray, boxes: np.ndarray, labels: Sequence[int | None] | None = None, source: str | None = None
    ) -> tuple[np.ndarray, Prediction]:
        """Segment all ``boxes`` on one image with one encoder pass and one decoder call."""
        boxes = validate_boxes(boxes, rgb.shape[:2], source)
        if len(boxes) == 0:
            raise InputError(source, "no box given for this image")
        self.predictor.set_image(rgb)
        prediction = self.predictor.predict(boxes=boxes)
        return label_map_from_prediction(prediction, output_labels(len(boxes), labels)), prediction

    def segment_file(
        self,
        image_path: str | Path,
        boxes: np.ndarray,
        output: str | Path,
        labels: Sequence[int | None] | None = None,
        overlay: str | Path | None = None,
    ) -> np.ndarray:
        """Read, segment and write the mask (and optionally the overlay) atomically."""
        image_path = Path(image_path)
        for out in (output, overlay):
            if out is not None:
                check_not_input(out, [image_path])
        if overlay is not None and Path(overlay).resolve() == Path(output).resolve():
            raise InputError(overlay, "the overlay would replace the mask: give the overlay another path")
        image = read_image_2d(image_path)
        rgb = self.to_rgb(image)
        label_map, _ = self.segment(rgb, boxes, labels, source=str(image_path))
        write_png(output, label_map)
        if overlay is not None:
            write_png(overlay, draw_overlay(rgb, label_map, np.asarray(boxes).reshape(-1, 4), output_labels(len(boxes), labels)))
        return label_map
