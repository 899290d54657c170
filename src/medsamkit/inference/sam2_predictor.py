"""Box/point-prompted prediction on one 2D image with SAM2, SAM2.1 or MedSAM2.

The same contract as :class:`medsamkit.inference.predictor.Predictor` (``embed``,
``set_image``, ``set_embedding``, ``predict`` -> :class:`Prediction`), so callers do not care
which family they hold. The decoding follows facebookresearch/sam2 ``SAM2ImagePredictor``: a box
is two points labelled 2 and 3 placed before the clicks, the image features get the learned
``no_mem_embed``, the single-mask output falls back to the best multimask output when unstable,
and low-resolution logits are resized straight to the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sam2.base import FrameFeatures, SAM2Base
from ..preprocessing.geometry import Frame, ModelGeometry
from .predictor import Prediction
from .segment2d_io import check_rgb_image

#: An image encoder: (B, 3, S, S) normalised images -> (vision, stride-4, stride-8) features
#: (see :meth:`SAM2Base.encode`); an ONNX or OpenVINO engine can stand in for the model's own.
SAM2Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SAM2Embedding:
    """The encoder output of one image and where the image sits in the model input."""

    features: FrameFeatures
    frame: Frame


class SAM2Predictor:
    """Encode an image once, then segment any number of prompts on it in one decoder call.

    Args:
        model: a :class:`~medsamkit.models.sam2.base.SAM2Base` in eval mode.
        geometry: :class:`~medsamkit.preprocessing.geometry.SAM2Geometry` (or MedSAM2's).
        encoder: replaces ``model.encode`` (an engine with the same three outputs).
    """

    family = "sam2"

    def __init__(self, model: SAM2Base, geometry: ModelGeometry, encoder: SAM2Encoder | None = None) -> None:
        self.model = model
        self.geometry = geometry
        self.encoder = encoder if encoder is not None else model.encode
        self.embedding: SAM2Embedding | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_tensor(self, tensor: torch.Tensor) -> FrameFeatures:
        """Features of (B, 3, S, S) model-input images."""
        vision, s0, s1 = self.encoder(tensor.to(self.device))
        dev = self.device
        return FrameFeatures(vision.to(dev), (s0.to(dev), s1.to(dev)))

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> SAM2Embedding:
        """Run the encoder on an H x W x 3 uint8 RGB image (does not change the predictor's state)."""
        check_rgb_image(image)
        tensor, frame = self.geometry.prepare_image(image)
        return SAM2Embedding(self.encode_tensor(tensor), frame)

    def set_image(self, image: np.ndarray) -> SAM2Embedding:
        """Encode ``image`` and keep the embedding for the following :meth:`predict` calls."""
        self.embedding = self.embed(image)
        return self.embedding

    def set_embedding(self, embedding: SAM2Embedding) -> None:
        """Use a precomputed embedding (from :meth:`embed` or a cache)."""
        self.embedding = embedding

    def _prompt_points(self, boxes: np.ndarray | None, points: np.ndarray | None,
                       point_labels: np.ndarray | None, frame: Frame) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Box corners (labels 2, 3) then clicks, in model-input pixels: ((N, P, 2), (N, P))."""
        coords, labels = [], []
        if boxes is not None:
            box_t = self.geometry.boxes_to_model(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), frame)
            coords.append(box_t.reshape(-1, 2, 2))
            labels.append(torch.tensor([[2, 3]], dtype=torch.int64).repeat(box_t.shape[0], 1))
        if points is not None:
            pts = np.asarray(points, dtype=np.float64)
            pts = pts[None] if pts.ndim == 2 else pts
            lab = np.ones(pts.shape[:2]) if point_labels is None else np.asarray(point_labels).reshape(pts.shape[:2])
            coords.append(self.geometry.points_to_model(pts, frame))
            labels.append(torch.as_tensor(lab, dtype=torch.int64))
        if not coords:
            return None
        if len(coords) == 2 and coords[0].shape[0] != coords[1].shape[0]:
            raise ValueError("boxes and points must describe the same number of prompts")
        dev = self.device
        return torch.cat(coords, dim=1).to(dev), torch.cat(labels, dim=1).to(dev)

    @torch.inference_mode()
    def predict(
        self,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> Prediction:
        """Segment N prompts in one decoder call.

        Args:
            boxes: (N, 4) x0, y0, x1, y1 in original pixels.
            points: (N, K, 2) x, y in original pixels, or (K, 2) for a single prompt.
            point_labels: (N, K) 1 foreground, 0 background (default all 1).
            mask_input: (N, 1, S/4, S/4) low-resolution logits from an earlier prediction
                (other sizes are resized).
            multimask_output: return 3 candidate masks per prompt instead of 1.
        """
        if self.embedding is None:
            raise RuntimeError("call set_image() or set_embedding() before predict()")
        frame = self.embedding.frame
        prompt = self._prompt_points(boxes, points, point_labels, frame)
        if prompt is None and mask_input is None:
            raise ValueError("give at least one prompt: boxes, points or mask_input")
        n = prompt[0].shape[0] if prompt is not None else mask_input.shape[0]
        low = self.model.sam_prompt_encoder.mask_input_size
        if n == 0:
            h, w = frame.original_size
            empty = np.zeros((0, 1, h, w), np.float32)
            return Prediction(empty > 0, empty, np.zeros((0, 1), np.float32), torch.zeros(0, 1, *low))
        masks_t = None
        if mask_input is not None:
            masks_t = mask_input.to(self.device, torch.float32)
            if tuple(masks_t.shape[-2:]) != tuple(low):
                masks_t = F.interpolate(masks_t, size=low, mode="bilinear", align_corners=False, antialias=True)
        model = self.model
        sparse, dense = model.sam_prompt_encoder(points=prompt, boxes=None, masks=masks_t)
        features = self.embedding.features
        image_embed = features.vision + model.no_mem_embed.view(1, -1, 1, 1)
        out = model.sam_mask_decoder(image_embed, model.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                     multimask_output, features.high_res)
        low_res = out.masks.float()
        logits = self.geometry.logits_to_original(low_res, frame).cpu().numpy()
        return Prediction(
            masks=logits > 0,
            logits=logits,
            iou_scores=out.iou.float().cpu().numpy(),
            low_res_logits=torch.clamp(low_res, -32.0, 32.0).cpu(),
        )
