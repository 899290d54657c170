"""Torch datasets over a :class:`~medsamkit.data.samples.SampleSource`.

Items are dicts of tensors: ``image`` (3, S, S) float, the family's normalised model input (image
modes) or ``embedding`` (256, 64, 64) float (cached-embedding mode); ``mask`` (1, S, S) float in
{0, 1}; ``box`` (4,) x0, y0, x1, y1 in model-input pixels; ``valid`` (2,) the (h, w) of the image
inside the padded square; ``index`` the sample's index. With ``EmbeddingDataset(neighbours=True)``
also ``neighbour_mask`` (1, S, S), ``neighbour_box`` (4,) and ``has_neighbour`` (bool): an adjacent
slice of the sample's label in the same volume, drawn at random among the two (see
:func:`slice_neighbours`), flipped or warped with the sample, and the box a 3D propagation would take from it.

Random draws (augmentation, box jitter, flip variant) come from a generator seeded by the global
torch RNG, which Lightning's ``seed_everything(workers=True)`` makes reproducible in the main
process and in every DataLoader worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.samples import Sample, SampleSource
from ..preprocessing.geometry import ModelGeometry
from .augment import Transform, is_warp, variant_sample
from .embedding_cache import EmbeddingCache, _cache_records

#: LiteMedSAM's propagation grows the previous slice's mask box by this many model-input pixels
#: (``PropagationConfig.grow_px``)
GROW_PX = 3


class SourceView:
    """The samples ``indices`` of ``base`` (a SampleSource)."""

    def __init__(self, base: SampleSource, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.base[self.indices[index]]


def head(source: SampleSource, n: int | None) -> SampleSource:
    """The first ``n`` samples of ``source`` (all of them when ``n`` is None)."""
    return source if n is None or n >= len(source) else SourceView(source, range(n))


def _rng() -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(2**62, ()).item()))


def _targets(sample: Sample, index: int) -> dict[str, torch.Tensor]:
    return {
        "mask": torch.from_numpy(np.ascontiguousarray(sample.mask, dtype=np.float32))[None],
        "box": torch.tensor(sample.box, dtype=torch.float32),
        "valid": torch.tensor(sample.valid_size, dtype=torch.int64),
        "index": torch.tensor(index),
    }


def slice_neighbours(source: SampleSource) -> list[tuple[int, ...]]:
    """For each sample, the indices of the samples of the same case and label on the slices just
    below and above it (none for 2D images or where that slice has no sample). A preprocess cache
    (or a subset of one) is read from its manifest, other sources sample by sample."""
    found = _cache_records(source)
    if found is not None:
        keys = [(r["case_id"], r["label"], r.get("slice")) for r in found[0]]
    else:
        keys = [(s.case_id, s.label, s.slice_index) for s in (source[i] for i in range(len(source)))]
    where = {key: i for i, key in enumerate(keys)}
    return [tuple(where[(case, label, z + d)] for d in (-1, 1) if (case, label, z + d) in where)
            if z is not None else () for case, label, z in keys]


def grown_box(mask: np.ndarray, grow_px: int = GROW_PX) -> tuple[float, float, float, float] | None:
    """The bounding box of an (S, S) model-input mask grown by ``grow_px`` and clipped to 0..S, as
    propagation makes the next slice's box (``LiteMedSAMGeometry.grown_box``); None when empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    s = mask.shape[-1]
    return (float(max(xs.min() - grow_px, 0)), float(max(ys.min() - grow_px, 0)),
            float(min(xs.max() + grow_px, s)), float(min(ys.max() + grow_px, s)))


class ImageDataset(Dataset):
    """Samples as normalised model inputs, transformed then box-jittered (both optional)."""

    def __init__(self, source: SampleSource, geometry: ModelGeometry, transform: Transform | None = None) -> None:
        self.source, self.geometry, self.transform = source, geometry, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.source[index]
        if self.transform is not None:
            sample = self.transform(sample, _rng())
        h, w = sample.valid_size
        item = _targets(sample, index)
        item["image"] = self.geometry.normalise(sample.image[:h, :w])[0]
        return item


class EmbeddingDataset(Dataset):
    """Samples with their cached image embedding; with ``random_variant`` a cached variant (flip or
    warp) is drawn uniformly (mask and box moved to match) before ``transform`` (the box jitter). With
    ``neighbours`` each item also brings an adjacent slice's mask and propagation box (module
    docstring; the box is jittered by ``transform`` too)."""

    def __init__(self, source: SampleSource, cache: EmbeddingCache, transform: Transform | None = None,
                 random_variant: bool = False, neighbours: bool = False) -> None:
        if len(cache) != len(source):
            raise ValueError(f"the embedding cache indexes {len(cache)} samples, the source has {len(source)}")
        self.source, self.cache, self.transform, self.random_variant = source, cache, transform, random_variant
        self.neighbours = slice_neighbours(source) if neighbours else None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.source[index]
        rng = _rng()
        variant = int(rng.integers(len(self.cache.variants))) if self.random_variant else 0
        if variant:
            shown = self._variant(sample, variant, index)
            if shown is None:  # a warp that loses this target: the plain image
                variant = 0
            else:
                sample = shown
        if self.transform is not None:
            sample = self.transform(sample, rng)
        item = _targets(sample, index)
        item["embedding"] = self.cache.get(index, variant)
        if self.neighbours is not None:
            item.update(self._neighbour(index, variant, sample, rng))
        return item

    def _variant(self, sample: Sample, variant: int, index: int, min_kept: float = 0.5) -> Sample | None:
        name = self.cache.variants[variant]
        if not is_warp(name):
            return variant_sample(sample, name, "")
        return variant_sample(sample, name, self.cache.image_key(index), self.cache.warp, min_kept)

    def _neighbour(self, index: int, variant: int, sample: Sample, rng: np.random.Generator
                   ) -> dict[str, torch.Tensor]:
        choices = self.neighbours[index]  # type: ignore[index]
        other = self.source[choices[int(rng.integers(len(choices)))]] if choices else None
        if other is not None and variant:  # warped as the sample's own image (its key)
            other = self._variant(other, variant, index, min_kept=0.0)
        box = grown_box(other.mask) if other is not None else None
        if other is None or box is None:
            return {"neighbour_mask": torch.zeros((1, *sample.mask.shape)),
                    "neighbour_box": torch.tensor(sample.box, dtype=torch.float32), "has_neighbour": torch.tensor(False)}
        if self.transform is not None:
            box = self.transform(dataclasses.replace(other, box=box), rng).box
        return {"neighbour_mask": torch.from_numpy(np.ascontiguousarray(other.mask, dtype=np.float32))[None],
                "neighbour_box": torch.tensor(box, dtype=torch.float32), "has_neighbour": torch.tensor(True)}
