"""evaluate_folders: pairing by case name, missing predictions, grid checks, workers."""

import math

import cv2
import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.evaluation.evaluate import EvalOptions, evaluate_folders, pair_files
from medsamkit.evaluation.masks import read_label_file
from medsamkit.evaluation.metrics import label_scores
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume


def disc(centre, r=12, shape=(50, 60), value=255):
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, centre, r, value, -1)
    return m


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    for i, name in enumerate(["c1", "c2", "c3", "c4"]):
        cv2.imwrite(str(gt / f"{name}.png"), disc((25 + i, 25)))
    cv2.imwrite(str(pred / "c1.png"), disc((27, 25)))
    cv2.imwrite(str(pred / "c2.png"), disc((26, 28), r=10))
    cv2.imwrite(str(pred / "c3.png"), np.zeros((50, 60), np.uint8))  # empty prediction
    cv2.imwrite(str(pred / "extra.png"), disc((10, 10)))  # no ground truth
    return pred, gt


def test_pairing_and_missing(folders):
    pred, gt = folders
    pairs, unmatched = pair_files(pred, gt)
    assert [p.case_id for p in pairs] == ["c1", "c2", "c3", "c4"]
    assert pairs[3].pred is None and unmatched == ["extra"]
    assert [p.case_id for p in pair_files(pred, gt, ["c2", "c1"])[0]] == ["c1", "c2"]
    with pytest.raises(InputError, match="no ground truth for case"):
        pair_files(pred, gt, ["c1", "nope"])


def test_scores_equal_direct_computation_and_missing_counts(folders):
    pred, gt = folders
    ev = evaluate_folders(pred, gt, EvalOptions(tolerance=2.0), progress=False)
    rows = {r.case_id: r for r in ev.accumulator.results}
    for case in ("c1", "c2"):
        p = cv2.imread(str(pred / f"{case}.png"), cv2.IMREAD_GRAYSCALE) > 0
        g = cv2.imread(str(gt / f"{case}.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert rows[case].scores == label_scores(p, g, tolerance=2.0)[1]
    assert rows["c3"].scores.dsc == 0.0 and rows["c3"].status == "ok"
    assert rows["c4"].status == "missing" and rows["c4"].scores.dsc == 0.0
    assert math.isinf(rows["c4"].scores.hd95)
    assert ev.missing == ["c4"] and ev.unmatched_predictions == ["extra"]
    assert ev.accumulator.summary()["n_failed"] == 1


def test_workers_give_the_same_results(folders):
    pred, gt = folders
    one = evaluate_folders(pred, gt, progress=False).accumulator.results
    two = evaluate_folders(pred, gt, workers=2, progress=False).accumulator.results
    assert one == two


def test_shape_mismatch_names_both_files(folders):
    pred, gt = folders
    cv2.imwrite(str(pred / "c1.png"), disc((20, 20), shape=(40, 40)))
    with pytest.raises(InputError) as err:
        evaluate_folders(pred, gt, workers=2, progress=False)
    assert "c1.png" in str(err.value) and str(gt / "c1.png") in str(err.value)


def test_volumes_geometry_and_labels(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    geo = Geometry((3.0, 0.8, 0.8))
    g = np.zeros((8, 30, 30), np.uint8)
    g[2:6, 5:15, 5:15], g[3:7, 18:28, 16:26] = 1, 2
    p = np.roll(g, 1, axis=2)
    p[p == 2] = 0  # label 2 missed
    write_volume(gt / "a.nii.gz", g, geo)
    write_volume(pred / "a.nii.gz", p, geo)
    write_volume(gt / "b.nii.gz", np.where(g == 1, 1, 0).astype(np.uint8), geo)
    write_volume(pred / "b.nii.gz", np.where(g == 1, 1, 0).astype(np.uint8), geo)
    ev = evaluate_folders(pred, gt, EvalOptions(tolerance=1.0), progress=False)
    rows = {(r.case_id, r.label): r.scores for r in ev.accumulator.results}
    stored = read_label_file(gt / "a.nii.gz").spacing  # NIfTI keeps float32 spacing
    assert rows[("a", 1)] == label_scores(p, g, [1], stored, 1.0)[1]
    assert rows[("a", 2)].dsc == 0.0
    assert rows[("b", 1)].dsc == 1.0
    assert math.isnan(rows[("b", 2)].dsc)  # label 2 absent from both masks of b: NaN row
    write_volume(pred / "b.nii.gz", np.where(g == 1, 1, 0).astype(np.uint8), Geometry((2.0, 0.8, 0.8)))
    with pytest.raises(InputError, match="geometry"):
        evaluate_folders(pred, gt, progress=False)


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="folder not found"):
        evaluate_folders(tmp_path / "no", tmp_path, progress=False)
