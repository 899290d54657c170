"""Collecting per-case, per-label scores and summarising them.

:class:`MetricAccumulator` holds one :class:`CaseLabelResult` per (case, label) and summarises
them per label and overall (all (case, label) rows pooled). NaN values (label absent from both
prediction and ground truth) are counted, never averaged; an infinite HD95 (one of the two
empty) is counted too and left out of mean/std, while the median includes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .metrics import METRICS, Scores

#: :attr:`CaseLabelResult.status` values: scored normally, or the prediction file was missing
#: (scored as an empty prediction, so it counts as a failure in every mean).
STATUSES: tuple[str, ...] = ("ok", "missing")


@dataclass(frozen=True)
class CaseLabelResult:
    """The scores of one label of one case."""

    case_id: str
    label: int
    scores: Scores
    status: str = "ok"

    def row(self) -> dict[str, object]:
        """A flat dict for the CSV: case, label, status, the metrics and voxel counts."""
        return {"case": self.case_id, "label": self.label, "status": self.status, **self.scores.as_dict()}


@dataclass(frozen=True)
class Stat:
    """Summary of one metric over many rows.

    ``mean``/``std`` (population std) use the finite values; ``median`` uses every non-NaN
    value (so it may be inf); ``n`` counts finite values, ``n_nan`` NaNs, ``n_inf`` infinities.
    Statistics of no values are NaN.
    """

    mean: float
    std: float
    median: float
    n: int
    n_nan: int
    n_inf: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        v = np.asarray(list(values), dtype=np.float64)
        nan = np.isnan(v)
        finite = v[np.isfinite(v)]
        numbers = v[~nan]
        return cls(
            mean=float(finite.mean()) if finite.size else math.nan,
            std=float(finite.std()) if finite.size else math.nan,
            median=float(np.median(numbers)) if numbers.size else math.nan,
            n=int(finite.size),
            n_nan=int(nan.sum()),
            n_inf=int(np.isinf(v).sum()),
        )

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-safe: non-finite statistics become None (their counts say why)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in vars(self).items()}


class MetricAccumulator:
    """Per-case, per-label results, added as they come, summarised at the end."""

    def __init__(self) -> None:
        self._results: list[CaseLabelResult] = []

    def add(self, case_id: str, label: int, scores: Scores, status: str = "ok") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self._results.append(CaseLabelResult(case_id, int(label), scores, status))

    def add_case(self, case_id: str, scores: Mapping[int, Scores], status: str = "ok") -> None:
        """Add every label of one case."""
        for label, s in sorted(scores.items()):
            self.add(case_id, label, s, status)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def results(self) -> list[CaseLabelResult]:
        """The results sorted by case id, then label."""
        return sorted(self._results, key=lambda r: (r.case_id, r.label))

    @property
    def labels(self) -> list[int]:
        return sorted({r.label for r in self._results})

    @property
    def failed_cases(self) -> list[str]:
        """Cases with any row that is not ``ok`` (e.g. a missing prediction)."""
        return sorted({r.case_id for r in self._results if r.status != "ok"})

    def summary(self) -> dict[str, object]:
        """``{"per_label": {label: {metric: Stat}}, "overall": {metric: Stat}, "n_cases",
        "n_failed"}``; labels are strings (JSON keys)."""
        rows = self.results
        per_label = {str(label): _stats([r for r in rows if r.label == label]) for label in self.labels}
        return {
            "n_cases": len({r.case_id for r in rows}),
            "n_failed": len(self.failed_cases),
            "per_label": per_label,
            "overall": _stats(rows),
        }

    def per_case_mean(self, metric: str = "dsc") -> dict[str, float]:
        """Each case's mean of ``metric`` over its labels (NaN labels skipped; NaN if all are)."""
        out: dict[str, list[float]] = {}
        for r in self._results:
            out.setdefault(r.case_id, []).append(getattr(r.scores, metric))
        return {case: _nanmean(values) for case, values in sorted(out.items())}


def _stats(rows: list[CaseLabelResult]) -> dict[str, Stat]:
    return {m: Stat.of(getattr(r.scores, m) for r in rows) for m in METRICS}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan
