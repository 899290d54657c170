"""Evaluating a folder of predictions against a folder of ground-truth masks.

Files are paired by case name: the file name without its ending (``.nii.gz``, ``.png``, ...),
so ``case1.png`` predicts ``case1.jpg``. Every ground-truth file is a case (optionally
restricted to a list of ids, e.g. a split's validation ids). A case without a prediction is not
dropped: it is scored as an empty prediction (DSC 0 for every label of its ground truth) with
status ``missing`` and counted as failed. Predictions without a ground truth are listed and
ignored. Masks of different shape, or volumes of different geometry, are an error naming both
files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsamkit.data.cases import index_by_stem, list_files
from medsamkit.errors import InputError

from .accumulate import MetricAccumulator
from .masks import LabelImage, Threshold, read_label_file
from .metrics import Scores, label_scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """How to score each case.

    Attributes:
        tolerance: NSD tolerance, in the units of the spacing (mm for volumes, pixels for 2D
            images without spacing).
        labels: label ids to score (None: every id found in any ground truth or prediction).
        gt_threshold, pred_threshold: how stored values become labels (see
            :mod:`medsamkit.evaluation.masks`).
        spacing: overrides the files' spacing (one value per array axis) when given.
        percent: the Hausdorff percentile (95 for HD95).
    """

    tolerance: float = 1.0
    labels: tuple[int, ...] | None = None
    gt_threshold: Threshold = "auto"
    pred_threshold: Threshold = "auto"
    spacing: tuple[float, ...] | None = None
    percent: float = 95.0


@dataclass(frozen=True)
class CasePair:
    """A ground-truth file and its prediction (None when missing)."""

    case_id: str
    gt: Path
    pred: Path | None


@dataclass(frozen=True)
class CaseOutcome:
    """What scoring one pair gives: per-label scores, or an error message."""

    case_id: str
    scores: dict[int, Scores] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None


@dataclass
class Evaluation:
    """The result of :func:`evaluate_folders`."""

    accumulator: MetricAccumulator
    pairs: list[CasePair]
    unmatched_predictions: list[str]
    options: EvalOptions

    @property
    def missing(self) -> list[str]:
        return [p.case_id for p in self.pairs if p.pred is None]


def _index(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(folder, f"{what} folder not found")
    return index_by_stem(list_files(folder), what)


def pair_files(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
               case_ids: Iterable[str] | None = None) -> tuple[list[CasePair], list[str]]:
    """Pair the files of ``pred_dir`` with those of ``gt_dir`` by case name.

    Returns the pairs (sorted by case id; ``pred`` None when missing) and the names of
    predictions that have no ground truth. ``case_ids`` restricts the cases; an id without a
    ground-truth file raises :class:`InputError`.
    """
    gt = _index(Path(gt_dir), "ground-truth")
    pred = _index(Path(pred_dir), "prediction")
    if not gt:
        raise InputError(gt_dir, "no mask files in the ground-truth folder")
    wanted = sorted(gt) if case_ids is None else sorted(set(case_ids))
    absent = [c for c in wanted if c not in gt]
    if absent:
        more = f" ... ({len(absent)} in all)" if len(absent) > 5 else ""
        raise InputError(gt_dir, f"no ground truth for case(s) {', '.join(absent[:5])}{more}")
    pairs = [CasePair(c, gt[c], pred.get(c)) for c in wanted]
    unmatched = sorted(set(pred) - set(gt))
    return pairs, unmatched


def _check_same_grid(pred: LabelImage, gt: LabelImage) -> None:
    if pred.array.shape != gt.array.shape:
        raise InputError(pred.source, f"shape {pred.array.shape} differs from the ground truth "
                                      f"{gt.source} {gt.array.shape}")
    if pred.geometry is not None and gt.geometry is not None and not pred.geometry.same_as(gt.geometry):
        raise InputError(pred.source, f"geometry (spacing {pred.geometry.spacing}, origin "
                                      f"{pred.geometry.origin}) differs from the ground truth "
                                      f"{gt.source} (spacing {gt.geometry.spacing}, origin "
                                      f"{gt.geometry.origin})")


def score_pair(pair: CasePair, options: EvalOptions) -> dict[int, Scores]:
    """Read one pair and score every label (raises :class:`InputError` on unusable files)."""
    gt = read_label_file(pair.gt, options.gt_threshold, options.labels)
    if pair.pred is None:
        pred_array = np.zeros_like(gt.array)
    else:
        pred = read_label_file(pair.pred, options.pred_threshold, options.labels)
        _check_same_grid(pred, gt)
        pred_array = pred.array
    spacing = options.spacing or gt.spacing
    if len(spacing) != gt.array.ndim:
        raise InputError(gt.source, f"spacing {tuple(spacing)} has {len(spacing)} values for a "
                                    f"{gt.array.ndim}D mask")
    return label_scores(pred_array, gt.array, options.labels, spacing, options.tolerance, options.percent)


def _score_outcome(pair: CasePair, options: EvalOptions) -> CaseOutcome:
    """:func:`score_pair` for worker processes: errors come back as text (InputError does not
    survive pickling with its fields)."""
    try:
        scores = score_pair(pair, options)
    except InputError as exc:
        return CaseOutcome(pair.case_id, error=str(exc))
    return CaseOutcome(pair.case_id, scores, "missing" if pair.pred is None else "ok")


def _outcomes(pairs: Sequence[CasePair], options: EvalOptions, workers: int) -> Iterable[CaseOutcome]:
    if workers <= 1 or len(pairs) <= 1:
        for pair in pairs:
            yield _score_outcome(pair, options)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(pairs))) as pool:
        chunk = max(1, len(pairs) // (8 * workers))
        yield from pool.map(_score_outcome, pairs, [options] * len(pairs), chunksize=chunk)


def evaluate_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike,
                     options: EvalOptions | None = None, case_ids: Iterable[str] | None = None,
                     workers: int = 1, progress: bool = True, only_predicted: bool = False) -> Evaluation:
    """Score every case of ``gt_dir`` against ``pred_dir`` (see the module docstring).

    ``only_predicted`` scores only the cases that have a prediction (missing ones are left out
    instead of counting as failures); without it a warning says so when most cases are missing.

    ``workers`` > 1 scores cases in a process pool. The first unusable file stops the run with
    an :class:`InputError` naming it. Labels not scored in a case (absent from both of its
    masks, when ``options.labels`` is None) are added as NaN rows so every case has every label.
    """
    from tqdm import tqdm

    options = options or EvalOptions()
    if options.tolerance < 0:
        raise InputError(None, f"tolerance {options.tolerance} must be >= 0")
    pairs, unmatched = pair_files(pred_dir, gt_dir, case_ids)
    if unmatched:
        logger.warning("%d prediction(s) have no ground truth and are ignored: %s%s", len(unmatched),
                       ", ".join(unmatched[:5]), " ..." if len(unmatched) > 5 else "")
    missing = [p.case_id for p in pairs if p.pred is None]
    if only_predicted:
        pairs = [p for p in pairs if p.pred is not None]
        if not pairs:
            raise InputError(pred_dir, "no prediction matches a ground-truth case: nothing to score")
        if missing:
            logger.warning("scoring the %d predicted case(s) only; %d case(s) without a prediction are left out",
                           len(pairs), len(missing))
    elif len(missing) * 2 > len(pairs):
        logger.warning("%d of %d cases (most) have no prediction and count as failures (DSC 0): %s%s. "
                       "If the predictions cover a subset on purpose, use --only-predicted (or --cases)",
                       len(missing), len(pairs), ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")
    elif missing:
        logger.warning("%d case(s) have no prediction and count as failures: %s%s", len(missing),
                       ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")
    outcomes: list[CaseOutcome] = []
    bar = tqdm(total=len(pairs), desc="evaluate", unit="case", disable=not progress)
    with bar:
        for outcome in _outcomes(pairs, options, workers):
            if outcome.error is not None:
                raise InputError(None, outcome.error)
            outcomes.append(outcome)
            bar.update(1)
    accumulator = MetricAccumulator()
    all_labels = sorted({label for o in outcomes for label in o.scores})
    for o in outcomes:
        scores = {label: o.scores.get(label, Scores.empty()) for label in all_labels}
        accumulator.add_case(o.case_id, scores, o.status)
    return Evaluation(accumulator, pairs, unmatched, options)
