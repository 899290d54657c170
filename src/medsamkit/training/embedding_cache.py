"""Image embeddings computed once for a whole sample source, memory-mapped, reused across epochs
and runs (decoder-only fine-tuning touches only the mask decoder).

A cache is a folder ``<root>/<key>/`` holding ``embeddings.npy``, a (V, N, 256, 64, 64) array
(the encoder output's shape)
(V variants: the image as is, then any cached flips and warps (:func:`~medsamkit.training.augment.variant_sample`);
N distinct images, so several labels of one slice share a row), ``filled.npy`` (which rows are done: an interrupted build resumes) and
``meta.json`` (written last). The key hashes everything the embeddings depend on: the image
encoder's weights, the geometry family and input size, the storage dtype, the variants and the
samples themselves: the pixels of each model-input image (the checksum ``medsamkit preprocess``
writes in each sample record, or a hash of the image bytes of any other source) with the
preprocess cache's settings and records. Change any of them and a new cache is built; keep them
and the encoder never runs. A preprocess cache rebuilt from changed images therefore gets new
embeddings, and ``preprocess --overwrite`` removes the old ones (``<cache>/embeddings``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.cache import image_checksum
from ..data.samples import SampleSource
from ..errors import MedsamkitError
from ..io.writers import atomic_output
from ..preprocessing.geometry import ModelGeometry
from .augment import WarpRanges, is_warp, variant_sample

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SourceIndex:
    """Which embedding row each sample uses.

    image_keys: one key per distinct image, in row order.
    rows: (n_samples,) row of each sample.
    fingerprint: hash of everything about the samples that the embeddings depend on.
    """

    image_keys: tuple[str, ...]
    rows: np.ndarray
    fingerprint: str


def _cache_records(source: Any) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """(manifest records of the source's samples, the manifest) for a preprocess cache or a
    subset/view of one; None for other sources."""
    if hasattr(source, "base") and hasattr(source, "indices"):  # a SourceView
        inner = _cache_records(source.base)
        return None if inner is None else ([inner[0][i] for i in source.indices], inner[1])
    if hasattr(source, "cache") and hasattr(source, "indices"):  # CacheSubset
        return [source.cache.record(i) for i in source.indices], source.cache.manifest
    if hasattr(source, "record") and hasattr(source, "manifest"):  # PreprocessedCache
        return [source.record(i) for i in range(len(source))], source.manifest
    return None


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def index_source(source: SampleSource) -> SourceIndex:
    """Map samples to distinct images without reading them when the source is a preprocess
    cache (its manifest says which samples share an image); otherwise hash each image."""
    found = _cache_records(source)
    if found is not None:
        records, manifest = found
        missing = [i for i, r in enumerate(records) if not r.get("image_checksum")]
        if missing:  # a cache written before per-sample checksums: hash its images once
            log.info("the preprocess cache has no image checksums (an older version); hashing %d samples",
                     len(missing))
            records = list(records)
            for i in missing:
                records[i] = {**records[i], "image_checksum": image_checksum(source[i].image)}
        keys = [f"{r['case_id']}\0{r['image_index']}" for r in records]
        cases = sorted({r["case_id"] for r in records})
        fingerprint = _digest({"settings": manifest.get("settings"), "records": records,
                               "cases": {c: manifest["cases"][c] for c in cases}})
    else:
        keys = []
        for i in range(len(source)):
            sample = source[i]
            h = hashlib.sha1(np.ascontiguousarray(sample.image).tobytes())
            h.update(repr((sample.image.shape, sample.valid_size)).encode())
            keys.append(h.hexdigest())
        fingerprint = _digest(keys)
    order: dict[str, int] = {}
    rows = np.array([order.setdefault(k, len(order)) for k in keys], dtype=np.int64)
    return SourceIndex(tuple(order), rows, fingerprint)


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 of the encoder's state_dict (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """A finished cache opened read-only: ``cache.get(sample_index, variant)`` -> (C, h, w) float32
    ((256, 64, 64) for every SAM-family model)."""

    def __init__(self, folder: Path, index: SourceIndex, variants: tuple[str, ...],
                 warp: WarpRanges | None = None) -> None:
        self.folder = folder
        self.index = index
        self.variants = variants
        self.warp = warp  # the ranges the warp variants were drawn from
        self.array = np.load(folder / "embeddings.npy", mmap_mode="r")

    def image_key(self, sample_index: int) -> str:
        """The key of the image a sample's embedding row holds (seeds its warp variants)."""
        return self.index.image_keys[self.index.rows[sample_index]]

    def __len__(self) -> int:
        return len(self.index.rows)

    def get(self, sample_index: int, variant: int = 0) -> torch.Tensor:
        row = self.index.rows[sample_index]
        return torch.from_numpy(np.array(self.array[variant, row], dtype=np.float32))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the memmap
        state = dict(self.__dict__)
        state["array"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.array = np.load(self.folder / "embeddings.npy", mmap_mode="r")


@dataclass(frozen=True)
class EmbeddingCacheSpec:
    """How to build a cache: storage folder and dtype, variants, batching."""

    root: Path
    dtype: str = "float16"
    variants: tuple[str, ...] = ()  # extra flips "hflip", "vflip" and warps "warp1", "warp2", ...
    warp: WarpRanges | None = None  # the ranges warps are drawn from (needed with warp variants)
    batch_size: int = 8
    progress: bool = True
    backend: str = "torch"  # "onnx" / "openvino": ONNX Runtime / OpenVINO fp32 on the CPU (faster, same numbers
    # to ~4e-6); "auto": the fastest of these installed (resolve_backend)


def resolve_backend(backend: str, device: str | torch.device) -> str:
    """``auto`` -> OpenVINO fp32 on a CPU where it is installed, else ONNX Runtime, else torch (torch on
    a GPU): the engines give the torch embeddings to ~4e-6 and build the cache several times faster
    (docs/benchmarks.md, "Training speed"). Other names are returned as they are."""
    if backend != "auto":
        return backend
    if torch.device(device).type != "cpu":
        return "torch"
    from ..inference.onnx_encoder import onnx_available
    from ..inference.openvino_encoder import openvino_available

    return "openvino" if openvino_available() else "onnx" if onnx_available() else "torch"


def cache_key(encoder_hash: str, geometry: ModelGeometry, index: SourceIndex, spec: EmbeddingCacheSpec) -> str:
    fields = {"version": FORMAT_VERSION, "encoder": encoder_hash, "family": geometry.family,
              "input_size": geometry.input_size, "samples": index.fingerprint, "dtype": spec.dtype,
              "variants": ["none", *spec.variants], "backend": spec.backend}
    if any(is_warp(v) for v in spec.variants):  # only then: caches without warps keep their keys
        fields["warp"] = dataclasses.asdict(spec.warp or WarpRanges())
    return _digest(fields)[:24]


def _first_samples(source: SampleSource, index: SourceIndex) -> list[int]:
    first: dict[int, int] = {}
    for i, row in enumerate(index.rows):
        first.setdefault(int(row), i)
    return [first[r] for r in range(len(index.image_keys))]


def _open_partial(folder: Path, n_variants: int, n_images: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The arrays of an interrupted build (to resume), or (None, nothing filled)."""
    path, filled_path = folder / "embeddings.npy", folder / "filled.npy"
    if path.is_file() and filled_path.is_file():
        array = np.load(path, mmap_mode="r+")
        filled = np.load(filled_path)
        if array.shape[:2] == (n_variants, n_images) and filled.shape == (n_variants, n_images):
            return array, filled
    return None, np.zeros((n_variants, n_images), dtype=bool)


@torch.inference_mode()
def _fill(source: SampleSource, encoder: nn.Module, geometry: ModelGeometry, index: SourceIndex,
          spec: EmbeddingCacheSpec, folder: Path, device: torch.device) -> None:
    runner = _engine_runner(encoder, geometry, device, spec.backend) if spec.backend != "torch" else None
    variants = ("none", *spec.variants)
    folder.mkdir(parents=True, exist_ok=True)
    array, filled = _open_partial(folder, len(variants), len(index.image_keys))
    todo = [(v, r) for v in range(len(variants)) for r in range(len(index.image_keys)) if not filled[v, r]]
    sample_of_row = _first_samples(source, index)
    was_training = encoder.training
    encoder.eval()
    bar = tqdm(total=len(todo), desc="image embeddings", unit="img", disable=not spec.progress)
    try:
        for start in range(0, len(todo), spec.batch_size):
            chunk = todo[start:start + spec.batch_size]
            tensors = []
            for v, r in chunk:
                sample = source[sample_of_row[r]]
                if variants[v] != "none":  # the image's variant, whatever its labels (a full mask)
                    full = dataclasses.replace(sample, mask=np.ones_like(sample.mask))
                    sample = variant_sample(full, variants[v], index.image_keys[r], spec.warp, min_kept=0.0)
                h, w = sample.valid_size
                tensors.append(geometry.normalise(sample.image[:h, :w]))
            if runner is None:
                out = encoder(torch.cat(tensors).to(device)).float().cpu().numpy()
            else:  # the engines take one image at a time
                out = torch.cat([runner(t) for t in tensors]).float().cpu().numpy()
            if array is None:  # the embedding shape is known once the encoder has run
                shape = (len(variants), len(index.image_keys), *out.shape[1:])
                array = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.dtype(spec.dtype),
                                                  shape=shape)
            for (v, r), emb in zip(chunk, out):
                array[v, r] = emb
                filled[v, r] = True
            array.flush()
            with atomic_output(folder / "filled.npy") as tmp:
                np.save(tmp, filled)
            bar.update(len(chunk))
    finally:
        bar.close()
        encoder.train(was_training)


def _engine_runner(encoder: nn.Module, geometry: ModelGeometry, device: torch.device, backend: str):
    """The encoder on ONNX Runtime or OpenVINO (fp32: the embeddings the decoder is tuned on are the
    torch ones to ~4e-6)."""
    from ..inference.onnx_encoder import OnnxEncoder
    from ..inference.openvino_encoder import OpenVinoEncoder
    from ..models.zoo import cache_dir

    if device.type != "cpu":
        raise MedsamkitError(f"data.embedding_backend {backend} runs on the CPU, not {device}; use torch on a GPU")
    arch = type(encoder).__name__.lower()
    if backend == "openvino":
        return OpenVinoEncoder(encoder, geometry.input_size, cache_dir(), arch, "fp32")
    return OnnxEncoder(encoder, geometry.input_size, cache_dir() / "onnx", arch)


def embedding_cache(source: SampleSource, encoder: nn.Module, geometry: ModelGeometry, spec: EmbeddingCacheSpec,
                    device: str | torch.device = "cpu", build: bool = True) -> EmbeddingCache:
    """Open the cache of ``source`` under ``encoder``, building (or finishing) it if needed.

    Args:
        build: False only opens (ranks other than the one that built it); a missing cache
            then raises :class:`~medsamkit.errors.MedsamkitError`.
    """
    for variant in spec.variants:
        if variant not in ("hflip", "vflip") and not is_warp(variant):
            raise ValueError(f"unknown embedding variant {variant!r} (hflip, vflip or warpK)")
    spec = replace(spec, backend=resolve_backend(spec.backend, device))
    index = index_source(source)
    key = cache_key(encoder_fingerprint(encoder), geometry, index, spec)
    folder = Path(spec.root) / key
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        if not build:
            raise MedsamkitError(f"{folder}: the image embedding cache is missing; it is built by the first process")
        log.info("computing image embeddings of %d images (%d variant(s)) into %s",
                 len(index.image_keys), 1 + len(spec.variants), folder)
        _fill(source, encoder, geometry, index, spec, folder, torch.device(device))
        meta = {"version": FORMAT_VERSION, "key": key, "family": geometry.family, "input_size": geometry.input_size,
                "dtype": spec.dtype, "variants": ["none", *spec.variants], "images": len(index.image_keys),
                "samples": len(index.rows)}
        with atomic_output(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    else:
        log.info("reusing the image embeddings in %s", folder)
    return EmbeddingCache(folder, index, ("none", *spec.variants), spec.warp)


def variant_names(flips: Sequence[str], warps: int = 0) -> tuple[str, ...]:
    """Validated, de-duplicated flip variants in a stable order, then ``warps`` warp variants."""
    return (*(f for f in ("hflip", "vflip") if f in set(flips)), *(f"warp{k}" for k in range(1, warps + 1)))
