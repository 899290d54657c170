"""The image-embedding cache: computed once, reused without running the encoder, recomputed when
the encoder weights, the geometry or the samples change, resumable, and exact."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from training_fixtures import TinyGeometry, make_samples, synthetic_image, tiny_sam

from medsamkit.errors import MedsamkitError
from medsamkit.preprocessing.geometry import SAMGeometry
from medsamkit.training.augment import WarpRanges, flip_sample, variant_sample
from medsamkit.training.embedding_cache import EmbeddingCacheSpec, embedding_cache, index_source


class TinySAMGeometry(SAMGeometry):
    input_size = 64


class Counted(torch.nn.Module):
    """An encoder wrapper counting its calls and the images it saw; can fail on call N."""

    def __init__(self, encoder: torch.nn.Module, fail_on: int | None = None) -> None:
        super().__init__()
        self.encoder, self.calls, self.images, self.fail_on = encoder, 0, 0, fail_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise KeyboardInterrupt("interrupted")
        self.images += x.shape[0]
        return self.encoder(x)


@pytest.fixture()
def encoder():
    torch.manual_seed(0)
    return Counted(tiny_sam().image_encoder.eval())


@pytest.fixture(scope="module")
def samples():
    return make_samples(5)


def _spec(tmp_path, **kw) -> EmbeddingCacheSpec:
    return EmbeddingCacheSpec(tmp_path / "emb", progress=False, batch_size=2, **kw)


def test_built_once_then_reused_without_the_encoder(tmp_path, encoder, samples):
    geometry = TinyGeometry()
    cache = embedding_cache(samples, encoder, geometry, _spec(tmp_path, dtype="float32"))
    assert encoder.images == 5 and encoder.calls == 3
    # exact: what the encoder gives for the normalised valid region
    for i in (0, 3):
        h, w = samples[i].valid_size
        with torch.no_grad():
            direct = encoder.encoder(geometry.normalise(samples[i].image[:h, :w]))[0]
        assert torch.allclose(cache.get(i), direct, atol=1e-5)  # batched vs single: float rounding only
    encoder.calls = encoder.images = 0
    again = embedding_cache(make_samples(5), encoder, geometry, _spec(tmp_path, dtype="float32"))  # equal copies
    assert encoder.calls == 0 and again.folder == cache.folder
    assert torch.equal(again.get(4), cache.get(4))
    meta = json.loads((cache.folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["images"] == 5 and meta["dtype"] == "float32"


def test_changed_weights_geometry_or_samples_recompute(tmp_path, encoder, samples):
    first = embedding_cache(samples, encoder, TinyGeometry(), _spec(tmp_path))
    encoder.images = 0
    with torch.no_grad():
        next(encoder.encoder.parameters()).add_(0.01)
    changed = embedding_cache(samples, encoder, TinyGeometry(), _spec(tmp_path))
    assert encoder.images == 5 and changed.folder != first.folder
    encoder.images = 0
    other_family = embedding_cache(samples, encoder, TinySAMGeometry(), _spec(tmp_path))
    assert encoder.images == 5 and other_family.folder not in (first.folder, changed.folder)
    encoder.images = 0
    edited = list(samples)
    edited[2] = dataclasses.replace(edited[2], image=edited[2].image // 2)
    embedding_cache(edited, encoder, TinyGeometry(), _spec(tmp_path))
    assert encoder.images == 5
    encoder.images = 0
    embedding_cache(samples, encoder, TinyGeometry(), _spec(tmp_path, dtype="float32"))
    assert encoder.images == 5  # the storage dtype is part of the key too


def test_float16_storage_is_close(tmp_path, encoder, samples):
    f16 = embedding_cache(samples, encoder, TinyGeometry(), _spec(tmp_path, dtype="float16"))
    f32 = embedding_cache(samples, encoder, TinyGeometry(), _spec(tmp_path, dtype="float32"))
    assert f16.array.dtype == np.float16 and f32.array.dtype == np.float32
    a, b = f16.get(1), f32.get(1)
    assert a.dtype == torch.float32 and not torch.equal(a, b)
    assert torch.allclose(a, b, rtol=2e-3, atol=1e-3)


def test_labels_of_one_image_share_a_row(tmp_path, encoder, samples):
    two_labels = [samples[0], dataclasses.replace(samples[0], mask=1 - samples[0].mask, label=2), samples[1]]
    index = index_source(two_labels)
    assert list(index.rows) == [0, 0, 1] and len(index.image_keys) == 2
    cache = embedding_cache(two_labels, encoder, TinyGeometry(), _spec(tmp_path))
    assert encoder.images == 2 and torch.equal(cache.get(0), cache.get(1))


def test_flip_variants(tmp_path, encoder, samples):
    cache = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32", variants=("hflip",)))
    assert cache.variants == ("none", "hflip") and cache.array.shape[:2] == (2, 2) and encoder.images == 4
    flipped = flip_sample(samples[1], "hflip")
    h, w = flipped.valid_size
    with torch.no_grad():
        direct = encoder.encoder(TinyGeometry().normalise(flipped.image[:h, :w]))[0]
    assert torch.allclose(cache.get(1, variant=1), direct, atol=1e-5)
    assert not torch.allclose(cache.get(1, variant=0), direct, atol=1e-2)


def test_warp_variants_encode_each_image_warped_once(tmp_path, encoder, samples):
    ranges = WarpRanges(rotate_deg=20, scale=0.1, intensity=0.1)
    two_labels = [samples[0], dataclasses.replace(samples[0], mask=1 - samples[0].mask, label=2), samples[1]]
    cache = embedding_cache(two_labels, encoder, TinyGeometry(),
                            _spec(tmp_path, dtype="float32", variants=("hflip", "warp1", "warp2"), warp=ranges))
    assert cache.variants == ("none", "hflip", "warp1", "warp2") and encoder.images == 8
    assert cache.image_key(0) == cache.image_key(1) != cache.image_key(2)
    warped = variant_sample(samples[1], "warp2", cache.image_key(2), ranges)
    h, w = warped.valid_size
    with torch.no_grad():
        direct = encoder.encoder(TinyGeometry().normalise(warped.image[:h, :w]))[0]
    assert torch.allclose(cache.get(2, variant=3), direct, atol=1e-5)
    assert not torch.allclose(cache.get(2, variant=2), direct, atol=1e-2)
    # the warp ranges are part of the key once there are warps, and only then
    encoder.images = 0
    other = embedding_cache(two_labels, encoder, TinyGeometry(), _spec(
        tmp_path, dtype="float32", variants=("hflip", "warp1", "warp2"), warp=WarpRanges(rotate_deg=5)))
    assert encoder.images == 8 and other.folder != cache.folder
    plain = embedding_cache(two_labels, encoder, TinyGeometry(), _spec(tmp_path, dtype="float32", variants=("hflip",)))
    encoder.images = 0
    same = embedding_cache(two_labels, encoder, TinyGeometry(),
                           _spec(tmp_path, dtype="float32", variants=("hflip",), warp=ranges))
    assert encoder.images == 0 and same.folder == plain.folder
    with pytest.raises(ValueError, match="warpK"):
        embedding_cache(two_labels, encoder, TinyGeometry(), _spec(tmp_path, variants=("warp0",)))


def test_interrupted_build_resumes(tmp_path, samples):
    torch.manual_seed(0)
    base = tiny_sam().image_encoder.eval()
    failing = Counted(base, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        embedding_cache(samples, failing, TinyGeometry(), _spec(tmp_path))
    [folder] = list((tmp_path / "emb").iterdir())
    assert not (folder / "meta.json").exists() and np.load(folder / "filled.npy").sum() == 2
    with pytest.raises(MedsamkitError, match="cache is missing"):
        embedding_cache(samples, Counted(base), TinyGeometry(), _spec(tmp_path), build=False)
    resumed = Counted(base)
    cache = embedding_cache(samples, resumed, TinyGeometry(), _spec(tmp_path))
    assert resumed.images == 3 and cache.folder == folder  # only the 3 missing images
    h, w = samples[0].valid_size
    with torch.no_grad():
        direct = base(TinyGeometry().normalise(samples[0].image[:h, :w]))[0]
    assert torch.allclose(cache.get(0), direct, rtol=2e-3, atol=1e-3)


def test_preprocess_cache_is_indexed_from_its_manifest(tmp_path, monkeypatch):
    from medsamkit.cli.main import main
    from medsamkit.data.cache import PreprocessedCache

    for i in range(4):
        image, mask = synthetic_image(i, 70, 90)
        (tmp_path / "ds" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "ds" / "masks").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "ds" / "images" / f"im{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(tmp_path / "ds" / "masks" / f"im{i}.png"), mask * 255)
    assert main(["-q", "preprocess", str(tmp_path / "ds"), "-o", str(tmp_path / "cache"), "--split", "0.5"]) == 0
    cache = PreprocessedCache(tmp_path / "cache")
    train = cache.subset("train")
    monkeypatch.setattr(PreprocessedCache, "__getitem__", lambda self, i: pytest.fail("read an image"))
    index = index_source(train)
    assert len(index.rows) == len(train) == 2 and len(set(index.rows)) == 2
    assert index_source(cache.subset("val")).fingerprint != index.fingerprint


def test_onnx_backend_gives_the_same_embeddings(tmp_path, encoder, samples, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "zoo"))
    torch_cache = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32"))
    encoder.images = 0
    onnx_cache = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32", backend="onnx"))
    assert onnx_cache.folder != torch_cache.folder  # the backend is part of the key
    assert encoder.images == 1  # only the export's trace ran the torch encoder
    assert torch.allclose(onnx_cache.get(1), torch_cache.get(1), atol=1e-4)


def _write_dataset(root, invert: bool = False) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(3):
        image, mask = synthetic_image(i, 70, 90)
        if invert:
            image = 255 - image
        cv2.imwrite(str(root / "images" / f"im{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask * 255)


def test_a_preprocess_cache_rebuilt_from_changed_images_gets_new_embeddings(tmp_path):
    """The stale case: same file names, settings and masks, inverted pixels. The embeddings must
    follow the pixels (per-sample checksums), and ``preprocess --overwrite`` drops the old ones."""
    from medsamkit.cli.main import main
    from medsamkit.data.cache import PreprocessedCache
    from medsamkit.preprocessing.geometry import LiteMedSAMGeometry

    geometry = LiteMedSAMGeometry()  # the cache's (256 px); a small conv stands in for the encoder
    torch.manual_seed(0)
    encoder = Counted(torch.nn.Conv2d(3, 4, 16, stride=16).eval())
    ds, cache_dir = tmp_path / "ds", tmp_path / "cache"
    _write_dataset(ds)
    assert main(["-q", "preprocess", str(ds), "-o", str(cache_dir), "--split", "1"]) == 0
    records = PreprocessedCache(cache_dir).manifest["samples"]
    assert all(len(r["image_checksum"]) == 64 for r in records)
    spec = EmbeddingCacheSpec(tmp_path / "emb", progress=False, dtype="float32")
    first = embedding_cache(PreprocessedCache(cache_dir), encoder, geometry, spec)
    old = first.get(0).clone()
    (cache_dir / "embeddings").mkdir()  # where fit keeps them by default
    (cache_dir / "embeddings" / "marker").write_text("old", encoding="utf-8")

    _write_dataset(ds, invert=True)
    assert main(["-q", "preprocess", str(ds), "-o", str(cache_dir), "--split", "1", "--overwrite"]) == 0
    assert not (cache_dir / "embeddings").exists()
    rebuilt = PreprocessedCache(cache_dir)
    assert [r["image_checksum"] for r in rebuilt.manifest["samples"]] != [r["image_checksum"] for r in records]
    encoder.images = 0
    second = embedding_cache(rebuilt, encoder, geometry, spec)  # same root as the first
    assert second.folder != first.folder and encoder.images == len(rebuilt)
    h, w = rebuilt[0].valid_size
    with torch.no_grad():
        direct = encoder.encoder(geometry.normalise(rebuilt[0].image[:h, :w]))[0]
    assert torch.allclose(second.get(0), direct, atol=1e-5) and not torch.allclose(second.get(0), old, atol=1e-3)


def test_a_cache_without_checksums_hashes_its_images(tmp_path):
    """Preprocess caches written before the checksums: the key still follows the pixels."""
    from medsamkit.cli.main import main
    from medsamkit.data.cache import PreprocessedCache

    ds, cache_dir = tmp_path / "ds", tmp_path / "cache"
    _write_dataset(ds)
    assert main(["-q", "preprocess", str(ds), "-o", str(cache_dir), "--split", "1"]) == 0
    with_sums = index_source(PreprocessedCache(cache_dir))
    manifest_path = cache_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for record in manifest["samples"]:
        del record["image_checksum"]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    without = index_source(PreprocessedCache(cache_dir))
    assert without.fingerprint == with_sums.fingerprint  # the same pixels, hashed on the fly


def test_openvino_backend_gives_the_same_embeddings(tmp_path, encoder, samples, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "zoo"))
    torch_cache = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32"))
    ov_cache = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32",
                                                                           backend="openvino"))
    assert ov_cache.folder != torch_cache.folder
    assert torch.allclose(ov_cache.get(1), torch_cache.get(1), atol=1e-4)


def test_auto_backend_is_the_fastest_installed_engine_on_the_cpu(monkeypatch):
    from medsamkit.inference import onnx_encoder, openvino_encoder
    from medsamkit.training.embedding_cache import resolve_backend

    for ov, ort, expected in [(True, True, "openvino"), (False, True, "onnx"), (False, False, "torch")]:
        monkeypatch.setattr(openvino_encoder, "openvino_available", lambda ov=ov: ov)
        monkeypatch.setattr(onnx_encoder, "onnx_available", lambda ort=ort: ort)
        assert resolve_backend("auto", "cpu") == expected
    monkeypatch.setattr(openvino_encoder, "openvino_available", lambda: True)
    assert resolve_backend("auto", torch.device("meta")) == "torch"  # not a CPU: torch
    assert resolve_backend("onnx", "cpu") == "onnx"  # a name asked for is kept


def test_auto_backend_keys_the_cache_by_the_engine_it_resolves_to(tmp_path, encoder, samples, monkeypatch):
    from medsamkit.inference import onnx_encoder, openvino_encoder

    monkeypatch.setattr(openvino_encoder, "openvino_available", lambda: False)
    monkeypatch.setattr(onnx_encoder, "onnx_available", lambda: False)
    auto = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32", backend="auto"))
    torch_cache = embedding_cache(samples[:2], encoder, TinyGeometry(), _spec(tmp_path, dtype="float32"))
    assert auto.folder == torch_cache.folder  # auto resolved to torch here: the same cache, reused
