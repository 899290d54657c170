"""The LightningDataModule: train/val sample sources -> datasets -> loaders.

With cached embeddings (decoder mode), ``prepare_data`` computes them once, on the first
process only (every node shares the file system under ``embedding_root``); ``setup`` then opens
them read-only in every process. Otherwise images are normalised (and augmented) per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.samples import SampleSource
from ..preprocessing.geometry import ModelGeometry
from .augment import BoxJitter, Compose, Transform
from .datasets import EmbeddingDataset, ImageDataset
from .embedding_cache import EmbeddingCacheSpec, embedding_cache



def make_loader(dataset: Dataset, settings: "LoaderSettings", shuffle: bool) -> DataLoader:
    """A DataLoader with the run's batch size and workers (pinned memory on CUDA machines)."""
    workers = settings.num_workers
    return DataLoader(dataset, batch_size=settings.batch_size, shuffle=shuffle, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

@dataclass
class DataSources:
    """Training samples and (optionally) validation samples."""

    train: SampleSource
    val: SampleSource | None = None


@dataclass(frozen=True)
class LoaderSettings:
    """Batch size, workers, box jitter; ``neighbours``: training items of cached embeddings also bring
    an adjacent slice of their label (``EmbeddingDataset(neighbours=True)``, click training's
    ``neighbour_mask``)."""

    batch_size: int = 4
    num_workers: int = 0
    box_jitter: int = 20
    neighbours: bool = False


class SampleDataModule(L.LightningDataModule):
    """Args:
        sources: the samples.
        geometry: the model family's geometry (normalisation).
        loader: batch size, workers, box jitter.
        augment: image-mode training augmentation (None in embedding mode).
        encoder: the frozen image encoder to cache embeddings with; None feeds images.
        cache_spec: where and how embeddings are cached (with ``encoder``).
    """

    def __init__(self, sources: DataSources, geometry: ModelGeometry, loader: LoaderSettings,
                 augment: Transform | None = None, encoder: nn.Module | None = None,
                 cache_spec: EmbeddingCacheSpec | None = None) -> None:
        super().__init__()
        if len(sources.train) == 0:
            raise ValueError("no training samples")
        if encoder is not None and cache_spec is None:
            raise ValueError("caching embeddings needs a cache_spec")
        self.prepare_data_per_node = False  # one process computes the embeddings for all
        self.sources, self.geometry, self.loader = sources, geometry, loader
        self.augment, self.encoder, self.cache_spec = augment, encoder, cache_spec
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _val_sources(self) -> list[SampleSource]:
        return [s for s in (self.sources.val,) if s is not None and len(s) > 0]

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _cache(self, source: SampleSource, build: bool):
        device = self._device()
        self.encoder.to(device)
        return embedding_cache(source, self.encoder, self.geometry, self.cache_spec, device, build=build)

    def prepare_data(self) -> None:
        if self.encoder is not None:
            for source in [self.sources.train, *self._val_sources()]:
                self._cache(source, build=True)

    def setup(self, stage: str | None = None) -> None:
        jitter = BoxJitter(self.loader.box_jitter)
        if self.encoder is not None:
            train_cache = self._cache(self.sources.train, build=False)
            self.train_set = EmbeddingDataset(self.sources.train, train_cache, jitter,
                                              random_variant=len(train_cache.variants) > 1,
                                              neighbours=self.loader.neighbours)
            vals = self._val_sources()
            self.val_set = EmbeddingDataset(vals[0], self._cache(vals[0], build=False)) if vals else None
        else:
            if self.loader.neighbours:
                raise ValueError("adjacent-slice samples (neighbours) need cached embeddings")
            steps = [self.augment, jitter] if self.augment is not None else [jitter]
            self.train_set = ImageDataset(self.sources.train, self.geometry, Compose(tuple(steps)))
            vals = self._val_sources()
            self.val_set = ImageDataset(vals[0], self.geometry) if vals else None

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return make_loader(dataset, self.loader, shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
