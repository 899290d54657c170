"""Tests for medsamkit.data.cache: the reader (SampleSource, memory maps, splits, model check),
shard writing and the manifest."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import synthetic_datasets as synth
from medsamkit.data.cache import (
    CASE_RECORD,
    PreprocessedCache,
    case_dir,
    case_dir_name,
    read_case_record,
    remove_stale_temporaries,
    shard_output,
    write_json,
)
from medsamkit.data.preprocess import PreprocessSettings, RunOptions, SplitSpec, preprocess_dataset
from medsamkit.data.samples import Sample, SampleSource
from medsamkit.errors import InputError


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    """A small 3D cache: 3 CT cases, 6 samples each, split 2 train / 1 val."""
    root = tmp_path_factory.mktemp("cache")
    source = synth.nnunet(root / "data", n=3)
    preprocess_dataset(source, root / "cache", PreprocessSettings(), SplitSpec(fraction=0.67),
                       RunOptions(progress=False))
    return root / "cache"


def test_cache_is_a_sample_source(cache_root: Path) -> None:
    cache = PreprocessedCache(cache_root)
    assert isinstance(cache, SampleSource) and len(cache) == 18
    sample = cache[0]
    assert isinstance(sample, Sample) and sample.case_id == "case0" and sample.slice_index == 1
    assert sample.label == 1 and sample.image.flags.writeable and sample.mask.flags.writeable
    last = cache[-1]
    assert (last.case_id, last.slice_index) == ("case2", 6)
    with pytest.raises(IndexError):
        cache[18]
    assert [s.slice_index for s in (cache[i] for i in range(6))] == [1, 2, 3, 4, 5, 6]
    assert len(list(iter(cache.subset("val")))) == 6  # iteration stops at IndexError


def test_arrays_are_memory_mapped_and_bounded(cache_root: Path) -> None:
    cache = PreprocessedCache(cache_root, max_open_cases=1)
    first = cache[0]
    images, masks = next(iter(cache._open.values()))
    assert isinstance(images, np.memmap) and isinstance(masks, np.memmap)
    assert images.shape == (6, 256, 256, 3) and masks.shape == (6, 256, 256)
    cache[17]
    assert list(cache._open) == ["case2"]  # the least recently used case was closed
    np.testing.assert_array_equal(cache[0].image, first.image)  # reopened, same data


def test_splits_and_subsets(cache_root: Path) -> None:
    cache = PreprocessedCache(cache_root)
    assert cache.splits == ["train", "val"]
    train, val = cache.subset("train"), cache.subset("val")
    assert len(train) + len(val) == len(cache) and len(train) == 12
    assert {train[i].case_id for i in range(len(train))}.isdisjoint(
        {val[i].case_id for i in range(len(val))})
    assert train.indices == cache.indices("train") and isinstance(val, SampleSource)
    with pytest.raises(InputError, match="no 'test' split in this cache; splits: train, val"):
        cache.subset("test")


def test_check_model_refuses_another_frame(cache_root: Path) -> None:
    cache = PreprocessedCache(cache_root)
    cache.check_model("litemedsam")
    cache.check_model("litemedsam", 256)
    with pytest.raises(InputError, match=r"built for litemedsam \(litemedsam geometry, 256 px\) "
                                         r"but the model needs medsam at 1024 px"):
        cache.check_model("medsam-vit-b")
    with pytest.raises(InputError, match="needs sam at 1024 px"):
        cache.check_model("sam")
    with pytest.raises(InputError, match="needs litemedsam at 512 px"):
        cache.check_model("litemedsam", 512)
    with pytest.raises(InputError, match="unknown model family 'unet'"):
        cache.check_model("unet")


def test_pickles_without_open_files(cache_root: Path) -> None:
    cache = PreprocessedCache(cache_root)
    sample = cache[3]
    copy = pickle.loads(pickle.dumps(cache))
    assert copy._open == {}
    np.testing.assert_array_equal(copy[3].mask, sample.mask)


def test_manifest_records_and_counts(cache_root: Path) -> None:
    manifest = PreprocessedCache(cache_root).manifest
    assert manifest["format"] == "medsamkit-preprocess-cache" and manifest["version"] == 1
    assert manifest["settings"]["min_size_3d"] == 1000 and manifest["input_size"] == 256
    record = manifest["samples"][0]
    assert set(record) == {"case_id", "mask_index", "image_index", "slice", "label", "box",
                           "box_original", "original_size", "valid_size", "image_checksum"}
    # the checksum is the SHA-256 of the stored model-input image (its shape, then its bytes)
    cache = PreprocessedCache(cache_root)
    image = cache[0].image
    digest = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
    assert record["image_checksum"] == digest
    assert record["original_size"] == [40, 48] and record["valid_size"] == [213, 256]
    counts = manifest["counts"]
    assert counts["samples_per_split"] == {"train": 12, "val": 6}
    assert counts["samples_per_label"] == {"1": {"train": 12, "val": 6}}
    assert counts["cases_per_split"] == {"train": 2, "val": 1} and counts["slices_stored"] == 18


def test_missing_or_broken_caches_are_named(tmp_path: Path, cache_root: Path) -> None:
    with pytest.raises(InputError, match="not a preprocess cache: no manifest.json"):
        PreprocessedCache(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(InputError, match="not a medsamkit preprocess cache manifest"):
        PreprocessedCache(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(cache_root, broken)
    (case_dir(broken, "case1") / "masks.npy").unlink()
    cache = PreprocessedCache(broken)
    cache[0]
    with pytest.raises(InputError, match="cannot read the cached arrays of case1"):
        cache[6]


def test_case_dir_names_are_flat_and_distinct() -> None:
    names = [case_dir_name(i) for i in ("CT/CT_Abd_0001", "CT_CT_Abd_0001", "a b", ".hidden", "50%")]
    assert names == ["CT%2FCT_Abd_0001", "CT_CT_Abd_0001", "a%20b", "%2Ehidden", "50%25"]
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_shard_output_is_all_or_nothing(tmp_path: Path) -> None:
    with shard_output(tmp_path, "a") as tmp:
        np.save(tmp / "images.npy", np.zeros(3))
        write_json(tmp / CASE_RECORD, {"case_id": "a", "samples": []})
    assert read_case_record(tmp_path, "a") == {"case_id": "a", "samples": []}
    with pytest.raises(RuntimeError, match="boom"):
        with shard_output(tmp_path, "a") as tmp:
            np.save(tmp / "images.npy", np.ones(5))
            raise RuntimeError("boom")
    assert np.load(case_dir(tmp_path, "a") / "images.npy").tolist() == [0, 0, 0]  # old shard kept
    with pytest.raises(RuntimeError, match="without its case.json"):
        with shard_output(tmp_path, "b"):
            pass
    assert read_case_record(tmp_path, "b") is None
    assert sorted(p.name for p in (tmp_path / "cases").iterdir()) == ["a"]  # no temporaries left
    (tmp_path / "cases/.tmp-123-x").mkdir()
    assert remove_stale_temporaries(tmp_path) == 1
