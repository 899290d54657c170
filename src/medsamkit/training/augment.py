"""Augmentations of :class:`~medsamkit.data.samples.Sample` objects that keep image, mask and
box aligned.

Every transform works inside the sample's valid region (``image[:h, :w]``), so the zero padding
stays bottom/right exactly as at inference. Flips map the box exactly; rotations and scalings
move image and mask by the same affine map (linear / nearest) and take the new box from the
transformed mask; a transform that would lose the target is skipped. Intensity changes use
contrast, brightness and gamma: the min-max normalisation of LiteMedSAM and MedSAM undoes the
affine part, the gamma survives it.

With cached image embeddings (decoder mode) the image never reaches the encoder again, so random
augmentation at each step is impossible there. Instead a fixed number of transformed copies of each
image are encoded once as extra cache variants, and each training step draws one:
- flips (``data.embedding_flips``, :func:`flip_sample`);
- warps (``data.embedding_warps``, :func:`variant_sample`): a rotation, scaling and intensity
  change drawn from ``data.augment``'s ranges, fixed per image and variant. Every label of a slice
  shares that slice's embedding, so the draw is seeded by the image's key, not by the sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.samples import Sample
from ..preprocessing.labels import box_from_mask, jitter_box

Transform = Callable[[Sample, np.random.Generator], Sample]


def flip_sample(sample: Sample, axis: str) -> Sample:
    """Mirror a sample inside its valid region: ``axis`` "hflip" (left-right) or "vflip"."""
    h, w = sample.valid_size
    image, mask = sample.image.copy(), sample.mask.copy()
    x0, y0, x1, y1 = sample.box
    if axis == "hflip":
        image[:h, :w] = image[:h, :w][:, ::-1]
        mask[:h, :w] = mask[:h, :w][:, ::-1]
        box = (w - 1 - x1, y0, w - 1 - x0, y1)
    elif axis == "vflip":
        image[:h, :w] = image[:h, :w][::-1]
        mask[:h, :w] = mask[:h, :w][::-1]
        box = (x0, h - 1 - y1, x1, h - 1 - y0)
    else:
        raise ValueError(f"unknown flip {axis!r} (hflip or vflip)")
    return dataclasses.replace(sample, image=image, mask=mask, box=tuple(float(v) for v in box))


@dataclass(frozen=True)
class RandomFlip:
    """Flip with probability ``p``."""

    axis: str = "hflip"
    p: float = 0.5

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return flip_sample(sample, self.axis) if rng.random() < self.p else sample


def _affine(sample: Sample, angle: float, scale: float, min_kept: float) -> Sample | None:
    """Rotate by ``angle`` degrees and scale by ``scale`` about the centre of the valid region (image
    linear, mask nearest, the box from the moved mask); None when less than ``min_kept`` of the
    (scaled) target stays in view."""
    if angle == 0 and scale == 1:
        return sample
    h, w = sample.valid_size
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    region = sample.mask[:h, :w]
    moved = cv2.warpAffine(region, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    box = box_from_mask(moved, min_component=0)
    if box is None or moved.sum() < min_kept * scale * scale * max(int(region.sum()), 1):
        return None
    image, mask = sample.image.copy(), sample.mask.copy()
    image[:h, :w] = cv2.warpAffine(sample.image[:h, :w], matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    mask[:h, :w] = moved
    return dataclasses.replace(sample, image=image, mask=mask, box=tuple(float(v) for v in box))


def _intensity(sample: Sample, contrast: float, brightness: float, gamma: float) -> Sample:
    h, w = sample.valid_size
    region = sample.image[:h, :w].astype(np.float32) / 255.0
    region = np.clip(region * contrast + brightness, 0, 1) ** gamma
    image = sample.image.copy()
    image[:h, :w] = np.round(region * 255).astype(np.uint8)
    return dataclasses.replace(sample, image=image)


@dataclass(frozen=True)
class RandomAffine:
    """Rotate by up to ``max_degrees`` and scale by up to ``1 +/- max_scale`` about the centre of
    the valid region; the box becomes the transformed mask's box."""

    max_degrees: float = 10.0
    max_scale: float = 0.1
    min_kept: float = 0.5  # skip when less than this fraction of the target stays in view

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        angle = float(rng.uniform(-self.max_degrees, self.max_degrees))
        scale = float(rng.uniform(1 - self.max_scale, 1 + self.max_scale))
        moved = _affine(sample, angle, scale, self.min_kept)
        return sample if moved is None else moved


