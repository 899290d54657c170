"""The preprocess cache on disk, and :class:`PreprocessedCache`, its memory-mapped reader.

A cache is what ``medsamkit preprocess`` (:func:`medsamkit.data.preprocess.preprocess_dataset`)
writes: 2D training targets already in one model family's input frame, so a trainer only reads.
Layout of a cache folder::

    settings.json              what every shard was built with (checked on every rerun)
    manifest.json              the index of every sample (rewritten atomically after each run)
    splits.json                {"train": [case ids], "val": [case ids]}
    cases/<case>/images.npy    (n_slices, S, S, 3) uint8: resized slices, zero-padded bottom/right
    cases/<case>/masks.npy     (n_samples, S, S) uint8 in {0, 1}: one mask per (slice, label)
    cases/<case>/case.json     the case's record; written last: its presence marks the case done

``<case>`` is the case id with unsafe characters %-escaped. A shard is built in a hidden
``cases/.tmp-*`` folder and renamed into place, so a crash never leaves half a case. Several
labels of one slice share the slice's image (``image_index``), so ``images.npy`` holds each slice
once; with ``--all-slices`` it holds every slice of the case, labelled or not (for inference).

Samples follow the :class:`~medsamkit.data.samples.Sample` contract: ``image`` is
``ModelGeometry.resize_image`` of the intensity-scaled RGB slice, padded to S x S; ``mask`` is
``ModelGeometry.resize_mask`` of the label's mask; ``box`` is the box of the label's mask at the
original resolution (``box_from_mask``, inclusive pixels, after label cleanup) mapped by
``ModelGeometry.boxes_to_model`` -- exactly what a user's box in original pixels becomes at
inference, so training and inference prompts agree. The original box is kept as
``box_original``. Each sample record carries ``image_checksum``, the SHA-256 of its stored
model-input image (``case.json`` lists them per stored slice as ``image_checksums``): image
embeddings are keyed on it, so they follow the pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from medsamkit.data.samples import Sample
from medsamkit.errors import InputError
from medsamkit.io.writers import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "medsamkit-preprocess-cache"
VERSION = 1
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
SPLITS = "splits.json"
CASES = "cases"
CASE_RECORD = "case.json"
IMAGES = "images.npy"
MASKS = "masks.npy"
EMBEDDINGS = "embeddings"  # medsamkit fit's default place for the image embeddings of the samples


# ----------------------------------------------------------------------------- files
def image_checksum(image: np.ndarray) -> str:
    """SHA-256 of a stored (S, S, 3) uint8 model-input image (with its shape): the key of its
    image embedding, so embeddings follow the pixels, not the file names."""
    h = hashlib.sha256(repr(tuple(image.shape)).encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


def case_dir_name(case_id: str) -> str:
    """A flat, safe folder name for a case id (``CT/a b`` -> ``CT%2Fa%20b``; never hidden)."""
    name = quote(case_id, safe="-_+=")
    return "%2E" + name[1:] if name.startswith(".") else name or "%00"


def case_dir(root: Path, case_id: str) -> Path:
    return Path(root) / CASES / case_dir_name(case_id)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (indent 1, UTF-8)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, f"{what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the {what}: {exc}") from exc


@contextlib.contextmanager
def shard_output(root: Path, case_id: str) -> Iterator[Path]:
    """Yield a hidden temporary folder; on success it replaces ``cases/<case>`` in one rename.

    Write ``case.json`` last inside it. On an exception the temporary folder is removed and an
    existing shard is left as it was.
    """
    final = case_dir(root, case_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{uuid.uuid4().hex[:12]}-{final.name[:80]}"
    tmp.mkdir()
    try:
        yield tmp
        if not (tmp / CASE_RECORD).is_file():
            raise RuntimeError(f"the shard of {case_id} was written without its {CASE_RECORD}")
        if final.exists():
            old = final.parent / f".old-{uuid.uuid4().hex[:12]}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(root: Path) -> int:
    """Delete ``cases/.tmp-*`` / ``.old-*`` folders left by an interrupted run; return the count."""
    folder = Path(root) / CASES
    stale = [p for p in folder.glob(".tmp-*")] + [p for p in folder.glob(".old-*")] \
        if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def has_shards(root: Path) -> bool:
    """Whether any case folder (finished or not) exists in the cache."""
    folder = Path(root) / CASES
    return folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())


def read_case_record(root: Path, case_id: str) -> dict[str, Any] | None:
    """The ``case.json`` of a finished shard, or None when the case is not done."""
    path = case_dir(root, case_id) / CASE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        logger.warning("%s: unreadable shard record; the case will be redone", path)
        return None
    return record if isinstance(record, dict) and record.get("case_id") == case_id else None


# ----------------------------------------------------------------------------- manifest
def build_manifest(header: dict[str, Any], records: list[tuple[dict[str, Any], str | None]]
                   ) -> dict[str, Any]:
    """The manifest from the run's header and each finished case's (record, split).

    Cases keep the dataset's order; samples are numbered case by case, in shard order.
    """
    cases: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    for record, split in records:
        case_id = record["case_id"]
        entry = {k: v for k, v in record.items() if k not in ("samples", "case_id")}
        entry.update(dir=f"{CASES}/{case_dir_name(case_id)}", split=split,
                     n_samples=len(record["samples"]))
        cases[case_id] = entry
        for mask_index, sample in enumerate(record["samples"]):
            samples.append({"case_id": case_id, "mask_index": mask_index, **sample})
    manifest = {"format": FORMAT, "version": VERSION, **header, "cases": cases,
                "samples": samples}
    manifest["counts"] = manifest_counts(manifest)
    return manifest


def manifest_counts(manifest: dict[str, Any]) -> dict[str, Any]:
    """Cases and samples per split and per label, original sizes (for summaries)."""
    cases, samples = manifest["cases"], manifest["samples"]
    split_of = {cid: (c.get("split") or "none") for cid, c in cases.items()}
    per_split: Counter[str] = Counter(split_of[s["case_id"]] for s in samples)
    per_label: dict[str, Counter[str]] = {}
    for s in samples:
        per_label.setdefault(str(s["label"]), Counter())[split_of[s["case_id"]]] += 1
    sizes = [tuple(c["shape"][-2:]) for c in cases.values() if c.get("shape")]
    return {
        "cases": len(cases),
        "cases_per_split": dict(sorted(Counter(split_of.values()).items())),
        "samples": len(samples),
        "samples_per_split": dict(sorted(per_split.items())),
        "samples_per_label": {k: dict(sorted(v.items()))
                              for k, v in sorted(per_label.items(), key=lambda kv: int(kv[0]))},
        "slices_stored": sum(len(c.get("slices", [])) for c in cases.values()),
        "slice_size_min": [min(s[0] for s in sizes), min(s[1] for s in sizes)] if sizes else None,
        "slice_size_max": [max(s[0] for s in sizes), max(s[1] for s in sizes)] if sizes else None,
    }


# ----------------------------------------------------------------------------- reader
class CacheSubset:
    """The samples of one split of a :class:`PreprocessedCache` (a SampleSource)."""

    def __init__(self, cache: PreprocessedCache, indices: list[int], split: str) -> None:
        self.cache, self.indices, self.split = cache, list(indices), split

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.cache[self.indices[index]]


class PreprocessedCache:
    """Read a preprocess cache: ``len(cache)``, ``cache[i] -> Sample``, memory-mapped.

    Only the manifest is loaded; each case's arrays are opened with ``mmap_mode="r"`` on first
    use (at most ``max_open_cases`` kept open), and ``cache[i]`` copies just that sample. The
    object pickles without its open files (safe for DataLoader worker processes).

    Args:
        root: the cache folder written by ``medsamkit preprocess``.
        max_open_cases: how many cases' memory maps to keep open.

    Raises:
        InputError: no manifest, or a manifest of another format or version.
    """

    def __init__(self, root: str | os.PathLike, max_open_cases: int = 64) -> None:
        self.root = Path(root)
        if not (self.root / MANIFEST).is_file():
            raise InputError(self.root, f"not a preprocess cache: no {MANIFEST} "
                                        "(build one with: medsamkit preprocess DATASET -o CACHE)")
        manifest = read_json_file(self.root / MANIFEST, "cache manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InputError(self.root / MANIFEST, "not a medsamkit preprocess cache manifest")
        if manifest.get("version") != VERSION:
            raise InputError(self.root / MANIFEST, f"cache format version "
                             f"{manifest.get('version')} is not {VERSION}; preprocess again")
        self.manifest: dict[str, Any] = manifest
        self._samples: list[dict[str, Any]] = manifest["samples"]
        self._max_open = max(1, int(max_open_cases))
        self._open: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    # --- identity -----------------------------------------------------------------------
    @property
    def family(self) -> str:
        return str(self.manifest["family"])

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    def check_model(self, family: str, input_size: int | None = None) -> None:
        """Refuse a model this cache was not built for.

        Args:
            family: the model's preprocessing family (``litemedsam``, ``medsam``, ``sam``); a
                registry model name (``medsam-vit-b``) is resolved to its family.
            input_size: the model's input side S; defaults to the family's.

        Raises:
            InputError: naming the cache, what it was built for and what to do.
        """
        from medsamkit.models.registry import MODELS
        from medsamkit.preprocessing.geometry import GEOMETRIES

        if family not in GEOMETRIES and family in MODELS:
            family = MODELS[family].preprocessing
        if family not in GEOMETRIES:
            raise InputError(None, f"unknown model family {family!r}; "
                                   f"families: {', '.join(GEOMETRIES)}")
        size = GEOMETRIES[family].input_size if input_size is None else int(input_size)
        if family != self.family or size != self.input_size:
            raise InputError(self.root, f"this cache was built for {self.model} "
                             f"({self.family} geometry, {self.input_size} px) but the model needs "
                             f"{family} at {size} px; preprocess again with a matching --model "
                             "into a new folder")

    # --- samples ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._samples)

    def record(self, index: int) -> dict[str, Any]:
        """The manifest entry of sample ``index`` (case, slice, label, boxes, sizes)."""
        return self._samples[index]

    def __getitem__(self, index: int) -> Sample:
        n = len(self._samples)
        if not -n <= index < n:
            raise IndexError(f"sample {index} out of range (the cache holds {n})")
        rec = self._samples[index]
        images, masks = self._arrays(rec["case_id"])
        return Sample(
            image=np.array(images[rec["image_index"]]),
            mask=np.array(masks[rec["mask_index"]]),
            box=tuple(float(v) for v in rec["box"]),  # type: ignore[arg-type]
            valid_size=(int(rec["valid_size"][0]), int(rec["valid_size"][1])),
            case_id=rec["case_id"],
            label=int(rec["label"]),
            slice_index=rec["slice"],
        )

    def case_images(self, case_id: str) -> tuple[list[int], np.ndarray]:
        """(z index of each stored slice, the memory-mapped (n, S, S, 3) images) of a case."""
        if case_id not in self.manifest["cases"]:
            raise InputError(self.root, f"no case {case_id!r} in this cache")
        return list(self.manifest["cases"][case_id]["slices"]), self._arrays(case_id)[0]

    def _arrays(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        if case_id in self._open:
            self._open.move_to_end(case_id)
            return self._open[case_id]
        entry = self.manifest["cases"][case_id]
        folder = self.root / entry["dir"]
        try:
            images = np.load(folder / IMAGES, mmap_mode="r")
            masks = np.load(folder / MASKS, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise InputError(folder, f"cannot read the cached arrays of {case_id} ({exc}); run "
                                     "medsamkit preprocess again to redo the case") from exc
        if len(images) != len(entry["slices"]) or len(masks) != entry["n_samples"]:
            raise InputError(folder, f"the cached arrays of {case_id} do not match the manifest; "
                                     "run medsamkit preprocess again")
        self._open[case_id] = (images, masks)
        if len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return images, masks

    # --- splits -------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        """The split names present (``train``, ``val``, ``test`` ...)."""
        return sorted({c["split"] for c in self.manifest["cases"].values() if c.get("split")})

    def indices(self, split: str) -> list[int]:
        """Indices of the samples whose case is in ``split``."""
        cases = self.manifest["cases"]
        if split not in self.splits:
            raise InputError(self.root, f"no {split!r} split in this cache; splits: "
                                        f"{', '.join(self.splits) or 'none'}")
        return [i for i, s in enumerate(self._samples) if cases[s["case_id"]].get("split") == split]

    def subset(self, split: str) -> CacheSubset:
        """The samples of one split (``"train"``, ``"val"``) as a SampleSource."""
        return CacheSubset(self, self.indices(split), split)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return (f"PreprocessedCache({str(self.root)!r}: {len(self)} samples, {self.model} "
                f"{self.input_size} px)")
