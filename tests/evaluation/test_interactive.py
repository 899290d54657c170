"""The simulated user of the CVPR 2025 interactive protocol: where the next click goes, its sign,
the step-0 prompt, and the DSC AUC."""

from __future__ import annotations

import numpy as np
import pytest

from medsamkit.evaluation.interactive import dsc_auc, largest_error_component, next_click, protocol_prompt


def test_the_click_is_at_the_centre_of_the_largest_error_component():
    truth = np.zeros((9, 30, 40), bool)
    truth[2:7, 5:25, 5:35] = True
    pred = truth.copy()
    pred[2:7, 12:17, 12:17] = False  # a missed cube (FN): 5 x 5 x 5, centre (4, 14, 14)
    pred[0, 0:2, 0:2] = True  # a small false positive
    click = next_click(pred, truth)
    assert click.index == (4, 14, 14) and click.positive
    assert click.xyz == (14, 14, 4)
    # the largest error is now a false positive: a background click
    pred2 = truth.copy()
    pred2[2:7, 26:30, 36:40] = True
    click = next_click(pred2, truth)
    assert not click.positive and pred2[click.index] and not truth[click.index]


def test_errors_touching_the_border_are_measured_to_the_border_and_ties_are_seeded():
    truth = np.zeros((5, 8), bool)
    pred = np.ones_like(truth)  # everything wrong: the distance is largest on the middle row
    a, b = next_click(pred, truth), next_click(pred, truth)
    assert a == b  # the same seed every call, as the challenge script
    assert a.index[0] == 2 and 2 <= a.index[1] <= 5  # (the border counts as the component's edge)
    assert next_click(truth, truth) is None and largest_error_component(truth, truth) is None


def test_2d_arrays_use_8_connectivity():
    truth = np.zeros((10, 10), bool)
    pred = np.zeros_like(truth)
    pred[[1, 2, 3], [1, 2, 3]] = True  # a diagonal: one 8-connected component of 3
    pred[7, 7] = pred[7, 9] = True
    assert largest_error_component(pred, truth).sum() == 3
    assert next_click(pred, truth).index in {(1, 1), (2, 2), (3, 3)}


def test_protocol_prompt_uses_the_middle_slice_or_the_nearest_with_the_label():
    truth = np.zeros((12, 20, 20), bool)
    truth[2:9, 4:10, 5:15] = True
    p = protocol_prompt(truth, 3)
    assert (p.key_slice, p.z_range, p.box, p.label) == (5, (2, 8), (5.0, 4.0, 14.0, 9.0), 3)
    truth[4:8] = False  # the middle slice (5) empty: the nearest slice holding the label
    truth[3, 6:8, 6:8] = True
    p = protocol_prompt(truth)
    assert p.key_slice == 3 and p.z_range == (2, 8)
    assert protocol_prompt(np.zeros((3, 4, 4), bool)) is None


def test_dsc_auc_is_trapezoids_over_the_click_steps():
    assert dsc_auc([1, 1, 1, 1, 1]) == pytest.approx(4.0)
    assert dsc_auc([0.0, 0.5, 1.0]) == pytest.approx(1.0)
    assert dsc_auc([0.7]) == 0.0
