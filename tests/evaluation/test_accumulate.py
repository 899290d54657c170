"""MetricAccumulator and Stat: NaN and inf are counted, never averaged."""

import math

import numpy as np
import pytest

from medsamkit.evaluation.accumulate import MetricAccumulator, Stat
from medsamkit.evaluation.metrics import Scores

NAN, INF = math.nan, math.inf


def scores(dsc, nsd=0.5, hd=2.0):
    return Scores(dsc, dsc, nsd, hd, 10, 10)


def test_stat_counts_nan_and_inf():
    st = Stat.of([1.0, 3.0, NAN, INF])
    assert (st.mean, st.n, st.n_nan, st.n_inf) == (2.0, 2, 1, 1)
    assert st.std == pytest.approx(1.0)
    assert st.median == 3.0  # median of 1, 3, inf
    assert st.as_dict()["mean"] == 2.0
    empty = Stat.of([NAN])
    assert math.isnan(empty.mean) and empty.as_dict()["mean"] is None and empty.n_nan == 1


def test_summary_per_label_and_overall():
    acc = MetricAccumulator()
    acc.add_case("a", {1: scores(0.8), 2: scores(0.6)})
    acc.add_case("b", {1: scores(0.9), 2: Scores.empty()})
    acc.add_case("c", {1: Scores(0.0, 0.0, 0.0, INF, 0, 5), 2: scores(0.4)}, status="missing")
    s = acc.summary()
    assert (s["n_cases"], s["n_failed"]) == (3, 1)
    assert acc.failed_cases == ["c"]
    one, two = s["per_label"]["1"], s["per_label"]["2"]
    assert one["dsc"].mean == pytest.approx((0.8 + 0.9 + 0.0) / 3)
    assert two["dsc"].mean == pytest.approx(0.5) and two["dsc"].n_nan == 1
    assert one["hd95"].n_inf == 1 and one["hd95"].mean == 2.0
    overall = s["overall"]["dsc"]
    assert overall.n == 5 and overall.n_nan == 1
    assert overall.mean == pytest.approx(np.mean([0.8, 0.6, 0.9, 0.0, 0.4]))
    assert acc.per_case_mean() == pytest.approx({"a": 0.7, "b": 0.9, "c": 0.2})
    assert [(r.case_id, r.label) for r in acc.results][:2] == [("a", 1), ("a", 2)]


def test_bad_status_and_rows():
    acc = MetricAccumulator()
    with pytest.raises(ValueError):
        acc.add("a", 1, scores(0.5), status="weird")
    acc.add("a", 1, scores(0.5))
    row = acc.results[0].row()
    assert row["case"] == "a" and row["dsc"] == 0.5 and row["status"] == "ok" and len(acc) == 1
