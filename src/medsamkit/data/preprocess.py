"""The preprocess pipeline: a dataset folder -> a cache of 2D samples in a model's input frame.

:func:`preprocess_dataset` reads the dataset (:func:`medsamkit.data.layouts.read_dataset`),
assigns the train/val split, checks or creates the cache folder, runs
:func:`medsamkit.data.case_samples.process_case` on every case not done yet (in worker
processes when asked; each writes its shard atomically, see :mod:`medsamkit.data.cache`, and
optionally MedSAM's npy files, see :mod:`medsamkit.data.export`), and rewrites the manifest.

Finished cases are skipped on a rerun (resume); a failing case is reported and the run goes on.
The manifest and ``splits.json`` are rewritten from the shards at the end of every run.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medsamkit.data import cache as fmt
from medsamkit.data.case_arrays import has_label
from medsamkit.data.case_samples import (
    CaseJob,
    CaseResult,
    PreprocessSettings,
    choose_intensity,
    init_worker,
    modality_from_channel_name,
    process_case,
)
from medsamkit.data.cases import Case, Dataset
from medsamkit.data.layouts import read_dataset
from medsamkit.data.splits import read_split_file, split_cases, write_split_file
from medsamkit.errors import InputError
from medsamkit.preprocessing.intensity import select_scheme

__all__ = ["PreprocessSettings", "PreprocessSummary", "RunOptions", "SplitSpec", "assign_splits",
           "choose_intensity", "modality_from_channel_name", "preprocess_dataset"]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ settings
#: settings keys that must match to reuse a cache's shards (the model name may differ within
#: one family: its shards are the same)
_COMPARED = ("family", "input_size", "layout", "modality", "window", "channel", "min_size_3d",
             "min_size_2d", "all_slices", "source_root")


@dataclass(frozen=True)
class SplitSpec:
    """How cases are split: a split file, a random fraction, or (neither) the layout's own
    train/val split when it has one, else a random 0.8 split with ``seed``."""

    fraction: float | None = None
    seed: int = 0
    file: Path | None = None


@dataclass(frozen=True)
class RunOptions:
    """How to run: worker processes, redo everything, progress bar, MedSAM npy export folder."""

    workers: int = 1
    overwrite: bool = False
    progress: bool = True
    export_medsam_npy: Path | None = None


@dataclass
class PreprocessSummary:
    """What a run did. ``failed`` maps a case id to its one-line error."""

    cache: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    samples: int = 0
    seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{len(self.done)} done, {len(self.skipped)} skipped (already done), "
                f"{len(self.failed)} failed, {len(self.empty)} empty; {self.samples} samples "
                f"in the cache")


# ------------------------------------------------------------------------------ splits
def assign_splits(dataset: Dataset, cases: list[Case], spec: SplitSpec) -> tuple[dict[str, str], str]:
    """``{case_id: split}`` for ``cases`` and a description of where the split came from.

    Random splits group the slices of one volume (``medsam-npy`` ``CASE-ZZZ`` files) so that a
    volume never lands on both sides. Cases the layout marks ``test`` stay ``test`` unless the
    split file names them.
    """
    if spec.file is not None:
        train, val = read_split_file(spec.file, dataset.case_ids)
        splits = {c.case_id: c.split for c in cases if c.split == "test"}
        splits.update({i: "train" for i in train})
        splits.update({i: "val" for i in val})
        return {c.case_id: splits[c.case_id] for c in cases if c.case_id in splits}, \
            f"split file {spec.file}"
    layout_splits = {c.split for c in cases}
    if spec.fraction is None and {"train", "val"} <= layout_splits:
        return {c.case_id: c.split for c in cases if c.split}, f"the {dataset.layout} layout"
    fraction = 0.8 if spec.fraction is None else spec.fraction
    pool = [c for c in cases if c.split != "test"]
    groups: dict[str, list[str]] = {}
    for c in pool:
        groups.setdefault(str(c.extra.get("volume", c.case_id)), []).append(c.case_id)
    out = {c.case_id: "test" for c in cases if c.split == "test"}
    if groups:
        train, val = split_cases(list(groups), fraction, spec.seed)
        for name, ids in ((s, groups[g]) for s, gs in (("train", train), ("val", val)) for g in gs):
            out.update({i: name for i in ids})
    return out, f"random {fraction:g} split, seed {spec.seed}"


# ------------------------------------------------------------------------------ the run
def _validate(settings: PreprocessSettings) -> None:
    """Raise InputError for settings no case could be processed with (before writing)."""
    settings.family  # noqa: B018 -- an unknown model raises InputError
    select_scheme("float", settings.modality, settings.window)  # bad modality / window
    for name in ("channel", "min_size_3d", "min_size_2d"):
        if getattr(settings, name) < 0:
            raise InputError(None, f"{name} must be >= 0, got {getattr(settings, name)}")


def _prepare_cache(cache: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Create the cache folder or check that its settings match; ``overwrite`` starts afresh."""
    settings_path = cache / fmt.SETTINGS
    if cache.exists() and not cache.is_dir():
        raise InputError(cache, "is a file; the cache is a folder")
    ours = settings_path.is_file() or (cache / fmt.MANIFEST).is_file()
    if cache.is_dir() and any(cache.iterdir()) and not ours:
        raise InputError(cache, "is a folder that is not a preprocess cache and is not empty; "
                                "give a new or empty folder")
    if overwrite and ours:
        # the image embeddings of the old samples go too (fit's default place for them)
        for name in (fmt.CASES, fmt.MANIFEST, fmt.SPLITS, fmt.SETTINGS, fmt.EMBEDDINGS):
            path = cache / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif settings_path.is_file():
        old = fmt.read_json_file(settings_path, "cache settings")
        changed = [f"{k} {old.get(k)!r} -> {record.get(k)!r}" for k in _COMPARED
                   if old.get(k) != record.get(k)]
        if changed and not fmt.has_shards(cache):  # nothing built with the old settings yet
            settings_path.unlink()
        elif changed:
            raise InputError(cache, f"this cache was built with other settings "
                                    f"({'; '.join(changed)}); use a new folder or --overwrite")
    cache.mkdir(parents=True, exist_ok=True)
    if not settings_path.is_file():
        fmt.write_json(settings_path, record)
    removed = fmt.remove_stale_temporaries(cache)
    if removed:
        logger.info("removed %d unfinished case folder(s) of an interrupted run", removed)


