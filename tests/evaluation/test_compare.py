"""compare: models from reports, the table, case choice and grid rows (2D and 3D)."""

import math

import cv2
import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.evaluation.compare import (choose_cases, comparison_table, grid_rows, grid_sources,
                                          load_models, metric_values)
from medsamkit.evaluation.evaluate import EvalOptions, evaluate_folders
from medsamkit.evaluation.report import write_report
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume

SHIFTS = {"a": [0, 2, 5, 9], "b": [3, 3, 3, 3]}  # per model: shift of each case's prediction


@pytest.fixture
def reports(tmp_path):
    gt, images = tmp_path / "gt", tmp_path / "images"
    gt.mkdir(), images.mkdir()
    out = []
    for i in range(4):
        g = np.zeros((48, 64), np.uint8)
        cv2.circle(g, (30, 24), 12, 255, -1)
        cv2.imwrite(str(gt / f"case{i}.png"), g)
        cv2.imwrite(str(images / f"case{i}.jpg"), np.dstack([g // 2 + 40] * 3))
    for model, shifts in SHIFTS.items():
        pred = tmp_path / f"pred_{model}"
        pred.mkdir()
        for i, s in enumerate(shifts):
            g = cv2.imread(str(gt / f"case{i}.png"), cv2.IMREAD_GRAYSCALE)
            if not (model == "b" and i == 3):  # model b has no prediction for case3
                cv2.imwrite(str(pred / f"case{i}.png"), np.roll(g, s, axis=1))
        ev = evaluate_folders(pred, gt, EvalOptions(tolerance=1.0), progress=False)
        write_report(ev, tmp_path / f"rep_{model}", pred, gt, images)
        out.append(tmp_path / f"rep_{model}")
    return out


def test_table_and_values(reports):
    models = load_models(reports, ["A", "B"])
    table = comparison_table(models)
    dsc_a = models[0].report.accumulator.per_case_mean()
    assert f"| A | {np.mean(list(dsc_a.values())):.4f} ±" in table
    line_b = next(l for l in table.splitlines() if l.startswith("| B |"))
    assert line_b.split("|")[-4:-1] == [" 4 ", " 1 ", " 1 "]  # n, n failed, HD95 inf
    values = metric_values(models, "dsc")
    assert values["1"]["A"] == pytest.approx([dsc_a[f"case{i}"] for i in range(4)])


def test_choose_cases(reports):
    models = load_models(reports, ["A", "B"])
    assert choose_cases(models, 3) == [("case0", "best"), ("case2", "median"), ("case3", "worst")]
    assert [c for c, _ in choose_cases(models, 2, rank="spread")] == ["case3", "case1"]
    assert choose_cases(models, chosen=["case2"]) == [("case2", "chosen")]
    with pytest.raises(InputError, match="not in every report"):
        choose_cases(models, chosen=["nope"])


def test_grid_rows_find_files_from_the_reports(reports):
    models = load_models(reports, ["A", "B"])
    sources = grid_sources(models)
    rows = grid_rows(models, [("case3", "worst")], sources)
    (row,) = rows
    assert row.image.shape == (48, 64, 3) and row.image.max() > 40  # the real image, not grey
    assert row.preds[1] == ("B: missing", None)
    assert row.preds[0][0].startswith("A: DSC ") and row.preds[0][1].shape == (48, 64)


def test_names_must_match(reports):
    with pytest.raises(InputError, match="one name per report"):
        load_models(reports, ["only"])
    with pytest.raises(InputError, match="must differ"):
        load_models(reports, ["x", "x"])


def test_3d_rows_show_the_largest_slice(tmp_path):
    geo = Geometry((2.0, 1.0, 1.0))
    gt = np.zeros((6, 20, 24), np.uint8)
    gt[1:5, 5:12, 5:12] = 1
    gt[3, 4:15, 4:15] = 1  # slice 3 is the largest
    for sub in ("gt", "pred", "img"):
        (tmp_path / sub).mkdir()
    write_volume(tmp_path / "gt" / "v.nii.gz", gt, geo)
    write_volume(tmp_path / "pred" / "v.nii.gz", np.roll(gt, 1, axis=2), geo)
    write_volume(tmp_path / "img" / "v_0000.nii.gz", np.random.default_rng(0).normal(size=gt.shape).astype(np.float32), geo)
    ev = evaluate_folders(tmp_path / "pred", tmp_path / "gt", progress=False)
    write_report(ev, tmp_path / "rep", tmp_path / "pred", tmp_path / "gt", tmp_path / "img")
    models = load_models([tmp_path / "rep"])
    (row,) = grid_rows(models, [("v", "chosen")], grid_sources(models))
    assert "slice 3" in row.title and row.image.shape == (20, 24, 3)
    assert row.gt.sum() == 121 and not math.isnan(float(row.preds[0][0].split()[-1]))
