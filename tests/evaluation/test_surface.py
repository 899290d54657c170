"""Surface distances, NSD and HD95: analytic shapes, spacing, empties, and MONAI cross-checks.

MONAI is a test-only dependency. Its ``use_subvoxels=True`` surface Dice implements the same
DeepMind definition as ours, so NSD must agree to float32 precision (atol 1e-5). Its
``compute_hausdorff_distance(percentile=95)`` uses another definition (voxel-boundary edges,
unweighted percentile), so HD95 is only checked to agree within one voxel (largest spacing).
"""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsamkit.evaluation import surface
from medsamkit.evaluation.surface import (
    neighbour_codes,
    robust_hausdorff,
    surface_dice,
    surface_distances,
    surfel_measure_table,
)

monai_metrics = pytest.importorskip("monai.metrics")
monai_utils = pytest.importorskip("monai.metrics.utils")


def ball(shape, centre, radius, spacing=None):
    """Voxels within ``radius`` (in spacing units) of ``centre`` (voxel coordinates)."""
    spacing = spacing or (1.0,) * len(shape)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= radius ** 2


def blob(shape, seed, fraction=0.2):
    """A random smooth shape (several blobs) covering about ``fraction`` of the array."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)
    return noise > np.quantile(noise, 1 - fraction)


def one_hot(mask):
    return torch.as_tensor(np.stack([~mask, mask])[None]).float()


SPACINGS = [(1.0, 1.0), (0.5, 1.7), (1.0, 1.0, 1.0), (2.5, 0.8, 1.1), (0.6, 3.0, 0.9)]


@pytest.mark.parametrize("spacing", SPACINGS + [(4.0, 0.3, 1.0), (0.2, 0.2, 5.0)])
def test_measure_table_equals_monai_copy_of_deepmind_table(spacing):
    mine = surfel_measure_table(spacing)
    theirs = np.asarray(monai_utils.get_code_to_measure_table(spacing)[0], dtype=np.float64)
    assert mine.shape == ((16,) if len(spacing) == 2 else (256,))
    np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)
    assert mine[0] == 0 and mine[-1] == 0


def test_table_is_read_only_and_rejects_bad_spacing():
    with pytest.raises(ValueError):
        surfel_measure_table((1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        surfel_measure_table((1.0,))
    table = surfel_measure_table((1.0, 1.0))
    with pytest.raises(ValueError):
        table[1] = 5


def test_single_voxel_has_eight_corner_surfels():
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    codes = neighbour_codes(m)
    assert codes.shape == (2, 2, 2)
    assert sorted(codes.ravel().tolist()) == [1, 2, 4, 8, 16, 32, 64, 128]
    area = surfel_measure_table((1.0, 1.0, 1.0))[codes].sum()
    assert area == pytest.approx(8 * np.sqrt(3) / 8)  # 8 corner triangles of side sqrt(0.5)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_nsd_equals_monai_subvoxel_surface_dice(spacing, seed):
    shape = (48, 56) if len(spacing) == 2 else (26, 30, 28)
    pred = blob(shape, seed)
    gt = blob(shape, seed + 50) | ndimage.binary_dilation(pred, iterations=1 + seed % 2)
    sd = surface_distances(pred, gt, spacing)
    for tol in (0.5, 1.5, 3.5):
        theirs = monai_metrics.compute_surface_dice(one_hot(pred), one_hot(gt), [tol], spacing=spacing,
                                                    use_subvoxels=True).item()
        assert surface_dice(sd, tol) == pytest.approx(theirs, abs=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("spacing", SPACINGS)
def test_surfel_distances_and_areas_equal_monai(spacing):
    shape = (40, 44) if len(spacing) == 2 else (24, 26, 22)
    pred, gt = blob(shape, 7), blob(shape, 8)
    sd = surface_distances(pred, gt, spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        edges, dists, areas = monai_utils.get_edge_surface_distance(
            torch.as_tensor(pred), torch.as_tensor(gt), spacing=spacing, use_subvoxels=True, symmetric=True)
    pred_to_gt, gt_to_pred = (np.sort(d.numpy().astype(np.float64)) for d in dists)
    np.testing.assert_allclose(sd.pred_to_gt, pred_to_gt, rtol=1e-6)
    np.testing.assert_allclose(sd.gt_to_pred, gt_to_pred, rtol=1e-6)
    areas_pred, areas_gt = (a.numpy()[e.numpy()].astype(np.float64) for a, e in zip(areas, edges))
    assert sd.pred_areas.sum() == pytest.approx(areas_pred.sum(), rel=1e-5)
    assert sd.gt_areas.sum() == pytest.approx(areas_gt.sum(), rel=1e-5)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_close_to_monai_percentile_hausdorff(spacing):
    shape = (48, 56) if len(spacing) == 2 else (26, 30, 28)
    pred, gt = blob(shape, 3), blob(shape, 4)
    ours = robust_hausdorff(surface_distances(pred, gt, spacing))
    theirs = monai_metrics.compute_hausdorff_distance(one_hot(pred), one_hot(gt), percentile=95,
                                                      spacing=spacing).item()
    assert abs(ours - theirs) <= max(spacing)


def test_kd_tree_path_gives_the_edt_distances(monkeypatch):
    pred, gt = blob((20, 24, 22), 5), blob((20, 24, 22), 6)
    spacing = (2.0, 0.7, 1.3)
    via_edt = surface_distances(pred, gt, spacing)
    monkeypatch.setattr(surface, "EDT_MAX_VOXELS", 0)
    via_tree = surface_distances(pred, gt, spacing)
    for dist, area in (("gt_to_pred", "gt_areas"), ("pred_to_gt", "pred_areas")):
        pairs = []
        for sd in (via_edt, via_tree):  # order within ties may differ by rounding: sort pairs
            d, a = np.round(getattr(sd, dist), 9), getattr(sd, area)
            order = np.lexsort((a, d))
            pairs.append((d[order], a[order]))
        np.testing.assert_allclose(pairs[1][0], pairs[0][0], rtol=1e-9)
        np.testing.assert_allclose(pairs[1][1], pairs[0][1], rtol=1e-12)
    assert via_edt.gt_to_pred.size > 100


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shifted_sphere(k):
    a = ball((40, 40, 40), (20, 20, 20), 10)
    b = ball((40, 40, 40), (20 + k, 20, 20), 10)
    sd = surface_distances(b, a)
    # distance between the surfaces is k*|cos(theta)|, uniform in cos(theta) over a sphere's area
    assert 0.9 * k <= robust_hausdorff(sd) <= k
    assert surface_dice(sd, k / 2) < 0.85
    assert surface_dice(sd, k - 0.01) < 1.0
    assert surface_dice(sd, k) == pytest.approx(1.0)
    assert surface_dice(sd, 100.0) == 1.0


def test_shifted_disc():
    a = ball((80, 80), (40, 40), 20)
    b = ball((80, 80), (40, 43), 20)
    sd = surface_distances(b, a)
    assert 2.7 <= robust_hausdorff(sd) <= 3.0
    assert surface_dice(sd, 1.5) == pytest.approx(0.5, abs=0.1)
    assert surface_dice(sd, 3.0) == pytest.approx(1.0)


def test_anisotropic_spacing_scales_distances_and_areas():
    spacing = (3.0, 1.0, 1.0)  # 3 mm slices
    a = ball((30, 60, 60), (15, 30, 30), 12.0, spacing)
    b = np.roll(a, 1, axis=0)  # one slice = 3 mm
    sd = surface_distances(b, a, spacing)
    assert robust_hausdorff(sd) == pytest.approx(3.0)
    assert surface_dice(sd, 2.9) < 0.9
    assert surface_dice(sd, 3.0) == pytest.approx(1.0)
    # the area of a 12 mm sphere: marching cubes on voxels overestimates by a few percent
    assert sd.gt_areas.sum() == pytest.approx(4 * np.pi * 12 ** 2, rel=0.15)
    iso = surface_distances(a, a)  # the same voxels at 1 mm: an 8 x 24 x 24 mm ellipsoid, far smaller
    assert iso.gt_areas.sum() < 0.7 * sd.gt_areas.sum()


def test_identical_masks_and_large_tolerance():
    m = blob((30, 30, 30), 11)
    sd = surface_distances(m, m, (1.0, 2.0, 0.5))
    assert surface_dice(sd, 0.0) == 1.0
    assert robust_hausdorff(sd) == 0.0
    other = blob((30, 30, 30), 12)
    assert surface_dice(surface_distances(other, m), 1e3) == 1.0


def test_empty_masks():
    empty = np.zeros((10, 12), bool)
    some = ball((10, 12), (5, 6), 3)
    both = surface_distances(empty, empty)
    assert np.isnan(surface_dice(both, 1.0)) and np.isnan(robust_hausdorff(both))
    for pred, gt in ((empty, some), (some, empty)):
        sd = surface_distances(pred, gt)
        assert surface_dice(sd, 1.0) == 0.0
        assert robust_hausdorff(sd) == np.inf


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        surface_distances(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(np.zeros((4, 4), bool), np.zeros((4, 4), bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        surface_dice(surface_distances(np.ones((3, 3), bool), np.ones((3, 3), bool)), -1.0)
