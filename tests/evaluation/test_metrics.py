"""DSC, IoU and the per-label scores: known overlaps, empties, per-label cropping."""

import math

import numpy as np
import pytest

from medsamkit.evaluation.metrics import METRICS, binary_scores, dice, hd95, iou, label_scores, nsd
from medsamkit.evaluation.surface import robust_hausdorff, surface_dice, surface_distances


def squares(shape=(20, 20)):
    """Two 10 x 10 squares overlapping in a 10 x 5 strip."""
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[5:15, 0:10] = True
    b[5:15, 5:15] = True
    return a, b


def test_dice_and_iou_of_known_overlap():
    a, b = squares()
    assert dice(a, b) == pytest.approx(2 * 50 / 200)
    assert iou(a, b) == pytest.approx(50 / 150)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_dice_iou_relation_on_random_masks():
    rng = np.random.default_rng(0)
    p, g = rng.random((30, 30)) > 0.5, rng.random((30, 30)) > 0.6
    d, j = dice(p, g), iou(p, g)
    assert d == pytest.approx(2 * j / (1 + j))


def test_binary_scores_of_two_shifted_squares_are_the_analytic_values():
    """Two 10 x 10 voxel squares, the second 5 columns to the right, at 0.5 mm rows and 2 mm
    columns. DSC 2*50/200, IoU 50/150. The left side of the first square (and the right side of
    the second) is 5 columns = 10 mm from the other's boundary, and no point is further; those
    sides are 10 x 0.5 mm = 5 mm of each 50 mm perimeter (10 % > 5 %), so HD95 = 10 mm, and only
    a tolerance of 10 mm puts the whole surface within it (NSD 1)."""
    a, b = squares((40, 50))
    s = binary_scores(a, b, spacing=(0.5, 2.0), tolerance=1.5)
    assert s.dsc == 0.5 and s.iou == pytest.approx(1 / 3, abs=1e-15)
    assert (s.pred_voxels, s.gt_voxels) == (100, 100)
    assert s.hd95 == 10.0
    assert s.nsd < 0.9
    assert binary_scores(a, b, spacing=(0.5, 2.0), tolerance=9.9).nsd < 1.0
    assert binary_scores(a, b, spacing=(0.5, 2.0), tolerance=10.0).nsd == 1.0


def test_hd95_is_the_deepmind_area_weighted_percentile_on_an_analytic_case():
    """DeepMind's ``compute_robust_hausdorff``: sort the surfel distances, weight each by its
    surfel area, take the first distance where the cumulative area reaches 95 %.

    A 4 x 100 voxel rectangle at spacing (10 mm rows, 1 mm columns), and the same rectangle
    without its end columns. The only boundary that moves is the two 4-voxel ends, by one column
    (1 mm); the long top and bottom stay put (distance 0). By surfel count the ends are under 5 %
    of the boundary (an unweighted percentile, MONAI's, gives 0); by area they are 2 x 4 x 10 mm
    = 80 mm against about 2 x 100 x 1 mm, 29 % of it, so HD95 = 1 mm."""
    gt = np.zeros((12, 110), bool)
    gt[4:8, 5:105] = True
    pred = gt.copy()
    pred[:, [5, 104]] = False
    spacing = (10.0, 1.0)
    sd = surface_distances(pred, gt, spacing)
    for distances, areas in ((sd.pred_to_gt, sd.pred_areas), (sd.gt_to_pred, sd.gt_areas)):
        assert set(np.round(distances, 9)) == {0.0, 1.0}
        moved = distances > 0
        assert moved.mean() < 0.05  # fewer than 5 % of the surfels ...
        assert 0.2 < areas[moved].sum() / areas.sum() < 0.3  # ... but over 20 % of the area
        assert np.percentile(distances, 95) == 0.0  # the unweighted percentile misses them
    assert robust_hausdorff(sd) == 1.0
    assert hd95(pred, gt, spacing) == 1.0
    # the weighting decides the percentile: 0 mm covers ~71 % of gt's area and ~78 % of pred's
    assert robust_hausdorff(sd, 70.0) == 0.0 and robust_hausdorff(sd, 75.0) == 1.0


@pytest.mark.parametrize("shape", [(12, 14), (6, 12, 14)])
def test_empty_cases(shape):
    empty = np.zeros(shape, bool)
    some = np.zeros(shape, bool)
    some[(slice(2, 5),) * len(shape)] = True
    both = binary_scores(empty, empty)
    assert all(math.isnan(getattr(both, m)) for m in METRICS)
    for pred, gt in ((empty, some), (some, empty)):
        s = binary_scores(pred, gt)
        assert (s.dsc, s.iou, s.nsd, s.hd95) == (0.0, 0.0, 0.0, math.inf)
    assert math.isnan(dice(empty, empty)) and math.isnan(iou(empty, empty))


def label_maps():
    rng = np.random.default_rng(3)
    gt = np.zeros((16, 40, 48), np.uint8)
    gt[2:8, 5:20, 5:20] = 1
    gt[9:14, 22:35, 25:44] = 2
    gt[3:5, 30:33, 2:5] = 4  # label 4 only in the ground truth
    pred = gt.copy()
    pred[pred == 4] = 0
    pred[2:8, 5:20, 5:8] = 0
    pred[10:15, 22:35, 27:46] = 2
    pred[pred == 2] = np.where(rng.random((pred == 2).sum()) > 0.1, 2, 0)
    pred[0:2, 0:3, 40:44] = 5  # label 5 only in the prediction
    return pred, gt


def test_label_scores_equal_binary_scores_of_each_label():
    pred, gt = label_maps()
    spacing = (3.0, 0.9, 0.9)
    scores = label_scores(pred, gt, spacing=spacing, tolerance=2.0)
    assert sorted(scores) == [1, 2, 4, 5]
    for label, s in scores.items():
        assert s == binary_scores(pred == label, gt == label, spacing, 2.0)
    assert scores[4].dsc == 0.0 and scores[4].hd95 == math.inf
    assert scores[5].nsd == 0.0 and scores[5].gt_voxels == 0
    assert 0.5 < scores[1].dsc < 1.0


def test_label_scores_with_chosen_labels_reports_absent_ones_as_nan():
    pred, gt = label_maps()
    scores = label_scores(pred, gt, labels=[2, 3])
    assert sorted(scores) == [2, 3]
    assert all(math.isnan(getattr(scores[3], m)) for m in METRICS)
    assert (scores[3].pred_voxels, scores[3].gt_voxels) == (0, 0)
    assert scores[2] == binary_scores(pred == 2, gt == 2)


def test_label_scores_2d_bool_and_empty():
    a, b = squares()
    assert label_scores(a, b)[1] == binary_scores(a, b)
    assert label_scores(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8)) == {}


def test_crop_does_not_change_the_surface_metrics():
    pred, gt = label_maps()
    s = label_scores(pred, gt, labels=[1], spacing=(3.0, 0.9, 0.9), tolerance=1.0)[1]
    sd = surface_distances(pred == 1, gt == 1, (3.0, 0.9, 0.9))  # whole arrays
    assert s.nsd == pytest.approx(surface_dice(sd, 1.0))
    assert s.hd95 == pytest.approx(robust_hausdorff(sd))


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        label_scores(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="integer"):
        label_scores(np.zeros((3, 3), float), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="negative"):
        label_scores(np.full((3, 3), -1), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="positive"):
        label_scores(np.zeros((3, 3), int), np.zeros((3, 3), int), labels=[0, 1])
    with pytest.raises(ValueError, match="spacing"):
        binary_scores(np.ones((3, 3), bool), np.ones((3, 3), bool), spacing=(1.0,))
