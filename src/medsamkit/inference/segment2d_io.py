"""The torch-free parts of 2D segmentation: reading an image through its intensity scheme,
checking boxes and outputs, combining object logits into a label map, writing the results.

:class:`~medsamkit.inference.segment2d.Segmenter2D` (torch) and the CLI's fast path
(:class:`~medsamkit.inference.fast2d.FastSegmenter2D`, no torch) share them, so both read,
label and write alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..evaluation.overlay import overlay_picture
from ..io.image2d import Image2D, read_image_2d
from ..io.writers import check_not_input, image_format, write_image
from ..preprocessing.intensity import select_scheme, to_rgb_uint8

log = logging.getLogger(__name__)


def validate_boxes(boxes: np.ndarray, image_size: tuple[int, int], source: str | None = None) -> np.ndarray:
    """Check (N, 4) pixel boxes x0, y0, x1, y1 against an (H, W) image; returns float64 boxes.

    A box that reaches past the image (as read off a viewer, or with a negative corner) is
    clipped to it with a warning; only a box with no overlap with the image is refused.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    h, w = image_size
    out = boxes.copy()
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        text = ",".join(f"{v:g}" for v in box)
        which = f"box {text}" if len(boxes) == 1 else f"box {i + 1} ({text})"
        if not np.all(np.isfinite(box)):
            raise InputError(source, f"{which} has a non-finite coordinate")
        if x1 < x0 or y1 < y0:
            raise InputError(source, f"{which} is inverted (need x0 <= x1 and y0 <= y1)")
        if x1 == x0 or y1 == y0:
            raise InputError(source, f"{which} has zero area")
        clipped = np.array([max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            raise InputError(source, f"{which} lies outside the {w}x{h} image (x 0..{w}, y 0..{h}): "
                                     "it does not overlap the image")
        if not np.array_equal(clipped, box):
            log.warning("%s%s reaches past the %dx%d image; clipped to %s", f"{source}: " if source else "",
                        which, w, h, ",".join(f"{v:g}" for v in clipped))
            out[i] = clipped
    return out


def check_rgb_image(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is what the predictors take: H x W x 3 uint8 RGB."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")


def label_map_from_logits(logits: Sequence[np.ndarray], labels: Sequence[int],
                          shape: tuple[int, ...]) -> np.ndarray:
    """Combine per-object logits (each of ``shape``) into one label map.

    A pixel takes the label of the object whose logit there is highest among the objects that
    claim it (logit > 0). uint8 for labels up to 255, else uint16.
    """
    dtype = np.uint8 if max(labels, default=0) <= 255 else np.uint16
    if len(logits) == 0:
        return np.zeros(shape, dtype)
    stack = np.stack(logits)
    best = stack.argmax(axis=0)
    claimed = stack.max(axis=0) > 0
    lut = np.asarray(labels, dtype=dtype)
    return np.where(claimed, lut[best], 0).astype(dtype)


def output_labels(n_boxes: int, labels: Sequence[int | None] | None) -> list[int]:
    """Label value of each box in the written mask: one unlabelled box -> 255 (a 0/255 mask);
    otherwise the given label or the box's 1-based position."""
    labels = list(labels) if labels is not None else [None] * n_boxes
    if n_boxes == 1 and labels[0] is None:
        return [255]
    return [lab if lab is not None else i + 1 for i, lab in enumerate(labels)]


def check_outputs(image_path: Path, output: str | Path, overlay: str | Path | None) -> None:
    for out, kind in ((output, "mask"), (overlay, "picture")):
        if out is not None:
            check_not_input(out, [image_path])
            image_format(out, kind)  # before any work: the named format, lossless for masks
    if overlay is not None and Path(overlay).resolve() == Path(output).resolve():
        raise InputError(overlay, "the overlay would replace the mask: give the overlay another path")



class RgbReader:
    """Reads 2D images through the intensity scheme of ``self.modality`` and ``self.window``
    (a mixin: the class using it has those attributes and ``_last_scheme``)."""

    modality: str | None
    window: str | None
    _last_scheme: str | None

    def to_rgb(self, image: Image2D) -> np.ndarray:
        """Apply the intensity scheme for the image's kind -> H x W x 3 uint8.

        The scheme is logged at INFO when it first applies or changes (not once per image).
        """
        scheme, description = select_scheme(image.kind, self.modality, self.window)
        if description != self._last_scheme:
            log.info("intensity scheme: %s", description)
            self._last_scheme = description
        return to_rgb_uint8(scheme(image.pixels))

    def load_rgb(self, image_path: str | Path, output: str | Path, overlay: str | Path | None = None) -> np.ndarray:
        """Check that the outputs are writable formats that replace no input, then read the image and
        apply the intensity scheme -> H x W x 3 uint8."""
        image_path = Path(image_path)
        check_outputs(image_path, output, overlay)
        return self.to_rgb(read_image_2d(image_path))


def write_outputs(output: str | Path, label_map: np.ndarray, overlay: str | Path | None, rgb: np.ndarray,
                  drawn: Sequence[tuple[Sequence[float], int]], clicks: Sequence[tuple[float, float, int]] = ()) -> None:
    """Write the mask (atomically) and, with ``overlay``, the picture with the masks, the
    ``drawn`` (box, label) pairs and the clicks."""
    write_image(output, label_map, "mask")
    if overlay is not None:
        picture = overlay_picture(rgb, label_map, [b for b, _ in drawn], [lab for _, lab in drawn], clicks=list(clicks))
        write_image(overlay, picture, "picture")
