"""One case -> its samples: intensity choice, label cleanup, resizing into the model frame and
the case's shard (the per-case half of :mod:`medsamkit.data.preprocess`, run in worker processes).

Per case: read the image and label (:func:`medsamkit.data.case_arrays.read_case_arrays`); scale
intensities to uint8 with one scheme for the whole volume (:func:`choose_intensity`); clean the
labels at the original resolution (MedSAM: 3D objects < 1000 voxels, 26-connected, then 2D
objects < 100 pixels per slice, 8-connected); keep the slices holding a label (every slice with
``all_slices``), resize each with the model family's geometry and make one sample per (slice,
label id): the resized mask, and the box of the original-resolution mask mapped into the model
frame by ``boxes_to_model`` (what a user's box becomes at inference). A label whose mask vanishes
in the resize (tiny object, large downscale) gives no sample and is counted.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsamkit.data import cache as fmt
from medsamkit.data.case_arrays import CaseArrays, read_case_arrays
from medsamkit.data.cases import Case
from medsamkit.data.export import MedsamNpyExport
from medsamkit.errors import MedsamkitError
from medsamkit.preprocessing.geometry import Frame, ModelGeometry, geometry_for
from medsamkit.preprocessing.intensity import (
    Compose,
    PercentileClip,
    Scheme,
    select_scheme,
    to_rgb_uint8,
)
from medsamkit.preprocessing.labels import box_from_mask, clean_labels

logger = logging.getLogger(__name__)

#: dataset.json channel names -> modality for select_scheme: whole words, then word prefixes
_CHANNEL_WORDS = {"ct": "ct", "cect": "ct", "ncct": "ct", "us": "us", "pet": "pet",
                  "xray": "xray", "x ray": "xray"}
_CHANNEL_PREFIXES = (("mr", "mr"), ("t1", "mr"), ("t2", "mr"), ("flair", "mr"), ("adc", "mr"),
                     ("dwi", "mr"), ("cine", "mr"), ("swi", "mr"), ("ultrasound", "us"))


@dataclass(frozen=True)
class PreprocessSettings:
    """What every shard of a cache is built with; a rerun must use the same (or a new folder).

    Attributes:
        model: registry model name; its preprocessing family sets the geometry and input size.
        layout: dataset layout name, None to detect it.
        modality: intensity modality (see ``select_scheme``); None: from dataset.json, else auto.
        window: CT window preset or ``"L,W"``.
        channel: which channel of multi-channel cases (nnU-Net ``_000C``) to use.
        min_size_3d: 3D objects (26-connected) under this many voxels are removed from volumes.
        min_size_2d: 2D objects (8-connected) under this many pixels are removed per slice.
        all_slices: also store the slices without labels (for inference).
    """

    model: str = "litemedsam"
    layout: str | None = None
    modality: str | None = None
    window: str | None = None
    channel: int = 0
    min_size_3d: int = 1000
    min_size_2d: int = 100
    all_slices: bool = False

    @property
    def family(self) -> str:
        from medsamkit.models.registry import get_spec

        return get_spec(self.model).preprocessing

    @property
    def input_size(self) -> int:
        return geometry_for(self.family).input_size

    def record(self) -> dict[str, Any]:
        """The settings as stored in ``settings.json`` (family and input size included)."""
        return {**dataclasses.asdict(self), "family": self.family, "input_size": self.input_size}


# ------------------------------------------------------------------------------ intensity
@dataclass(frozen=True)
class ShiftToZero:
    """Subtract the array's minimum, so a constant negative background (z-scored MR) becomes 0.

    Used before :class:`PercentileClip` on data with negative values: its percentiles are taken
    over the values > 0, which for z-scored data would drop every voxel below the mean.
    """

    def describe(self) -> str:
        return "shift the minimum to 0"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        arr = np.asarray(array)
        return arr - arr.min() if arr.size else arr


def modality_from_channel_name(name: str | None) -> str | None:
    """``"CT"`` -> ``"ct"``, ``"T2"``/``"FLAIR"``/``"MRI"`` -> ``"mr"`` ...; None when unknown."""
    text = " ".join(str(name or "").lower().replace("_", " ").replace("-", " ").split())
    if text in _CHANNEL_WORDS:
        return _CHANNEL_WORDS[text]
    for word in text.split():
        if word in _CHANNEL_WORDS:
            return _CHANNEL_WORDS[word]
        for prefix, modality in _CHANNEL_PREFIXES:
            if word.startswith(prefix):
                return modality
    return None


def choose_intensity(arrays: CaseArrays, settings: PreprocessSettings,
                     meta: dict[str, Any]) -> tuple[Scheme, str]:
    """The intensity scheme of one case and a one-line description saying why.

    Modality: ``settings.modality``, else the dataset.json name of the channel used ("CT" ->
    CT window, MR names -> percentiles), else chosen by the data kind (uint8 as is, other data
    0.5-99.5 percentile clip). Percentile clipping of data with negative values first shifts
    the minimum to 0 (:class:`ShiftToZero`).
    """
    modality, origin = settings.modality, "--modality"
    if modality is None and settings.window is None:
        name = meta.get("channel_names", {}).get(str(settings.channel))
        modality = modality_from_channel_name(name)
        origin = f"dataset.json channel {settings.channel} {name!r}" if modality else "data kind"
    scheme, description = select_scheme(arrays.kind, modality, settings.window)
    if isinstance(scheme, PercentileClip) and scheme.nonzero_only and arrays.image.size \
            and float(arrays.image.min()) < 0:
        scheme = Compose(ShiftToZero(), scheme)
        description = f"{ShiftToZero().describe()} (data has negative values), then {description}"
    return scheme, f"{description} (modality from {origin})"


# ------------------------------------------------------------------------------ one case
@dataclass(frozen=True)
class CaseJob:
    """Everything a worker needs to preprocess one case (picklable)."""

    case: Case
    layout: str
    meta: dict[str, Any]
    settings: PreprocessSettings
    cache_root: Path
    export_dir: Path | None = None


@dataclass
class CaseResult:
    case_id: str
    status: str  # "done", "empty" or "failed"
    samples: int = 0
    message: str = ""
    scheme: str = ""


def _clean(arrays: CaseArrays, settings: PreprocessSettings) -> np.ndarray | None:
    if arrays.label is None:
        return None
    if arrays.is_3d:
        return clean_labels(arrays.label, settings.min_size_3d, settings.min_size_2d)
    return clean_labels(arrays.label[0], settings.min_size_3d, settings.min_size_2d)[np.newaxis]


def _geometry_record(arrays: CaseArrays) -> dict[str, Any]:
    g = arrays.geometry
    return {"spacing": list(g.spacing), "origin": list(g.origin), "direction": list(g.direction),
            "axis_order": g.axis_order}


def _slice_samples(geometry: ModelGeometry, frame: Frame, label_slice: np.ndarray,
                   where: tuple[int | None, int], masks: list[np.ndarray]
                   ) -> tuple[list[dict[str, Any]], int]:
    """One sample per label id of a slice (``where`` = (z or None, index in images.npy)).

    Appends the resized masks to ``masks``; returns (records, number dropped after resizing).
    """
    (z, image_index), records, dropped = where, [], 0
    for label in (int(v) for v in np.unique(label_slice) if v != 0):
        target = label_slice == label
        box = box_from_mask(target, min_component=0)
        resized = geometry.resize_mask(target.astype(np.uint8), frame)
        if box is None or not resized.any():  # too small to survive the resize
            dropped += 1
            continue
        model_box = geometry.boxes_to_model(np.asarray([box], np.float64), frame)[0]
        masks.append(resized.astype(np.uint8))
        records.append({
            "image_index": image_index, "slice": z, "label": label,
            "box": [float(v) for v in model_box], "box_original": [int(v) for v in box],
            "original_size": list(frame.original_size), "valid_size": list(frame.resized_size),
        })
    return records, dropped


def _write_case(job: CaseJob, arrays: CaseArrays, image8: np.ndarray,
                label: np.ndarray | None, scheme: str) -> CaseResult:
    settings, case_id = job.settings, job.case.case_id
    geometry = geometry_for(settings.family)
    size = settings.input_size
    labelled = [] if label is None else [z for z in range(arrays.n_slices) if label[z].any()]
    stored = list(range(arrays.n_slices)) if settings.all_slices else labelled
    exporter = MedsamNpyExport(job.export_dir) if job.export_dir is not None else None
    samples: list[dict[str, Any]] = []
    masks: list[np.ndarray] = []
    checksums: list[str] = []
    dropped = 0
    with fmt.shard_output(job.cache_root, case_id) as tmp:
        images = np.lib.format.open_memmap(tmp / fmt.IMAGES, mode="w+", dtype=np.uint8,
                                           shape=(len(stored), size, size, 3))
        for index, z in enumerate(stored):
            rgb = to_rgb_uint8(image8[z])
            resized, frame = geometry.resize_image(rgb)
            h, w = frame.resized_size
            images[index, :h, :w] = resized  # the rest stays 0 (padding)
            checksums.append(fmt.image_checksum(images[index]))
            if label is not None and label[z].any():
                slice_index = z if arrays.is_3d else None
                records, lost = _slice_samples(geometry, frame, label[z], (slice_index, index),
                                               masks)
                samples += records
                dropped += lost
                if exporter is not None:
                    exporter.write(case_id, slice_index, rgb, label[z])
        images.flush()
        del images
        for sample in samples:  # what the image embeddings depend on: the model input's pixels
            sample["image_checksum"] = checksums[sample["image_index"]]
        stack = np.stack(masks) if masks else np.zeros((0, size, size), np.uint8)
        with open(tmp / fmt.MASKS, "wb") as f:
            np.save(f, stack, allow_pickle=False)
        status = "done" if samples or (settings.all_slices and label is None) else "empty"
        record = {
            "case_id": case_id, "status": status, "is_3d": arrays.is_3d,
            "shape": list(arrays.image.shape[:3]), "geometry": _geometry_record(arrays),
            "sources": arrays.sources, "label_sources": arrays.label_sources,
            "intensity": scheme, "image_kind": arrays.kind,
            "slices": [z if arrays.is_3d else None for z in stored],
            "labelled_slices": len(labelled), "dropped_after_resize": dropped,
            "medsam_npy_export": None if job.export_dir is None else str(job.export_dir),
            "image_checksums": checksums, "samples": samples,
        }
        fmt.write_json(tmp / fmt.CASE_RECORD, record)
    message = ""
    if status == "empty" and (arrays.label is None or not arrays.label.any()):
        message = "the label holds no foreground"
    elif status == "empty":
        message = (f"every object is below the minimum size (3D {settings.min_size_3d} voxels, "
                   f"2D {settings.min_size_2d} pixels) or vanished when resized")
    return CaseResult(case_id, status, len(samples), message, scheme)


def process_case(job: CaseJob) -> CaseResult:
    """Preprocess one case and write its shard; any error becomes a ``failed`` result."""
    case_id = job.case.case_id
    try:
        arrays = read_case_arrays(job.case, job.layout, job.meta, job.settings.channel)
        scheme, description = choose_intensity(arrays, job.settings, job.meta)
        image8 = scheme(arrays.image)
        label = _clean(arrays, job.settings)
        return _write_case(job, arrays, image8, label, description)
    except MedsamkitError as exc:
        return CaseResult(case_id, "failed", message=" ".join(str(exc).split()))
    except (OSError, ValueError, MemoryError) as exc:
        logger.debug("case %s failed", case_id, exc_info=True)
        return CaseResult(case_id, "failed", message=f"{type(exc).__name__}: {exc}")


def init_worker() -> None:
    """Worker-process set-up: one OpenCV thread per process (the processes are the parallelism)."""
    import cv2

    cv2.setNumThreads(1)
