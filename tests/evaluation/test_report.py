"""Report files: CSV rows, summary.json and markdown agree with the accumulator; read back."""

import csv
import json
import math

import cv2
import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.evaluation.evaluate import EvalOptions, evaluate_folders
from medsamkit.evaluation.report import read_report, write_report


@pytest.fixture
def report(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    for i in range(3):
        g = np.zeros((40, 50), np.uint8)
        cv2.rectangle(g, (10, 10), (30, 25 + i), 1, -1)
        cv2.rectangle(g, (35, 5), (45, 15), 2, -1)
        p = np.roll(g, i, axis=1)
        if i == 2:
            p[p == 2] = 0  # label 2 missed in case 2
        cv2.imwrite(str(gt / f"k{i}.png"), g)
        if i:
            cv2.imwrite(str(pred / f"k{i}.png"), p)
    ev = evaluate_folders(pred, gt, EvalOptions(tolerance=1.5), progress=False)
    out = tmp_path / "report"
    summary = write_report(ev, out, pred, gt)
    return ev, out, summary, pred, gt


def test_csv_rows_are_the_accumulator_rows(report):
    ev, out, _, _, _ = report
    with open(out / "per_case.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6  # 3 cases x 2 labels
    for row, result in zip(rows, ev.accumulator.results):
        assert (row["case"], int(row["label"]), row["status"]) == (result.case_id, result.label, result.status)
        for m in ("dsc", "iou", "nsd", "hd95"):
            want = getattr(result.scores, m)
            assert float(row[m]) == pytest.approx(want) or (math.isinf(want) and row[m] == "inf")
    assert [r["status"] for r in rows if r["case"] == "k0"] == ["missing", "missing"]


def test_summary_json_and_markdown(report):
    ev, out, summary, pred, gt = report
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["pred_dir"] == str(pred.resolve()) and on_disk["gt_dir"] == str(gt.resolve())
    assert on_disk["n_cases"] == 3 and on_disk["n_failed"] == 1
    assert on_disk["missing_predictions"] == ["k0"] and on_disk["tolerance"] == 1.5
    dsc_2 = [r.scores.dsc for r in ev.accumulator.results if r.label == 2]
    assert on_disk["per_label"]["2"]["dsc"]["mean"] == pytest.approx(np.mean(dsc_2))
    assert on_disk["per_label"]["2"]["hd95"]["n_inf"] == 2  # k0 missing, k2 missed label 2
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert f"{np.mean(dsc_2):.4f}" in md and "| all |" in md and "Missing predictions: k0" in md


def test_read_back(report):
    ev, out, *_ = report
    back = read_report(out)
    assert len(back.accumulator) == len(ev.accumulator)
    assert back.accumulator.per_case_mean() == pytest.approx(ev.accumulator.per_case_mean())
    (out / "per_case.csv").write_text("case,label\nx,1\n", encoding="utf-8")
    with pytest.raises(InputError, match="per_case.csv"):
        read_report(out)
    with pytest.raises(InputError, match="summary.json"):
        read_report(out.parent)
