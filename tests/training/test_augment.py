"""Augmentations keep image, mask and box aligned, and keep the padding where inference has it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from training_fixtures import make_samples

from medsamkit.preprocessing.labels import box_from_mask
from medsamkit.training.augment import (
    BoxJitter,
    RandomAffine,
    RandomIntensity,
    WarpRanges,
    build_augmenter,
    flip_sample,
    is_warp,
    variant_sample,
)


@pytest.fixture(scope="module")
def sample():
    return make_samples(2)[1]  # 90 x 120 original: valid region 48 x 64 of the 64 px frame


def _mask_box(s) -> np.ndarray:
    return np.array(box_from_mask(s.mask, min_component=0), dtype=float)


def _padding_is_zero(s) -> bool:
    h, w = s.valid_size
    return not s.image[h:].any() and not s.image[:, w:].any() and not s.mask[h:].any() and not s.mask[:, w:].any()


@pytest.mark.parametrize("axis", ["hflip", "vflip"])
def test_flip_maps_the_box_exactly(sample, axis):
    assert sample.valid_size == (48, 64)
    flipped = flip_sample(sample, axis)
    assert _padding_is_zero(flipped)
    # with the mask's own box, the flipped box is exactly the flipped mask's box
    tight = dataclasses.replace(sample, box=tuple(_mask_box(sample)))
    assert np.allclose(flip_sample(tight, axis).box, _mask_box(flip_sample(tight, axis)))
    assert np.allclose(flip_sample(flipped, axis).box, sample.box)  # an involution
    assert np.array_equal(flip_sample(flipped, axis).image, sample.image)


def test_affine_moves_image_mask_and_box_together(sample):
    rng = np.random.default_rng(3)
    moved = RandomAffine(max_degrees=20, max_scale=0.15)(sample, rng)
    assert moved is not sample and _padding_is_zero(moved)
    assert np.allclose(moved.box, _mask_box(moved))
    # the bright target moves with the mask: inside the mask the image stays bright
    inside = moved.image[moved.mask > 0].mean()
    outside = moved.image[: moved.valid_size[0], : moved.valid_size[1]][moved.mask[:48, :64] == 0].mean()
    assert inside > outside + 60


def test_affine_that_loses_the_target_is_skipped(sample):
    # min_kept > 1 can never be met: the sample comes back unchanged
    always_skip = RandomAffine(max_degrees=10, max_scale=0.1, min_kept=10.0)
    assert always_skip(sample, np.random.default_rng(0)) is sample


def test_intensity_changes_only_the_valid_region(sample):
    out = RandomIntensity(0.3)(sample, np.random.default_rng(1))
    assert _padding_is_zero(out)
    assert not np.array_equal(out.image, sample.image)
    assert np.array_equal(out.mask, sample.mask) and out.box == sample.box


def test_box_jitter_pushes_outward_within_the_valid_region(sample):
    rng = np.random.default_rng(0)
    h, w = sample.valid_size
    for _ in range(50):
        x0, y0, x1, y1 = BoxJitter(20)(sample, rng).box
        assert 0 <= x0 <= int(sample.box[0]) and 0 <= y0 <= int(sample.box[1])
        assert int(sample.box[2]) <= x1 <= w - 1 and int(sample.box[3]) <= y1 <= h - 1
    assert BoxJitter(0)(sample, rng) is sample


def test_build_augmenter_is_reproducible(sample):
    aug = build_augmenter(hflip=0.5, vflip=0.5, rotate_deg=10, scale=0.1, intensity=0.1)
    assert len(aug.transforms) == 4 and build_augmenter().transforms == ()
    a = aug(sample, np.random.default_rng(7))
    b = aug(sample, np.random.default_rng(7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.box == b.box


def test_warp_variant_is_fixed_per_image_and_shared_by_its_labels(sample):
    ranges = WarpRanges(rotate_deg=20, scale=0.15, intensity=0.2)
    first = variant_sample(sample, "warp1", "case1\x000", ranges)
    assert first is not None and _padding_is_zero(first)
    again = variant_sample(sample, "warp1", "case1\x000", ranges)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    # another label of the same image (the mask's complement in the valid region) gets the same image
    h, w = sample.valid_size
    other_mask = np.zeros_like(sample.mask)
    other_mask[:h, :w] = 1 - sample.mask[:h, :w]
    other = variant_sample(dataclasses.replace(sample, mask=other_mask, label=2), "warp1", "case1\x000", ranges)
    assert other is not None and np.array_equal(other.image, first.image)
    # another variant or another image draws another warp
    assert not np.array_equal(variant_sample(sample, "warp2", "case1\x000", ranges).image, first.image)
    assert not np.array_equal(variant_sample(sample, "warp1", "case1\x001", ranges).image, first.image)


def test_warp_variant_moves_image_mask_and_box_together(sample):
    moved = variant_sample(sample, "warp3", "key", WarpRanges(rotate_deg=25, scale=0.2, intensity=0.2))
    assert moved is not None and not np.array_equal(moved.mask, sample.mask)
    assert np.allclose(moved.box, _mask_box(moved))
    h, w = moved.valid_size
    inside = moved.image[moved.mask > 0].mean()
    outside = moved.image[:h, :w][moved.mask[:h, :w] == 0].mean()
    assert inside > outside + 50


def test_warp_variant_that_loses_the_target_is_none_and_names_are_checked(sample):
    h, w = sample.valid_size
    corner = np.zeros_like(sample.mask)
    corner[:2, :2] = 1  # a rotation about the centre takes a corner target out of view
    lost = dataclasses.replace(sample, mask=corner, box=(0.0, 0.0, 1.0, 1.0))
    results = [variant_sample(lost, f"warp{k}", "key", WarpRanges(rotate_deg=40, scale=0.0, intensity=0.0))
               for k in range(1, 6)]
    assert all(r is None for r in results)
    assert variant_sample(sample, "none", "key") is sample
    assert np.array_equal(variant_sample(sample, "vflip", "key").mask, flip_sample(sample, "vflip").mask)
    assert is_warp("warp1") and is_warp("warp12")
    assert not any(is_warp(v) for v in ("warp", "warp0", "warpx", "hflip"))
