"""Local click updates (RefineConfig.local_clicks): a decode changes the mask only near the click,
and a click the decoder ignores still holds through a region grown on the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsamkit.inference.clicks import Click
from medsamkit.inference.local_clicks import local_click_update, smoothed_grey
from medsamkit.inference.refine import MaskResult
from medsamkit.inference.session import RefineConfig, Session2D
from medsamkit.inference.session3d import Session3D
from stub_predictor import IgnoresClicks
from test_session import RING_BOX, dice, ring_image
from test_session3d import TUBE, stamped, tube


def _result(mask: np.ndarray, score: float = 0.5) -> MaskResult:
    logits = np.where(mask, 5.0, -5.0).astype(np.float32)
    return MaskResult(mask=mask.copy(), logits=logits, low_res_logits=torch.zeros(1, 256, 256), score=score)


def _square(shape, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_the_new_decode_counts_only_near_the_click():
    shape = (80, 100)
    previous = _square(shape, 20, 50, 20, 50)
    # the decoder trims 4 columns on the right edge (where the click is) and also adds a far blob
    decoded = _square(shape, 20, 50, 20, 46) | _square(shape, 60, 75, 80, 95)
    click = Click(47.0, 35.0, 0)  # background, 3 px inside the right edge
    out = local_click_update(_result(previous), _result(decoded, 0.8), click, reach=2.0)
    d = 3.0  # the click's distance to the previous mask's edge
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    near = np.hypot(yy - 35, xx - 47) <= 2 * d + 2
    np.testing.assert_array_equal(out.mask[near], decoded[near])
    np.testing.assert_array_equal(out.mask[~near], previous[~near])
    assert not out.mask[60:75, 80:95].any()  # the far change is not taken
    np.testing.assert_array_equal(out.mask, out.logits > 0)
    assert out.score == 0.8


def test_a_pinhole_next_to_the_click_does_not_shrink_its_reach_and_a_foreground_click_stays_local():
    shape = (80, 100)
    previous = _square(shape, 10, 70, 20, 80)
    previous[40, 51] = False  # a one-pixel hole beside the click
    out = local_click_update(_result(previous), _result(np.zeros(shape, bool)), Click(50.0, 40.0, 0), reach=2.0)
    assert not out.mask.any()  # d = 30 (to the outer edge), not 1: the decoder's empty answer everywhere
    # a foreground click 5 px outside the object: the object (a hole of the background) is not filled over
    grown = _square(shape, 10, 70, 20, 85)
    out = local_click_update(_result(previous), _result(grown | _square(shape, 0, 5, 0, 5)), Click(84.0, 40.0, 1))
    assert out.mask[40, 84] and not out.mask[:5, :5].any()  # d = 5: the far corner is not taken


def test_a_click_the_previous_mask_already_agrees_with_takes_the_whole_decode():
    shape = (80, 100)
    previous = _square(shape, 20, 50, 20, 50)
    decoded = _square(shape, 24, 46, 24, 46) | _square(shape, 60, 75, 80, 95)
    out = local_click_update(_result(previous), _result(decoded), Click(70.0, 35.0, 0), reach=2.0)
    np.testing.assert_array_equal(out.mask, decoded)  # outside the mask already: a hint to the decoder


def test_a_background_click_the_decoder_ignores_removes_the_cavity_and_keeps_the_ring():
    rgb, ring, (cx, cy) = ring_image()
    disc = ring | (np.hypot(*np.mgrid[:ring.shape[0], :ring.shape[1]][::-1] - np.array([cx, cy])[:, None, None]) <= 13)
    grey = smoothed_grey(rgb)
    ignored = _result(disc)  # the decoder's answer to the click: the disc again
    out = local_click_update(_result(disc), ignored, Click(float(cx), float(cy), 0), grey, tolerance=30)
    assert not out.mask[cy, cx] and out.logits[cy, cx] <= -1
    assert dice(out.mask, ring) > 0.9 and dice(disc, ring) < 0.8
    # with the hold off the click is not honoured
    off = local_click_update(_result(disc), ignored, Click(float(cx), float(cy), 0), grey, tolerance=0)
    np.testing.assert_array_equal(off.mask, disc)


def test_a_foreground_hold_stays_within_the_clicks_distance():
    shape = (60, 120)
    grey = np.full(shape, 40.0, np.float32)
    grey[10:50, 10:110] = 200.0  # one bright band
    previous = _square(shape, 10, 50, 10, 40)  # the mask covers its left part
    click = Click(50.0, 30.0, 1)  # d = 11: the mask's last column is x = 39
    out = local_click_update(_result(previous), _result(previous), click, grey, tolerance=30)
    assert out.mask[30, 50] and out.mask[30, 61] and out.mask[previous].all()
    assert not out.mask[:, 62:].any()  # grown within d of the click only
    assert not out.mask[~(grey > 100)].any()  # and only on the clicked intensity


def test_session_with_local_clicks_fixes_the_ring_when_the_decoder_ignores_clicks():
    rgb, ring, (cx, cy) = ring_image()
    plain = Session2D(IgnoresClicks(), rgb)
    obj = plain.add_object(RING_BOX)
    assert dice(plain.add_click(obj, (cx, cy, 0)).mask, ring) < 0.8
    local = Session2D(IgnoresClicks(), rgb, RefineConfig(local_clicks=True))
    obj = local.add_object(RING_BOX)
    assert dice(local.add_click(obj, (cx, cy, 0)).mask, ring) > 0.9
    assert local.undo() and dice(local.object(obj).result.mask, ring) < 0.8
    # replaying the same object with its click from a prompts entry gives the same mask
    replayed = Session2D(IgnoresClicks(), rgb, RefineConfig(local_clicks=True))
    again = replayed.add_object(RING_BOX, [(cx, cy, 0)])
    local.redo()
    np.testing.assert_array_equal(replayed.object(again).result.mask, local.object(obj).result.mask)


@pytest.mark.parametrize("kwargs", [{"local_reach": 0}, {"hold_tolerance": -1}])
def test_bad_local_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RefineConfig(**kwargs)


def test_3d_local_clicks_fix_their_slice_and_hold_when_the_slice_is_decoded_again():
    volume, ring = tube()
    volume = stamped(volume)  # each slice traceable in the stub's calls
    plain = Session3D(IgnoresClicks(), volume)
    obj = plain.add_object(TUBE)
    disc = plain.label_map().astype(bool)
    plain.add_click(obj, (30, 20, 6, 0))
    np.testing.assert_array_equal(plain.label_map().astype(bool), disc)  # the decoder ignores the click

    stub = IgnoresClicks()
    session = Session3D(stub, volume, RefineConfig(local_clicks=True, click_reach=1))
    obj = session.add_object(TUBE)
    session.add_click(obj, (30, 20, 6, 0))
    after = session.label_map().astype(bool)
    for z in (5, 6, 7):  # the clicked slice and, with click_reach 1, its neighbours
        assert dice(after[z], ring[z]) > 0.9 and dice(disc[z], ring[z]) < 0.8
    np.testing.assert_array_equal(after[:4], disc[:4])  # out of reach: as before
    # a foreground click on slice 7 outside the ring reaches slice 6, which is decoded again from its
    # box (the decoder gives the disc back): slice 6's own background click still holds
    calls = len(stub.calls)
    session.add_click(obj, (30, 2, 7, 1))
    redone = [c for c in stub.calls[calls:] if np.array_equal(c.image, volume[6])]
    assert redone and redone[-1].points is None  # IgnoresClicks drops them; the request had them
    state = session.object(obj).slices[6]
    assert [(c.x, c.y, c.label) for c in state.clicks] == [(30, 20, 0), (30, 2, 1)]
    again = session.label_map().astype(bool)
    assert not again[6, 20, 30] and again[6, 2, 30] and dice(again[6], ring[6]) > 0.9
