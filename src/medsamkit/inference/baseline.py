"""Prediction with a baseline trained from scratch (``medsamkit fit`` with ``model.name: unet`` or
``prompted-resnet``), behind the same ``set_image`` / ``predict`` interface as the SAM-family
:class:`~medsamkit.inference.predictor.Predictor`, so that ``medsamkit segment --checkpoint
model.pth`` runs the baselines on images and folders exactly as it runs the fine-tuned models,
and baselines and fine-tuned models are evaluated on the same footing.

The image goes through the preprocessing family the baseline was trained with (the export
sidecar's ``family``: resize, min-max, pad); the logits come back to the original size through
the same geometry. The U-Net takes no box (the prompt-free baseline); the prompted ResNet takes
each box as an extra input channel, one forward pass per box, batched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..preprocessing.geometry import Frame, ModelGeometry, geometry_for
from .predictor import Prediction
from .segment2d_io import check_rgb_image


@dataclass
class BaselinePredictor:
    """A baseline network plus its geometry; :meth:`set_image` then :meth:`predict`.

    Args:
        net: the baseline in eval mode, taking (B, 3, S, S) images and (B, 4) model boxes.
        geometry: the preprocessing family it was trained with.
        name: the baseline's registry name (for messages).
    """

    net: nn.Module
    geometry: ModelGeometry
    name: str = "baseline"
    _image: torch.Tensor | None = field(default=None, init=False, repr=False)
    _frame: Frame | None = field(default=None, init=False, repr=False)

    @property
    def uses_box(self) -> bool:
        return bool(getattr(self.net, "uses_box", False))

    @property
    def device(self) -> torch.device:
        param = next(self.net.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def set_image(self, image: np.ndarray) -> None:
        """Keep the model input of an H x W x 3 uint8 RGB image for the following predictions."""
        check_rgb_image(image)
        self._image, self._frame = self.geometry.prepare_image(image)

    @torch.inference_mode()
    def predict(self, boxes: np.ndarray | None = None, **prompts: object) -> Prediction:
        """One mask per box (the prompted ResNet), or the image's single target without a box
        (the U-Net). Point and mask prompts do not exist for the baselines."""
        if self._image is None or self._frame is None:
            raise RuntimeError("call set_image() before predict()")
        unsupported = [k for k, v in prompts.items() if v is not None and v is not False]
        if unsupported:
            raise InputError(None, f"the {self.name} baseline takes no {', '.join(unsupported)} prompt")
        if self.uses_box:
            if boxes is None or len(boxes) == 0:
                raise InputError(None, f"the {self.name} baseline needs a box for every object")
            model_boxes = self.geometry.boxes_to_model(np.asarray(boxes, np.float64).reshape(-1, 4), self._frame)
        else:
            if boxes is not None and len(boxes) > 0:
                raise InputError(None, f"the {self.name} baseline segments without a box: leave out the boxes")
            model_boxes = torch.zeros((1, 4))
        dev = self.device
        n = len(model_boxes)
        images = self._image.to(dev).expand(n, -1, -1, -1)
        low_res = self.net(images, model_boxes.to(dev)).float()
        logits = self.geometry.logits_to_original(low_res, self._frame).cpu().numpy()
        return Prediction(masks=logits > 0, logits=logits, iou_scores=np.full((n, 1), np.nan, np.float32),
                          low_res_logits=low_res.cpu())


def load_baseline_predictor(checkpoint: str | os.PathLike, device: torch.device) -> BaselinePredictor:
    """The exported baseline at ``checkpoint`` (strict load), on ``device``, with its geometry."""
    from ..training.export import load_baseline

    net, meta = load_baseline(checkpoint)
    family = meta.get("family") or "litemedsam"
    return BaselinePredictor(net.to(device), geometry_for(family), name=str(meta["model"]))
