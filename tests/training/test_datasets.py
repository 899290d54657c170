"""Training datasets: adjacent slices of a sample's label (click training's ``neighbour_mask``)
found from the samples or a preprocess cache's manifest, flipped with the sample, with the box
propagation would take from them."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from training_fixtures import make_samples

from medsamkit.data.samples import Sample
from medsamkit.training.augment import BoxJitter, WarpRanges, flip_sample, variant_sample
from medsamkit.training.datasets import EmbeddingDataset, grown_box, slice_neighbours


def _volume_samples() -> list[Sample]:
    """Case "v" label 1 on slices 3, 4, 5 and 7, label 2 on slice 4, case "w" label 1 on slice 4,
    and a 2D image; every mask a square shifted with the slice."""
    base = make_samples(1)[0]
    out = []
    for case, label, z in [("v", 1, 3), ("v", 1, 4), ("v", 1, 5), ("v", 1, 7), ("v", 2, 4), ("w", 1, 4)]:
        mask = np.zeros_like(base.mask)
        mask[10 + z:30 + z, 12:40] = 1
        out.append(dataclasses.replace(base, mask=mask, box=(12.0, 10.0 + z, 39.0, 29.0 + z), case_id=case,
                                       label=label, slice_index=z))
    out.append(base)  # 2D: no slice index
    return out


class _Embeddings:
    """An EmbeddingCache stand-in: one embedding per sample, variants as the real cache names them."""

    variants = ("none", "hflip")

    def __len__(self) -> int:
        return 7

    def get(self, index: int, variant: int = 0) -> torch.Tensor:
        return torch.full((2, 4, 4), float(index * 10 + variant))


def test_slice_neighbours_are_the_same_case_and_label_one_slice_away():
    assert slice_neighbours(_volume_samples()) == [(1,), (0, 2), (1,), (), (), (), ()]


def test_grown_box_is_the_propagation_box_in_the_model_frame():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 1:62] = 1
    assert grown_box(mask) == (0.0, 7.0, 64.0, 22.0)  # clipped to 0..S as LiteMedSAM's get_bbox256
    assert grown_box(mask, grow_px=0) == (1.0, 10.0, 61.0, 19.0)
    assert grown_box(np.zeros((8, 8), np.uint8)) is None


def test_embedding_items_bring_a_neighbour_flipped_with_the_sample():
    samples = _volume_samples()
    plain = EmbeddingDataset(samples, _Embeddings())
    assert "neighbour_mask" not in plain[1]  # off by default: the items are as before
    dataset = EmbeddingDataset(samples, _Embeddings(), random_variant=True, neighbours=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        item = dataset[1]  # slice 4: its neighbours are slices 3 and 5
        assert item["has_neighbour"].item()
        variant = int(item["embedding"][0, 0, 0].item()) - 10
        mask = item["neighbour_mask"][0].numpy()
        matches = []
        for j in (0, 2):
            expected = flip_sample(samples[j], "hflip").mask if variant else samples[j].mask
            if np.array_equal(mask, expected):
                matches.append(j)
                assert item["neighbour_box"].tolist() == list(grown_box(expected))
        assert len(matches) == 1
        seen.add((variant, matches[0]))
    assert {j for _, j in seen} == {0, 2} and {v for v, _ in seen} == {0, 1}
    lone = dataset[3]  # slice 7 alone: no neighbour, its own box in place
    assert not lone["has_neighbour"].item() and lone["neighbour_box"].tolist() == list(samples[3].box)
    assert lone["neighbour_mask"].shape == (1, *samples[3].mask.shape) and not lone["neighbour_mask"].any()
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(samples))])
    assert batch["has_neighbour"].tolist() == [True, True, True, False, False, False, False]


def test_the_neighbour_box_is_jittered_like_the_sample_box():
    samples = _volume_samples()
    dataset = EmbeddingDataset(samples, _Embeddings(), transform=BoxJitter(4), neighbours=True)
    torch.manual_seed(1)
    boxes = {tuple(dataset[0]["neighbour_box"].tolist()) for _ in range(10)}
    exact = grown_box(samples[1].mask)
    assert len(boxes) > 1
    for x0, y0, x1, y1 in boxes:  # pushed outward only
        assert x0 <= exact[0] and y0 <= exact[1] and x1 >= exact[2] and y1 >= exact[3]


class _WarpedEmbeddings(_Embeddings):
    """The stand-in with one warp variant; every sample its own image."""

    variants = ("none", "warp1")
    warp = WarpRanges(rotate_deg=30, scale=0.1, intensity=0.1)

    def image_key(self, index: int) -> str:
        return f"image{index}"


def test_a_warp_variant_moves_the_mask_with_its_image_and_falls_back_when_the_target_is_lost():
    samples = _volume_samples()
    corner = np.zeros_like(samples[0].mask)
    corner[:2, :2] = 1  # lost by any rotation about the centre
    samples[2] = dataclasses.replace(samples[2], mask=corner, box=(0.0, 0.0, 1.0, 1.0))
    cache = _WarpedEmbeddings()
    dataset = EmbeddingDataset(samples, cache, random_variant=True, neighbours=True)
    torch.manual_seed(0)
    variants = set()
    for _ in range(12):
        item = dataset[1]
        variant = int(item["embedding"][0, 0, 0].item()) - 10
        variants.add(variant)
        expected = variant_sample(samples[1], "warp1", "image1", cache.warp) if variant else samples[1]
        assert np.array_equal(item["mask"][0].numpy(), expected.mask)
        assert item["box"].tolist() == list(expected.box)
        if variant and item["has_neighbour"].item():  # the neighbour is warped as this sample's image
            neighbour = item["neighbour_mask"][0].numpy()
            assert any(np.array_equal(neighbour, variant_sample(samples[j], "warp1", "image1", cache.warp, 0.0).mask)
                       for j in (0, 2) if variant_sample(samples[j], "warp1", "image1", cache.warp, 0.0) is not None)
        lost = dataset[2]
        assert int(lost["embedding"][0, 0, 0].item()) == 20  # the plain image's embedding
        assert np.array_equal(lost["mask"][0].numpy(), corner)
    assert variants == {0, 1}
