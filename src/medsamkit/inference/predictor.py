"""Box/point-prompted prediction on one 2D image with a cached embedding.

The predictor holds the state (the embedding and the image's frame); the model holds none.
Setting an image runs the encoder once; every call to :meth:`Predictor.predict` then decodes
all its prompts in one batched decoder call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..models.sam import Sam
from ..preprocessing.geometry import Frame, ModelGeometry
from .margin_check import FallbackTracker, MarginCheck
from .segment2d_io import check_rgb_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageEmbedding:
    """The encoder output of one image and where the image sits in the model input.

    ``inputs``: the model input it was encoded from, kept only when the encoder is approximate
    (bf16) so that a mask too close to call can be decoded from an fp32 encoding of it."""

    features: torch.Tensor  # (1, 256, 64, 64)
    frame: Frame
    inputs: torch.Tensor | None = None


@dataclass(frozen=True)
class Prediction:
    """Masks for N prompts with K outputs each (K = 3 with multimask, else 1).

    masks: (N, K, H, W) bool at the original image size (logits > 0, i.e. sigmoid > 0.5).
    logits: (N, K, H, W) float32 logits at the original size (to resolve overlaps).
    iou_scores: (N, K) the IoU head's quality estimates.
    low_res_logits: (N, K, 256, 256) decoder logits (feed back as ``mask_input``).
    """

    masks: np.ndarray
    logits: np.ndarray
    iou_scores: np.ndarray
    low_res_logits: torch.Tensor


class Predictor:
    """Encode an image once, then segment any number of prompts on it.

    Args:
        model: a :class:`~medsamkit.models.sam.Sam` in eval mode.
        geometry: the model family's geometry (resize, normalise, map prompts and masks).
        encoder: replaces ``model.encode`` (e.g. an :class:`~medsamkit.inference.onnx_encoder.OnnxEncoder`).
        decoder: decodes box-only prompts (embedding, (N, 4) model-input boxes) -> (logits, IoU)
            instead of ``model.decode`` (an :class:`~medsamkit.inference.decoder_engine.EngineDecoder`).
        exact_encoder: with an approximate (bf16) ``encoder``, the fp32 encoder that masks too
            close to call (:class:`~medsamkit.inference.margin_check.MarginCheck`) are decoded from.
    """

    #: the model family ("sam2" for :class:`~medsamkit.inference.sam2_predictor.SAM2Predictor`)
    family = "sam"
    #: the growth of a box propagated to the next slice, model-input pixels (the registry model's,
    #: set by :func:`~medsamkit.inference.factory.make_predictor`; a ``PropagationConfig`` may override it)
    grow_px = 3
    #: whether 3D box propagation keeps an object's topology from slice to slice (the registry
    #: model's; :mod:`~medsamkit.inference.topology`; a ``PropagationConfig`` may override it)
    keep_topology = False

    def __init__(
        self, model: Sam, geometry: ModelGeometry, encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        decoder: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        exact_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.geometry = geometry
        # the image encoder to run: the model's own, or a faster equivalent (ONNX Runtime)
        self.encoder = encoder if encoder is not None else model.encode
        # boxes alone (no clicks, no mask prompt, one mask each) may go to an engine
        # (:class:`~medsamkit.inference.decoder_engine.EngineDecoder`); the rest to the model
        self.box_decoder = decoder
        self.exact_encoder = exact_encoder
        self.margin_check = MarginCheck()
        self.fallback = FallbackTracker()
        self.embedding: ImageEmbedding | None = None
        # the fp32 features of the last embedding that needed them (an interactive session asks again)
        self._exact: tuple[ImageEmbedding, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Run the encoder on an H x W x 3 uint8 RGB image (does not change the predictor's state)."""
        check_rgb_image(image)
        tensor, frame = self.geometry.prepare_image(image)
        if self._exact_only():
            return ImageEmbedding(self.exact_encoder(tensor.to(self.device)).to(self.device), frame)
        features = self.encoder(tensor.to(self.device)).to(self.device)
        return ImageEmbedding(features, frame, self._kept(tensor))

    def _exact_only(self) -> bool:
        return self.exact_encoder is not None and self.fallback.exact_only

    def _kept(self, tensor: torch.Tensor) -> torch.Tensor | None:
        return tensor.cpu() if self.exact_encoder is not None else None

    @torch.inference_mode()
    def embed_async(self, image: np.ndarray) -> Callable[[], ImageEmbedding]:
        """Start encoding ``image``; the returned function gives its :class:`ImageEmbedding`.

        With an encoder that has ``submit`` and ``slots`` (OpenVINO in throughput mode) the image
        is encoded in the background while the caller goes on (up to ``slots`` at once); with
        any other encoder it is encoded here, before returning."""
        submit = getattr(self.encoder, "submit", None)
        if submit is None or self._exact_only():
            embedding = self.embed(image)
            return lambda: embedding
        check_rgb_image(image)
        tensor, frame = self.geometry.prepare_image(image)
        pending = submit(tensor)
        kept = self._kept(tensor)
        return lambda: ImageEmbedding(pending().to(self.device), frame, kept)

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        """Encode ``image`` and keep the embedding for the following :meth:`predict` calls."""
        self.embedding = self.embed(image)
        return self.embedding

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use a precomputed embedding (from :meth:`embed` or a cache)."""
        self.embedding = embedding

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
            mask_input: (N, 1, 256, 256) low-resolution logits from an earlier prediction.
            multimask_output: return 3 candidate masks per prompt instead of 1.
        """
        if self.embedding is None:
            raise RuntimeError("call set_image() or set_embedding() before predict()")
        frame = self.embedding.frame
        dev = self.device
        box_t = None
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            box_t = self.geometry.boxes_to_model(boxes, frame).to(dev)
        point_t = None
        if points is not None:
            pts = np.asarray(points, dtype=np.float64)
            if pts.ndim == 2:
                pts = pts[None]
            labels = np.ones(pts.shape[:2]) if point_labels is None else np.asarray(point_labels).reshape(pts.shape[:2])
            point_t = (
                self.geometry.points_to_model(pts, frame).to(dev),
                torch.as_tensor(labels, dtype=torch.int64, device=dev),
            )
        if box_t is None and point_t is None and mask_input is None:
            raise ValueError("give at least one prompt: boxes, points or mask_input")
        n = box_t.shape[0] if box_t is not None else point_t[0].shape[0] if point_t is not None else mask_input.shape[0]
        if box_t is not None and point_t is not None and point_t[0].shape[0] != n:
            raise ValueError("boxes and points must describe the same number of prompts")
        if n == 0:
            h, w = frame.original_size
            empty = np.zeros((0, 1, h, w), np.float32)
            return Prediction(empty > 0, empty, np.zeros((0, 1), np.float32), torch.zeros(0, 1, 256, 256))
        masks_t = None if mask_input is None else mask_input.to(dev, torch.float32)
        prompts = (box_t, point_t, masks_t, multimask_output)
        low_res, iou = self._decode(self.embedding.features, *prompts)
        if self.exact_encoder is not None and self.embedding.inputs is not None:
            low_res, iou = self._recheck(low_res, iou, prompts)
        if self.device.type == "cpu" and self._engine_decoded(*prompts):
            # no torch op here: torch's idle threads would spin against the engine's on the next call
            logits = self.geometry.logits_to_original_numpy(low_res.float().numpy(), frame)
        else:
            logits = self.geometry.logits_to_original(low_res.float(), frame).cpu().numpy()
        return Prediction(
            masks=logits > 0,
            logits=logits,
            iou_scores=iou.float().cpu().numpy(),
            low_res_logits=low_res.cpu(),
        )

    def _engine_decoded(self, box_t: torch.Tensor | None, point_t: tuple | None, masks_t: torch.Tensor | None,
                        multimask_output: bool) -> bool:
        """True when these prompts go to the box decoder engine (plain boxes, one mask each)."""
        return self.box_decoder is not None and point_t is None and masks_t is None and box_t is not None \
            and not multimask_output

    def _decode(self, features: torch.Tensor, box_t: torch.Tensor | None, point_t: tuple | None,
                masks_t: torch.Tensor | None, multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self._engine_decoded(box_t, point_t, masks_t, multimask_output) and features.shape[0] == 1:
            low_res, iou = self.box_decoder(features, box_t)
            return low_res.to(self.device), iou.to(self.device)
        return self.model.decode(features, boxes=box_t, points=point_t, masks=masks_t,
                                 multimask_output=multimask_output)

    def _recheck(self, low_res: torch.Tensor, iou: torch.Tensor, prompts: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode again, from the fp32 encoding, the prompts whose masks are too close to call."""
        embedding = self.embedding
        assert embedding is not None and embedding.inputs is not None and self.exact_encoder is not None
        near = self.margin_check.uncertain(low_res.float().flatten(0, 1).cpu().numpy(), embedding.frame)
        redo = np.flatnonzero(near.reshape(low_res.shape[:2]).any(axis=1))
        self.fallback.record(len(redo) > 0)
        if len(redo) == 0:
            return low_res, iou
        if self._exact is None or self._exact[0] is not embedding:
            features = self.exact_encoder(embedding.inputs.to(self.device)).to(self.device)
            self._exact = (embedding, features)
        log.info("%d of %d masks too close to call on the bf16 embedding: decoded from fp32",
                 len(redo), len(low_res))
        box_t, point_t, masks_t, multimask_output = prompts  # all on self.device, as the logits
        rows = torch.from_numpy(redo).to(self.device)
        exact_low, exact_iou = self._decode(
            self._exact[1], None if box_t is None else box_t[rows],
            None if point_t is None else (point_t[0][rows], point_t[1][rows]),
            None if masks_t is None else masks_t[rows], multimask_output)
        low_res, iou = low_res.clone(), iou.clone()
        low_res[rows], iou[rows] = exact_low.to(low_res.dtype), exact_iou.to(iou.dtype)
        return low_res, iou