def _is_done(cache: Path, case_id: str, export_dir: Path | None) -> bool:
    record = fmt.read_case_record(cache, case_id)
    if record is None:
        return False
    return export_dir is None or record.get("medsam_npy_export") == str(export_dir)


def _run_jobs(jobs: list[CaseJob], options: RunOptions) -> list[CaseResult]:
    bar = tqdm(total=len(jobs), desc="preprocess", unit="case", disable=not options.progress)
    results: list[CaseResult] = []
    seen_schemes: set[str] = set()

    def collect(result: CaseResult) -> None:
        results.append(result)
        if result.scheme and result.scheme not in seen_schemes:
            seen_schemes.add(result.scheme)
            logger.info("intensity: %s", result.scheme)
        if result.status == "failed":
            logger.error("%s: %s", result.case_id, result.message)
        elif result.status == "empty":
            logger.warning("%s: no sample (%s)", result.case_id, result.message)
        bar.update(1)
        bar.set_postfix(samples=sum(r.samples for r in results), refresh=False)

    try:
        if min(options.workers, len(jobs)) <= 1:
            for job in jobs:
                collect(process_case(job))
        else:
            context = multiprocessing.get_context("spawn")  # fork is unsafe with torch/OpenCV threads
            with ProcessPoolExecutor(min(options.workers, len(jobs)), mp_context=context,
                                     initializer=init_worker) as pool:
                futures = {pool.submit(process_case, job): job for job in jobs}
                for future in as_completed(futures):
                    try:
                        collect(future.result())
                    except Exception as exc:  # a worker died (killed, out of memory ...)
                        collect(CaseResult(futures[future].case.case_id, "failed",
                                           message=f"worker process failed: {exc!r}"))
    finally:
        bar.close()
    order = {job.case.case_id: i for i, job in enumerate(jobs)}
    return sorted(results, key=lambda r: order[r.case_id])