@dataclass(frozen=True)
class RandomIntensity:
    """Contrast and brightness by up to +/- ``strength`` and gamma in exp(+/- ``strength``),
    in the valid region only."""

    strength: float = 0.1

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        contrast, brightness = 1 + rng.uniform(-self.strength, self.strength), rng.uniform(-self.strength, self.strength)
        gamma = math.exp(rng.uniform(-self.strength, self.strength))
        return _intensity(sample, contrast, brightness, gamma)


@dataclass(frozen=True)
class WarpRanges:
    """The ranges cached warp variants are drawn from (``data.augment``'s ``rotate_deg``, ``scale``
    and ``intensity``)."""

    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity: float = 0.1


def is_warp(variant: str) -> bool:
    """A cached warp variant's name: ``warp1``, ``warp2``, ..."""
    return variant.startswith("warp") and variant[4:].isdigit() and int(variant[4:]) > 0


def variant_sample(sample: Sample, variant: str, image_key: str, warp: WarpRanges | None = None,
                   min_kept: float = 0.5) -> Sample | None:
    """``sample`` as the cache variant ``variant`` shows it: ``none``, a flip, or ``warpK``, the K-th
    warp of the image ``image_key`` (the same rotation, scaling and intensity change for every sample
    of that image). None when a warp loses the target (the caller uses the plain image instead);
    ``min_kept=0`` keeps any warp whose mask is not empty."""
    if variant == "none":
        return sample
    if not is_warp(variant):
        return flip_sample(sample, variant)
    ranges = warp or WarpRanges()
    seed = int.from_bytes(hashlib.sha256(f"{image_key}\0{variant}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    angle = float(rng.uniform(-ranges.rotate_deg, ranges.rotate_deg))
    scale = float(rng.uniform(1 - ranges.scale, 1 + ranges.scale))
    s = ranges.intensity
    contrast, brightness, gamma = 1 + rng.uniform(-s, s), rng.uniform(-s, s), math.exp(rng.uniform(-s, s))
    moved = _affine(sample, angle, scale, min_kept)
    return None if moved is None else _intensity(moved, contrast, brightness, gamma)


@dataclass(frozen=True)
class BoxJitter:
    """Push each box side outward by 0..``max_shift`` pixels inside the valid region (MedSAM)."""

    max_shift: int = 20

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.max_shift <= 0:
            return sample
        box = jitter_box(sample.box, sample.valid_size, self.max_shift, rng)
        return dataclasses.replace(sample, box=tuple(float(v) for v in box))


@dataclass(frozen=True)
class Compose:
    transforms: Sequence[Transform]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


def build_augmenter(hflip: float = 0.0, vflip: float = 0.0, rotate_deg: float = 0.0, scale: float = 0.0,
                    intensity: float = 0.0) -> Compose:
    """The image-mode augmentation pipeline from :class:`~medsamkit.training.config.AugmentConfig` values."""
    steps: list[Transform] = []
    if hflip > 0:
        steps.append(RandomFlip("hflip", hflip))
    if vflip > 0:
        steps.append(RandomFlip("vflip", vflip))
    if rotate_deg > 0 or scale > 0:
        steps.append(RandomAffine(rotate_deg, scale))
    if intensity > 0:
        steps.append(RandomIntensity(intensity))
    return Compose(tuple(steps))
