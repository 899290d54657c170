"""Model geometry: one object per model family that maps images, boxes and points into the
model's input frame and maps mask logits back to the original image.

Images, prompts and masks all go through the same object, so they cannot drift apart.
Each family follows its reference pipeline exactly (../shared/docs/design.md):

- LiteMedSAM: longest side -> 256 (cv2 INTER_AREA, sizes rounded int(x + 0.5)), min-max to
  [0, 1] *after* resizing, zero-pad bottom/right to 256; boxes scaled by int(v * 256 / max(H, W));
  logits cropped to the resized size, bilinear to (H, W).
- MedSAM (``MedSAM_Inference.py``): skimage resize straight to 1024 x 1024 (order 3,
  anti-aliasing, range kept, truncated to uint8; aspect not kept), min-max to [0, 1], no
  mean/std; boxes scaled by 1024 / [W, H, W, H]; the 256 x 256 logits' sigmoid bilinear straight
  to (H, W), then p > 0.5.
- SAM: longest side -> 1024 (bilinear), ImageNet mean/std, zero-pad to 1024; coordinates scaled
  by the resize factor; logits -> 1024 -> crop -> (H, W).
- SAM2 (and MedSAM2 at 512): the image predictor's transform (facebookresearch/sam2
  ``SAM2Transforms``): /255, square resize with torch bilinear + antialias (torchvision's tensor
  ``Resize``), ImageNet mean/std; coordinates x / W * S, y / H * S in float32; low-resolution
  logits bilinear straight to (H, W). Volumes go through :class:`SAM2FrameGeometry` instead:
  frames as the video predictors load them (PIL bicubic resize of the uint8 RGB slice).

All thresholds are "logit > 0", i.e. sigmoid > 0.5 as in the references (MedSAM thresholds
the upsampled sigmoid; its logits_to_original returns logits whose sign is that threshold).
Arrays: images are H x W x 3 uint8 RGB (use :mod:`medsamkit.preprocessing.intensity` first);
boxes are (N, 4) x0, y0, x1, y1 in original pixels, x right and y down; points (N, K, 2) x, y.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .frames import (Frame, litemedsam_boxes, litemedsam_frame, litemedsam_logits_to_original, litemedsam_resize,
                     longest_side_size, padded_chw)
from .frames import minmax01 as _minmax01

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def _to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """H x W x 3 float -> (1, 3, size, size), zero-padded bottom/right."""
    return torch.from_numpy(padded_chw(image, size))


class ModelGeometry:
    """Base class; subclasses define how the image is resized and normalised."""

    family: str = ""
    input_size: int = 1024

    # --- images -------------------------------------------------------------------------
    def frame(self, original_size: tuple[int, int]) -> Frame:
        raise NotImplementedError

    def resize_image(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        """H x W x 3 uint8 RGB -> (the resized h x w x 3 uint8 image, before padding; frame).

        Caches store this uint8 image; :meth:`normalise` turns it into the model input.
        """
        raise NotImplementedError

    def normalise(self, resized: np.ndarray) -> torch.Tensor:
        """A resized h x w x 3 uint8 image -> the (1, 3, S, S) float model input (padded)."""
        raise NotImplementedError

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        """H x W x 3 uint8 RGB -> ((1, 3, S, S) float tensor, frame)."""
        resized, frame = self.resize_image(image)
        return self.normalise(resized), frame

    def resize_mask(self, mask: np.ndarray, frame: Frame) -> np.ndarray:
        """An (H, W) mask or label map -> (S, S) in the model-input frame (nearest, zero-padded),
        aligned pixel for pixel with the image that :meth:`resize_image` gives."""
        nh, nw = frame.resized_size
        small = cv2.resize(np.ascontiguousarray(mask).astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16),
                           (nw, nh), interpolation=cv2.INTER_NEAREST)
        out = np.zeros((frame.input_size, frame.input_size), dtype=small.dtype)
        out[:nh, :nw] = small
        return out

    # --- prompts ------------------------------------------------------------------------
    def boxes_to_model(self, boxes: np.ndarray, frame: Frame) -> torch.Tensor:
        """(N, 4) original-pixel boxes -> (N, 4) model-input boxes (float32)."""
        sx, sy = frame.scale_xy
        scaled = np.asarray(boxes, dtype=np.float64) * np.array([sx, sy, sx, sy])
        return torch.as_tensor(scaled, dtype=torch.float32)

    def points_to_model(self, points: np.ndarray, frame: Frame) -> torch.Tensor:
        """(N, K, 2) original-pixel points -> model-input points (float32)."""
        sx, sy = frame.scale_xy
        scaled = np.asarray(points, dtype=np.float64) * np.array([sx, sy])
        return torch.as_tensor(scaled, dtype=torch.float32)

    def boxes_from_model(self, boxes: np.ndarray, frame: Frame) -> np.ndarray:
        """(N, 4) model-input boxes -> (N, 4) original-pixel boxes (float64) that
        :meth:`boxes_to_model` maps back onto them (to float rounding)."""
        sx, sy = frame.scale_xy
        return np.asarray(boxes, dtype=np.float64) / np.array([sx, sy, sx, sy])

    def grown_box(self, mask: np.ndarray, frame: Frame, grow_px: int) -> tuple[float, float, float, float] | None:
        """The box for the next slice of a propagation: the bounding box of an (H, W) mask in the
        model-input frame, grown by ``grow_px`` model-input pixels on every side and clipped to
        the model input (0..S), returned in original pixels (:meth:`boxes_from_model`).
        None for an empty mask."""
        ys, xs = np.nonzero(np.asarray(mask))
        if xs.size == 0:
            return None
        sx, sy = frame.scale_xy
        s = frame.input_size
        model = np.array([max(xs.min() * sx - grow_px, 0), max(ys.min() * sy - grow_px, 0),
                          min(xs.max() * sx + grow_px, s), min(ys.max() * sy + grow_px, s)], dtype=np.float64)
        return tuple(float(v) for v in self.boxes_from_model(model[None], frame)[0])  # type: ignore[return-value]

    def mask_to_model(self, mask: np.ndarray, frame: Frame, low_res: int = 256) -> torch.Tensor:
        """A binary (H, W) mask -> (1, 1, low_res, low_res) logits-like prompt (+/-8) in the
        low-resolution frame of the decoder output, aligned like the image."""
        h, w = frame.resized_size
        lh = round(h * low_res / frame.input_size)
        lw = round(w * low_res / frame.input_size)
        small = cv2.resize(mask.astype(np.float32), (max(lw, 1), max(lh, 1)), interpolation=cv2.INTER_LINEAR)
        out = np.full((low_res, low_res), -8.0, dtype=np.float32)
        out[:lh, :lw] = np.where(small > 0.5, 8.0, -8.0)
        return torch.from_numpy(out)[None, None]

    # --- outputs ------------------------------------------------------------------------
    def logits_to_original(self, low_res_logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        """(N, K, s, s) decoder logits -> (N, K, H, W) logits at the original size."""
        raise NotImplementedError

    def logits_to_original_numpy(self, low_res_logits: np.ndarray, frame: Frame) -> np.ndarray:
        """:meth:`logits_to_original` for numpy logits from an engine (the same values to float
        rounding); a family with a numpy form does it without torch."""
        return self.logits_to_original(torch.from_numpy(low_res_logits), frame).numpy()


class LiteMedSAMGeometry(ModelGeometry):
    family = "litemedsam"
    input_size = 256

    def frame(self, original_size: tuple[int, int]) -> Frame:
        return litemedsam_frame(original_size, self.input_size)

    def resize_image(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        return litemedsam_resize(image, self.input_size)

    def normalise(self, resized: np.ndarray) -> torch.Tensor:
        # min-max over the resized image, before the zero padding (as the reference does)
        return _to_tensor(_minmax01(resized), self.input_size)

    def boxes_to_model(self, boxes: np.ndarray, frame: Frame) -> torch.Tensor:
        # reference: int(v * 256 / max(H, W)), a truncation
        return torch.from_numpy(litemedsam_boxes(boxes, frame))

    def points_to_model(self, points: np.ndarray, frame: Frame) -> torch.Tensor:
        ratio = self.input_size / max(frame.original_size)
        return torch.as_tensor(np.asarray(points, dtype=np.float64) * ratio, dtype=torch.float32)

    def boxes_from_model(self, boxes: np.ndarray, frame: Frame) -> np.ndarray:
        """Integer model-input boxes -> the smallest original coordinates that the truncating
        :meth:`boxes_to_model` maps exactly back onto them."""
        ratio = self.input_size / max(frame.original_size)
        model = np.asarray(boxes, dtype=np.float64)
        out = model / ratio
        for _ in range(8):  # v / ratio * ratio can land one ulp under v; trunc would then drop 1
            under = np.trunc(out * ratio) < model
            if not under.any():
                break
            out = np.where(under, np.nextafter(out, np.inf), out)
        return out

    def grown_box(self, mask: np.ndarray, frame: Frame, grow_px: int) -> tuple[float, float, float, float] | None:
        """LiteMedSAM's propagation box (CVPR24_LiteMedSAM_infer.py, ``get_bbox256``): the mask
        resized into the 256 px frame as the image is (cv2 INTER_AREA, zero-padded), its
        bounding box grown by ``grow_px`` (3 in the reference) and clipped to 0..256, mapped
        back to original pixels so that :meth:`boxes_to_model` gives that 256 px box exactly.

        The reference resizes its label map, whose value is the object's index, so for the 2nd,
        3rd... object a partly covered 256 px pixel can count where it does not here; here the
        mask is binary (the reference's behaviour for its first object)."""
        nh, nw = frame.resized_size
        small = cv2.resize((np.asarray(mask) > 0).astype(np.uint8), (nw, nh), interpolation=cv2.INTER_AREA)
        ys, xs = np.nonzero(small)
        if xs.size == 0:
            return None
        s = self.input_size
        model = np.array([[max(int(xs.min()) - grow_px, 0), max(int(ys.min()) - grow_px, 0),
                           min(int(xs.max()) + grow_px, s), min(int(ys.max()) + grow_px, s)]], dtype=np.float64)
        return tuple(float(v) for v in self.boxes_from_model(model, frame)[0])  # type: ignore[return-value]

    def logits_to_original(self, low_res_logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        nh, nw = frame.resized_size
        if low_res_logits.shape[-1] != self.input_size:
            low_res_logits = F.interpolate(
                low_res_logits, (self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        cropped = low_res_logits[..., :nh, :nw]
        return F.interpolate(cropped, frame.original_size, mode="bilinear", align_corners=False)

    def logits_to_original_numpy(self, low_res_logits: np.ndarray, frame: Frame) -> np.ndarray:
        if low_res_logits.shape[-1] != self.input_size:
            return super().logits_to_original_numpy(low_res_logits, frame)
        n, k, s, _ = low_res_logits.shape
        out = litemedsam_logits_to_original(low_res_logits.reshape(n * k, s, s), frame)
        return out.reshape(n, k, *out.shape[1:])


class MedSAMGeometry(ModelGeometry):
    family = "medsam"
    input_size = 1024

    def frame(self, original_size: tuple[int, int]) -> Frame:
        return Frame(tuple(original_size), (self.input_size, self.input_size), self.input_size)

    def resize_image(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        # MedSAM_Inference.py: skimage's order-3 spline resize with anti-aliasing, range kept,
        # then a truncating cast to uint8 (not a rounding one)
        from skimage.transform import resize

        frame = self.frame(image.shape[:2])
        size = (self.input_size, self.input_size)
        resized = resize(image, size, order=3, preserve_range=True, anti_aliasing=True)
        return resized.astype(np.uint8), frame

    def normalise(self, resized: np.ndarray) -> torch.Tensor:
        # the reference's min-max runs in float64 on the uint8 image, then becomes float32
        lo = resized.min()
        scaled = (resized - lo) / np.clip(float(resized.max()) - float(lo), 1e-8, None)
        return _to_tensor(scaled.astype(np.float32), self.input_size)

    def logits_to_original(self, low_res_logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        """MedSAM_Inference.py upsamples the sigmoid's probabilities (bilinear, float32) and keeps
        p > 0.5, which differs from "upsampled logit > 0" near the mask's edge.

        The logits returned are the upsampled logits with their sign set by that threshold (where
        the two disagree, +/-1e-6), so "logit > 0" is exactly the reference's mask and the
        magnitudes still rank overlapping objects.
        """
        size = frame.original_size
        low_res_logits = low_res_logits.float()
        mask = F.interpolate(torch.sigmoid(low_res_logits), size, mode="bilinear", align_corners=False) > 0.5
        logits = F.interpolate(low_res_logits, size, mode="bilinear", align_corners=False)
        return torch.where(mask, logits.clamp_min(1e-6), logits.clamp_max(-1e-6))


class SAMGeometry(ModelGeometry):
    family = "sam"
    input_size = 1024

    def frame(self, original_size: tuple[int, int]) -> Frame:
        h, w = original_size
        return Frame((h, w), longest_side_size(h, w, self.input_size), self.input_size)

    def resize_image(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        frame = self.frame(image.shape[:2])
        nh, nw = frame.resized_size
        return np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR)), frame

    def normalise(self, resized: np.ndarray) -> torch.Tensor:
        mean, std = np.array(SAM_PIXEL_MEAN, np.float32), np.array(SAM_PIXEL_STD, np.float32)
        return _to_tensor((resized.astype(np.float32) - mean) / std, self.input_size)

    def logits_to_original(self, low_res_logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        nh, nw = frame.resized_size
        full = F.interpolate(low_res_logits, (self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return F.interpolate(full[..., :nh, :nw], frame.original_size, mode="bilinear", align_corners=False)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SAM2Geometry(ModelGeometry):
    """SAM2's image predictor: square resize of the /255 image (torch bilinear, antialias),
    ImageNet mean/std (float32)."""

    family = "sam2"
    input_size = 1024

    def __init__(self, input_size: int | None = None) -> None:
        if input_size is not None:
            self.input_size = int(input_size)

    def frame(self, original_size: tuple[int, int]) -> Frame:
        return Frame(tuple(original_size), (self.input_size, self.input_size), self.input_size)

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        # the exact reference path: the resize works on the float image, not on uint8
        frame = self.frame(image.shape[:2])
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        size = (self.input_size, self.input_size)
        tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
        return (tensor - mean) / std, frame

    def resize_image(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        """The resized uint8 image (for caches; rounding to uint8 makes :meth:`normalise` of it
        differ from :meth:`prepare_image` by up to half a grey level)."""
        frame = self.frame(image.shape[:2])
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()
        tensor = F.interpolate(tensor[None], size=(self.input_size, self.input_size), mode="bilinear",
                               align_corners=False, antialias=True)
        return tensor[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy(), frame

    def normalise(self, resized: np.ndarray) -> torch.Tensor:
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        return _to_tensor((resized.astype(np.float32) / 255.0 - mean) / std, self.input_size)

    def _scale_xy(self, coords: np.ndarray, frame: Frame) -> torch.Tensor:
        h, w = frame.original_size
        t = torch.as_tensor(np.asarray(coords, dtype=np.float64), dtype=torch.float32).clone()
        t[..., 0] = t[..., 0] / w
        t[..., 1] = t[..., 1] / h
        return t * self.input_size

    def boxes_to_model(self, boxes: np.ndarray, frame: Frame) -> torch.Tensor:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return self._scale_xy(boxes.reshape(-1, 2, 2), frame).reshape(-1, 4)

    def points_to_model(self, points: np.ndarray, frame: Frame) -> torch.Tensor:
        return self._scale_xy(points, frame)

    def logits_to_original(self, low_res_logits: torch.Tensor, frame: Frame) -> torch.Tensor:
        return F.interpolate(low_res_logits, frame.original_size, mode="bilinear", align_corners=False)


class MedSAM2Geometry(SAM2Geometry):
    """MedSAM2 (SAM2.1-tiny at 512 px): the SAM2 image transform at 512."""

    family = "medsam2"
    input_size = 512


class SAM2FrameGeometry(SAM2Geometry):
    """Volume slices as SAM2's video predictors load frames (facebookresearch/sam2
    ``load_video_frames``; bowang-lab/MedSAM2 ``medsam2_infer_3D_CT.py``): the uint8 RGB slice
    resized with PIL (bicubic), /255, ImageNet mean/std computed in float64 (MedSAM2's script)
    with the float32 constants, then float32."""

    family = "sam2-frames"

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
        resized, frame = self.resize_image(image)
        return self.normalise(resized), frame

    def resize_image(self, image: np.ndarray) -> tuple[np.ndarray, Frame]:
        frame = self.frame(image.shape[:2])
        size = (self.input_size, self.input_size)
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC)), frame

    def normalise(self, resized: np.ndarray) -> torch.Tensor:
        mean = np.array(IMAGENET_MEAN, np.float32).astype(np.float64)
        std = np.array(IMAGENET_STD, np.float32).astype(np.float64)
        return _to_tensor((resized / 255.0 - mean) / std, self.input_size)


GEOMETRIES: dict[str, type[ModelGeometry]] = {
    cls.family: cls for cls in (LiteMedSAMGeometry, MedSAMGeometry, SAMGeometry, SAM2Geometry, MedSAM2Geometry)
}


def geometry_for(family: str) -> ModelGeometry:
    """The geometry object of a preprocessing family ("litemedsam", "medsam", "sam", "sam2" or
    "medsam2")."""
    return GEOMETRIES[family]()