def _write_index(cache: Path, dataset: Dataset, record: dict[str, Any],
                 splits: dict[str, str], split_source: str) -> dict[str, Any]:
    """Rewrite manifest.json and splits.json from the finished shards of the dataset's cases."""
    finished = []
    for case in dataset.cases:
        shard = fmt.read_case_record(cache, case.case_id)
        if shard is not None:
            finished.append((shard, splits.get(case.case_id)))
    known = {fmt.case_dir_name(c.case_id) for c in dataset.cases}
    stale = [p.name for p in (cache / fmt.CASES).glob("*")
             if not p.name.startswith(".") and p.name not in known] \
        if (cache / fmt.CASES).is_dir() else []
    if stale:
        logger.warning("%d case folder(s) in the cache belong to no case of the dataset "
                       "(not in the manifest): %s", len(stale), ", ".join(sorted(stale)[:5]))
    header = {"model": record["model"], "family": record["family"],
              "input_size": record["input_size"], "layout": record["layout"],
              "source_root": record["source_root"], "settings": record,
              "split_source": split_source,
              "label_names": {str(v): k for k, v in dataset.meta.get("labels", {}).items()
                              if isinstance(v, int) and v != 0}}
    manifest = fmt.build_manifest(header, finished)
    fmt.write_json(cache / fmt.MANIFEST, manifest)
    in_cache = set(manifest["cases"])
    write_split_file(cache / fmt.SPLITS,
                     sorted(i for i, s in splits.items() if s == "train" and i in in_cache),
                     sorted(i for i, s in splits.items() if s == "val" and i in in_cache))
    return manifest


def preprocess_dataset(source: str | os.PathLike, cache: str | os.PathLike,
                       settings: PreprocessSettings = PreprocessSettings(),
                       split: SplitSpec = SplitSpec(),
                       options: RunOptions = RunOptions()) -> PreprocessSummary:
    """Preprocess the dataset in ``source`` into the cache folder ``cache`` (see the module doc).

    Raises:
        InputError: unreadable dataset, bad split file, a cache folder built with other
            settings (use a new folder or ``overwrite``), or output inside the input.
        Errors of single cases never raise: they are counted in the summary's ``failed``.
    """
    start = time.perf_counter()
    _validate(settings)
    dataset = read_dataset(source, settings.layout)
    settings = dataclasses.replace(settings, layout=dataset.layout)
    wanted = [c for c in dataset.cases if settings.all_slices or has_label(c, dataset.layout,
                                                                          dataset.meta)]
    splits, split_source = assign_splits(dataset, wanted, split)
    cache = Path(cache).resolve()
    export_dir = None if options.export_medsam_npy is None else \
        Path(options.export_medsam_npy).resolve()
    root = dataset.root.resolve()
    for out, what in ((cache, "cache"), (export_dir, "export")):
        if out is not None and (out == root or root in out.parents):
            raise InputError(out, f"the {what} folder must not be inside the input dataset {root}")
    if export_dir is not None and (export_dir == cache or cache in export_dir.parents):
        raise InputError(export_dir, "the MedSAM npy export folder must not be inside the cache")
    record = {**settings.record(), "source_root": str(root)}
    _prepare_cache(cache, record, options.overwrite)
    summary = PreprocessSummary(cache, unlabelled=[c.case_id for c in dataset.cases
                                                   if c not in wanted])
    if summary.unlabelled:
        logger.info("%d case(s) without a label are left out (use --all-slices to store "
                    "their slices for inference)", len(summary.unlabelled))
    meta = {k: v for k, v in dataset.meta.items() if k in ("channel_names", "mask_threshold",
                                                           "target")}
    jobs = []
    for case in wanted:
        if _is_done(cache, case.case_id, export_dir):
            summary.skipped.append(case.case_id)
        else:
            jobs.append(CaseJob(case, dataset.layout, meta, settings, cache, export_dir))
    logger.info("%s: %d case(s) to preprocess, %d already done, model %s (%s, %d px)",
                root, len(jobs), len(summary.skipped), settings.model, settings.family,
                settings.input_size)
    for result in _run_jobs(jobs, options):
        if result.status == "failed":
            summary.failed[result.case_id] = result.message
        else:
            (summary.done if result.status == "done" else summary.empty).append(result.case_id)
    summary.manifest = _write_index(cache, dataset, record, splits, split_source)
    summary.samples = len(summary.manifest["samples"])
    summary.seconds = time.perf_counter() - start
    return summary
