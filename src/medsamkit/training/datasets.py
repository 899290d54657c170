"""Torch datasets over a :class:`~medsamkit.data.samples.SampleSource`.

Items are dicts of tensors: ``image`` (3, S, S) float, the family's normalised model input (image
modes) or ``embedding`` (256, 64, 64) float (cached-embedding mode); ``mask`` (1, S, S) float in
{0, 1}; ``box`` (4,) x0, y0, x1, y1 in model-input pixels; ``valid`` (2,) the (h, w) of the image
inside the padded square; ``index`` the sample's index.

Random draws (augmentation, box jitter, flip variant) come from a generator seeded by the global
torch RNG, which Lightning's ``seed_everything(workers=True)`` makes reproducible in the main
process and in every DataLoader worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.samples import Sample, SampleSource
from ..preprocessing.geometry import ModelGeometry
from .augment import Transform, flip_sample
from .embedding_cache import EmbeddingCache


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
    """Samples with their cached image embedding; with ``random_variant`` a cached flip is drawn
    uniformly (mask and box flipped to match) before ``transform`` (the box jitter)."""

    def __init__(self, source: SampleSource, cache: EmbeddingCache, transform: Transform | None = None,
                 random_variant: bool = False) -> None:
        if len(cache) != len(source):
            raise ValueError(f"the embedding cache indexes {len(cache)} samples, the source has {len(source)}")
        self.source, self.cache, self.transform, self.random_variant = source, cache, transform, random_variant

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.source[index]
        rng = _rng()
        variant = int(rng.integers(len(self.cache.variants))) if self.random_variant else 0
        if variant:
            sample = flip_sample(sample, self.cache.variants[variant])
        if self.transform is not None:
            sample = self.transform(sample, rng)
        item = _targets(sample, index)
        item["embedding"] = self.cache.get(index, variant)
        return item
