"""Training clips for the SAM2 family: consecutive slices of one label of one volume, a prompt on
the first frame (and optionally every k-th), image features cached per slice when the image
encoder is frozen.

A clip is built from the samples of a :class:`~medsamkit.data.samples.SampleSource` (the
preprocess cache: one sample per (slice, label)): for every sample, the clip starts on its slice
and runs over up to ``length`` consecutive stored slices of the same volume (upwards, or
downwards with probability ``reverse`` in training), stopping at a gap. On a slice where the
label is absent the target is empty (SAM2 learns the object score there). 2D samples (no slice
index) are clips of one frame. Items are dicts of tensors (``T`` = ``length``; frames past the
clip's end are padding, ``frame_valid`` False):

- ``features`` (T, F) the slices' packed frame features (:class:`FrameEncoder`), or ``image``
  (T, 3, S, S) normalised model inputs (image encoder trained);
- ``mask`` (T, 1, S, S) float targets; ``frame_valid`` (T,) bool;
- ``prompt_coords`` (T, 2, 2) and ``prompt_labels`` (T, 2) (box: corners labelled 2, 3; click:
  the point labelled 1 then padding -1); ``is_prompt`` (T,) bool;
- ``valid`` (2,) the (h, w) of the image inside the padded square; ``index``.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.samples import SampleSource
from ..preprocessing.geometry import ModelGeometry
from .datamodule import DataSources, LoaderSettings, make_loader
from .datasets import _rng
from .embedding_cache import EmbeddingCache, EmbeddingCacheSpec, _cache_records, embedding_cache


@dataclass(frozen=True)
class ClipSettings:
    """length: frames per clip; prompt: ``box`` or ``click``; prompt_every: also prompt every
    k-th frame where the object is present (0: first frame only); reverse: probability of a
    downward clip (training only); box_jitter: box sides pushed outward by 0..N pixels."""

    length: int = 8
    prompt: str = "box"
    prompt_every: int = 0
    reverse: float = 0.5
    box_jitter: int = 0


@dataclass(frozen=True)
class ClipIndex:
    """Where each sample sits: ``slices[(case, z)]`` maps labels to sample indices (any label's
    sample gives the slice's image); ``keys[i]`` is sample i's (case, label, z or None)."""

    keys: tuple[tuple[str, int, int | None], ...]
    slices: dict[tuple[str, int], dict[int, int]]

    @classmethod
    def of(cls, source: SampleSource) -> ClipIndex:
        found = _cache_records(source)
        if found is not None:  # the manifest says it all: no image is read
            keys = [(r["case_id"], int(r["label"]), r.get("slice")) for r in found[0]]
        else:
            keys = [(s.case_id, int(s.label), s.slice_index) for s in (source[i] for i in range(len(source)))]
        slices: dict[tuple[str, int], dict[int, int]] = {}
        for i, (case, label, z) in enumerate(keys):
            if z is not None:
                slices.setdefault((case, int(z)), {}).setdefault(label, i)
        return cls(tuple(keys), slices)

    def frames(self, index: int, length: int, reverse: bool) -> list[tuple[int, bool]]:
        """The clip of sample ``index``: (sample giving the slice's image, label present) per frame."""
        case, label, z = self.keys[index]
        if z is None:
            return [(index, True)]
        out = []
        step = -1 if reverse else 1
        for k in range(length):
            labels = self.slices.get((case, int(z) + k * step))
            if labels is None:
                break
            present = label in labels
            out.append((labels[label] if present else next(iter(labels.values())), present))
        return out


class FrameEncoder(nn.Module):
    """The frozen part of a SAM2 model as one tensor per image, for the embedding cache: the
    image encoder and the decoder's ``conv_s0``/``conv_s1``, packed flat (vision, stride 4,
    stride 8); :meth:`unpack` gives them back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.conv_s0, self.conv_s1 = model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1
        size, hidden = model.image_size, model.hidden_dim
        self.shapes = ((hidden, size // 16, size // 16), (self.conv_s0.out_channels, size // 4, size // 4),
                       (self.conv_s1.out_channels, size // 8, size // 8))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fpn = self.image_encoder(images)
        parts = (fpn[2], self.conv_s0(fpn[0]), self.conv_s1(fpn[1]))
        return torch.cat([p.flatten(1) for p in parts], dim=1)

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, F) -> vision (N, C, S/16, S/16), stride-4 and stride-8 features."""
        sizes = [int(np.prod(s)) for s in self.shapes]
        return tuple(p.reshape(-1, *s) for p, s in zip(packed.split(sizes, dim=1), self.shapes))  # type: ignore


def _prompt(mask: np.ndarray, box: tuple[float, ...], kind: str, jitter: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    if kind == "click":
        ys, xs = np.nonzero(mask)
        i = int(rng.integers(len(ys)))
        return np.array([[xs[i], ys[i]], [0, 0]], np.float32), np.array([1, -1], np.int64)
    x0, y0, x1, y1 = box
    if jitter:
        d = rng.integers(0, jitter + 1, 4)
        size = mask.shape[-1] - 1
        x0, y0, x1, y1 = max(0, x0 - d[0]), max(0, y0 - d[1]), min(size, x1 + d[2]), min(size, y1 + d[3])
    return np.array([[x0, y0], [x1, y1]], np.float32), np.array([2, 3], np.int64)


class ClipDataset(Dataset):
    """One clip per sample (see the module docstring); ``cache`` gives cached features, else images."""

    def __init__(self, source: SampleSource, geometry: ModelGeometry, settings: ClipSettings,
                 cache: EmbeddingCache | None = None, train: bool = True) -> None:
        self.source, self.geometry, self.settings, self.cache, self.train = source, geometry, settings, cache, train
        self.index = ClipIndex.of(source)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.settings
        rng = _rng() if self.train else np.random.default_rng(index)
        reverse = self.train and bool(rng.random() < s.reverse)
        frames = self.index.frames(index, s.length, reverse)
        label = self.index.keys[index][1]
        t_len = s.length if self.index.keys[index][2] is not None else 1
        first = self.source[index]
        size = first.mask.shape[-1]
        masks = np.zeros((t_len, 1, size, size), np.float32)
        coords, labels = np.zeros((t_len, 2, 2), np.float32), np.full((t_len, 2), -1, np.int64)
        is_prompt, valid = np.zeros(t_len, bool), np.zeros(t_len, bool)
        inputs = []
        for t, (sample_index, present) in enumerate(frames):
            sample = first if t == 0 else self.source[sample_index]
            valid[t] = True
            if present and sample.label == label:
                masks[t, 0] = sample.mask
                if sample.mask.any() and (t == 0 or (s.prompt_every and t % s.prompt_every == 0)):
                    coords[t], labels[t] = _prompt(sample.mask, sample.box, s.prompt, s.box_jitter if self.train
                                                   else 0, rng)
                    is_prompt[t] = True
            if self.cache is not None:
                inputs.append(self.cache.get(sample_index))
            else:
                h, w = sample.valid_size
                inputs.append(self.geometry.normalise(sample.image[:h, :w])[0])
        pad = t_len - len(inputs)
        stacked = torch.stack(inputs + [torch.zeros_like(inputs[0])] * pad)
        return {"features" if self.cache is not None else "image": stacked, "mask": torch.from_numpy(masks),
                "frame_valid": torch.from_numpy(valid), "prompt_coords": torch.from_numpy(coords),
                "prompt_labels": torch.from_numpy(labels), "is_prompt": torch.from_numpy(is_prompt),
                "valid": torch.tensor(first.valid_size, dtype=torch.int64), "index": torch.tensor(index)}


class ClipDataModule(L.LightningDataModule):
    """Train/val clip loaders; with ``encoder`` (a :class:`FrameEncoder`) the slices' features
    are cached once (:mod:`.embedding_cache`, built by the first process) and reused."""

    def __init__(self, sources: DataSources, geometry: ModelGeometry, loader: LoaderSettings, clips: ClipSettings,
                 encoder: FrameEncoder | None = None, cache_spec: EmbeddingCacheSpec | None = None) -> None:
        super().__init__()
        if len(sources.train) == 0:
            raise ValueError("no training samples")
        self.prepare_data_per_node = False
        self.sources, self.geometry, self.loader, self.clips = sources, geometry, loader, clips
        self.encoder, self.cache_spec = encoder, cache_spec
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _all(self) -> list[SampleSource]:
        return [s for s in (self.sources.train, self.sources.val) if s is not None and len(s) > 0]

    def _cache(self, source: SampleSource, build: bool) -> EmbeddingCache | None:
        if self.encoder is None:
            return None
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        self.encoder.to(device)
        return embedding_cache(source, self.encoder, self.geometry, self.cache_spec, device, build=build)

    def prepare_data(self) -> None:
        for source in self._all():
            self._cache(source, build=True)

    def setup(self, stage: str | None = None) -> None:
        train = self.sources.train
        self.train_set = ClipDataset(train, self.geometry, self.clips, self._cache(train, False), train=True)
        val = self.sources.val
        self.val_set = (ClipDataset(val, self.geometry, self.clips, self._cache(val, False), train=False)
                        if val is not None and len(val) > 0 else None)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return make_loader(dataset, self.loader, shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
