"""The 3D interactive session on synthetic volumes with the stub model: the box step equals the
streaming propagator, a click re-decodes its slice and propagates outward only as far as masks
change, clicks land on their own slice in voxel indices whatever the spacing, range extension,
point-only objects, undo/redo, the embedding cache bound, and a Propagator as the strategy."""

from __future__ import annotations

import numpy as np
import pytest

from medsamkit.choices import DEFAULT_OVERLAP, OVERLAP_RULES
from medsamkit.errors import InputError
from medsamkit.inference.clicks import Click
from medsamkit.inference.prompts3d import VolumePrompt
from medsamkit.inference.propagate import SliceResult, VolumeSlices
from medsamkit.inference.session import RefineConfig
from medsamkit.inference.session3d import PropagatorRefiner, Session3D
from medsamkit.inference.volume3d import VolumeOptions, segment_volume
from medsamkit.io.geometry import Geometry
from stub_predictor import StubPredictor

NZ, H, W = 10, 40, 64


def tube() -> tuple[np.ndarray, np.ndarray]:
    """A ring (200) around a hole (150) on every slice; the ring is the object."""
    y, x = np.mgrid[:H, :W]
    r = np.hypot(x - 30, y - 20)
    grey = np.full((H, W), 30, np.uint8)
    grey[r <= 15] = 200
    grey[r <= 9] = 150
    return np.repeat(grey[None], NZ, axis=0), np.repeat(((r <= 15) & (r > 9))[None], NZ, axis=0)


TUBE = VolumePrompt((14, 4, 46, 36), 4, (0, 9))


def slice_of(call, volume) -> int:
    """Which slice a decoder call ran on (the stub records the grey image)."""
    return next(z for z in range(len(volume)) if np.array_equal(volume[z], call.image))


def stamped(volume: np.ndarray) -> np.ndarray:
    """Make every slice's pixels unique (a corner stamp) so calls can be traced to their slice."""
    out = volume.copy()
    for z in range(len(out)):
        out[z, 0, 0] = 10 + z
    return out


def test_box_step_equals_the_streaming_propagator():
    rng = np.random.default_rng(0)
    volume = np.full((NZ, H, W), 20, np.uint8)
    truths = []
    for k, (x, y) in enumerate([(8, 8), (30, 12), (40, 20)]):
        t = np.zeros_like(volume, bool)
        for z in range(1 + k, 8 + k // 2):
            dx, dy = rng.integers(-2, 3, 2)
            t[z, y + dy:y + dy + 9, x + dx:x + dx + 12] = True
        volume[t] = 180 + 20 * k
        truths.append(t)
    prompts = [VolumePrompt((7, 5, 22, 19), 3, (1, 7), 1), VolumePrompt((28, 9, 44, 23), 4, (2, 8), 2),
               VolumePrompt((37, 17, 53, 31), 5, (3, 9), 3)]
    # objects 2 and 3 overlap (x 37..44, y 17..23): the session resolves it by the same rule as the
    # CLI / segment_volume, "last" by default
    references = {rule: segment_volume(volume, Geometry.identity(), prompts, StubPredictor(),
                                       VolumeOptions(modality="rgb", overlap=rule)) for rule in OVERLAP_RULES}
    assert not np.array_equal(references["last"].labels, references["logit"].labels)  # the rule matters here
    for config in (RefineConfig(), RefineConfig(mask_prompt=True, carry_mask=True)):
        mine = StubPredictor()
        session = Session3D(mine, volume, config)
        session.add_objects(prompts)
        assert session.overlap == DEFAULT_OVERLAP == "last"
        np.testing.assert_array_equal(session.label_map(), references["last"].labels)
        for z in (0, 4, 8):
            np.testing.assert_array_equal(session.label_slice(z), references["last"].labels[z])
        assert session.refiner.embeddings.encoder_calls == references["last"].encoder_calls == 9  # slices 1..9, once each
        assert all(c.mask_input is None for c in mine.calls)  # the box step is LiteMedSAM's, whatever the config
    for rule in OVERLAP_RULES:
        session = Session3D(StubPredictor(), volume, overlap=rule)
        session.add_objects(prompts)
        np.testing.assert_array_equal(session.label_map(), references[rule].labels)
    # 3D boxes bound their objects: the session clips the propagated boxes as segment_volume does
    bounded = [VolumePrompt.from_box3d((*p.box[:2], p.z_range[0], *p.box[2:], p.z_range[1]), label=p.label,
                                       key_slice=p.key_slice) for p in prompts]
    assert all(p.bounded for p in bounded)
    reference = segment_volume(volume, Geometry.identity(), bounded, StubPredictor(), VolumeOptions(modality="rgb"))
    session = Session3D(StubPredictor(), volume)
    session.add_objects(bounded)
    assert all(o.bounded for o in session.objects)
    np.testing.assert_array_equal(session.label_map(), reference.labels)
    with pytest.raises(ValueError, match="overlap must be one of"):
        Session3D(StubPredictor(), volume, overlap="first")


@pytest.mark.parametrize("grow", [3, 1])
def test_propagated_boxes_grow_by_the_predictors_model_growth(grow):
    """Without a ``PropagationConfig`` the session grows each propagated box by the predictor's
    ``grow_px`` (its registry model's: 1 for ``litemedsam-clicks``, 3 otherwise)."""
    volume, _ = tube()
    volume = stamped(volume)
    predictor = StubPredictor()
    predictor.grow_px = grow
    Session3D(predictor, volume).add_object(TUBE)
    propagated = [c for c in predictor.calls if slice_of(c, volume) != TUBE.key_slice]
    assert len(propagated) == NZ - 1
    for call in propagated:  # the neighbour's disc (x 15..45, y 5..35: the stub keeps pixels > 127) grown
        np.testing.assert_array_equal(call.boxes[0], (15 - grow, 5 - grow, 45 + grow, 35 + grow))


def test_a_background_click_fixes_its_slice_and_nothing_is_recomputed_where_boxes_stay():
    volume, ring = tube()
    stub = StubPredictor()
    session = Session3D(stub, volume)
    obj = session.add_object(TUBE)
    encoded, decoded = len(stub.embedded), len(stub.calls)
    disc = session.label_map().astype(bool)
    assert disc.sum() > ring.sum()  # the box takes the hole on every slice
    session.add_click(obj, (30, 20, 6, 0))
    after = session.label_map().astype(bool)
    np.testing.assert_array_equal(after[6], ring[6])  # fixed
    np.testing.assert_array_equal(np.delete(after, 6, 0), np.delete(disc, 6, 0))  # the rest as before
    # one decode (slice 6: box + click); the next slice's box is unchanged, so the walk stops there
    assert len(stub.calls) == decoded + 1 and len(stub.embedded) == encoded
    call = stub.calls[-1]
    np.testing.assert_array_equal(call.points, [[[30, 20]]])
    np.testing.assert_array_equal(call.boxes, [session.object(obj).slices[6].box])


def test_click_reach_carries_a_click_to_the_slices_near_it_that_disagree_with_it():
    volume, ring = tube()
    hole = np.zeros(ring.shape, bool)
    hole[:, 20, 30] = True
    stub = StubPredictor()
    session = Session3D(stub, volume, RefineConfig(click_reach=1))
    obj = session.add_object(TUBE)
    disc = session.label_map().astype(bool)
    before = len(stub.calls)
    session.add_click(obj, (30, 20, 6, 0))  # background, in the hole of slice 6
    after = session.label_map().astype(bool)
    for z in (5, 6, 7):  # its slice and the one above and below: the hole is gone
        np.testing.assert_array_equal(after[z], ring[z])
    np.testing.assert_array_equal(np.delete(after, [5, 6, 7], 0), np.delete(disc, [5, 6, 7], 0))
    neighbours = [c for c in stub.calls[before:] if c.points is not None and len(c.points[0]) == 1]
    assert len(neighbours) == 3  # 6, then 7 and 5 with the click moved onto them
    # a click that a slice's mask already agrees with is not carried there: a foreground click on the
    # ring of slice 2 (covered everywhere) adds no point to slices 1 and 3
    before = len(stub.calls)
    session.add_click(obj, (30, 6, 2, 1))
    assert all(c.points is None or len(c.points[0]) <= 1 for c in stub.calls[before:])
    with pytest.raises(ValueError, match="click_reach"):
        RefineConfig(click_reach=-1)


def test_without_click_reach_a_click_stays_on_its_slice():
    volume, ring = tube()
    session = Session3D(StubPredictor(), volume)
    obj = session.add_object(TUBE)
    session.add_click(obj, (30, 20, 6, 0))
    after = session.label_map().astype(bool)
    np.testing.assert_array_equal(after[6], ring[6])
    assert after[5, 20, 30] and after[7, 20, 30]  # the neighbours keep the hole


def two_parts() -> np.ndarray:
    """Part A (x 10..20) on every slice and part B (x 30..40) on slices 5..7, same brightness."""
    volume = np.full((NZ, H, W), 20, np.uint8)
    volume[:, 10:30, 10:21] = 200
    volume[5:8, 10:30, 30:41] = 200
    return stamped(volume)


def test_a_foreground_click_propagates_outward_until_masks_stop_changing():
    volume = two_parts()
    stub = StubPredictor()
    session = Session3D(stub, volume)
    obj = session.add_object(VolumePrompt((9, 9, 22, 31), 3, (0, 9)))
    assert not session.label_map()[:, :, 30:41].any()  # the key box does not reach B
    before = len(stub.calls)
    session.add_click(obj, (35, 20, 5, 1))
    labels = session.label_map().astype(bool)
    assert labels[5:8, 10:30, 30:41].all()  # B added on its slices
    assert not labels[:5, :, 30:].any() and not labels[8:, :, 30:].any()
    # decoded: 5 (the click), 6, 7 (B still there), 8 (same mask as before: stop); never 0..4 or 9
    assert [slice_of(c, volume) for c in stub.calls[before:]] == [5, 6, 7, 8]


def test_carry_mask_feeds_the_neighbours_logits_to_the_next_slice():
    volume = two_parts()
    stub = StubPredictor()
    session = Session3D(stub, volume, RefineConfig(carry_mask=True))
    obj = session.add_object(VolumePrompt((9, 9, 22, 31), 3, (0, 9)))
    before = len(stub.calls)
    session.add_click(obj, (35, 20, 5, 1))
    calls = stub.calls[before:]
    assert calls[0].mask_input is None  # the clicked slice: no previous-logits prompt (mask_prompt off)
    slice5 = session.object(obj).slices[5].result.low_res_logits
    assert calls[1].mask_input is not None and np.array_equal(calls[1].mask_input[0].numpy(), slice5.numpy())


def test_clicks_map_to_their_slice_and_pixels_whatever_the_spacing():
    volume = stamped(tube()[0])
    stub = StubPredictor()
    session = Session3D(stub, volume)  # the session works in voxel indices; spacing never enters
    obj = session.add_object(TUBE)
    for x, y, z in [(30.5, 20.25, 2), (17, 33, 8)]:
        session.add_click(obj, (x, y, z, 0))
        call = next(c for c in stub.calls[::-1] if c.points is not None)
        assert slice_of(call, volume) == z
        assert tuple(call.points[0, -1]) == (x, y)
    assert [c.z for c in session.object(obj).clicks] == [2, 8]


def test_clicks_outside_the_range_extend_it_or_change_nothing():
    volume, _ = tube()
    session = Session3D(StubPredictor(), volume)
    obj = session.add_object(VolumePrompt((14, 4, 46, 36), 4, (3, 5)))
    assert sorted(session.object(obj).slices) == [3, 4, 5]
    before = session.label_map().copy()
    session.add_click(obj, (20, 20, 9, 0))  # background, outside: recorded, nothing to change
    np.testing.assert_array_equal(session.label_map(), before)
    assert session.object(obj).z_range == (3, 5) and len(session.object(obj).clicks) == 1
    session.add_click(obj, (20, 20, 8, 1))  # foreground, outside: the range grows to slice 8
    assert session.object(obj).z_range == (3, 8)
    assert sorted(session.object(obj).slices) == [3, 4, 5, 6, 7, 8]


def test_point_only_object_starts_from_its_first_foreground_click_and_stops_where_it_ends():
    volume = np.full((NZ, H, W), 20, np.uint8)
    volume[2:7, 5:15, 5:15] = 200
    session = Session3D(StubPredictor(), volume)
    prompt = VolumePrompt(None, 4, (0, 9), None, (Click(10, 10, 1, z=4),))
    obj = session.add_object(prompt)
    np.testing.assert_array_equal(session.label_map().astype(bool), volume == 200)
    # the walk ends at the first empty slice on each side (no key box to fall back on)
    assert sorted(session.object(obj).slices) == [1, 2, 3, 4, 5, 6, 7]


def test_undo_redo_remove_in_3d():
    volume, ring = tube()
    session = Session3D(StubPredictor(), volume)
    obj = session.add_object(TUBE)
    disc = session.label_map().copy()
    session.add_click(obj, (30, 20, 4, 0))
    fixed = session.label_map().copy()
    assert session.undo()
    np.testing.assert_array_equal(session.label_map(), disc)
    assert session.redo()
    np.testing.assert_array_equal(session.label_map(), fixed)
    session.remove_object(obj)
    assert not session.label_map().any()
    session.undo()
    np.testing.assert_array_equal(session.label_map(), fixed)
    np.testing.assert_array_equal(session.object(obj).mask(volume.shape)[4], ring[4])


def test_embeddings_are_cached_up_to_the_bound():
    volume, _ = tube()
    stub = StubPredictor()
    session = Session3D(stub, volume, max_cached_embeddings=3)
    obj = session.add_object(TUBE)
    assert len(session.refiner.embeddings) == 3 and len(stub.embedded) == NZ
    session.add_click(obj, (30, 20, 9, 0))  # slice 9 was encoded long ago: out of the cache
    assert len(stub.embedded) == NZ + 1
    session.add_click(obj, (31, 20, 9, 0))  # now cached
    assert len(stub.embedded) == NZ + 1


@pytest.mark.parametrize("prompt, problem", [
    (VolumePrompt((14, 4, 46, 36), 4, (0, 12)), "z1 12 is outside the volume's slices 0..9"),
    (VolumePrompt((14, 4, 46, 36), 4, (0, 9), None, (Click(70, 5, 1, z=3),)), "lies outside the volume"),
    ((1, 2, 3), "6 numbers"),
])
def test_bad_prompts_are_refused(prompt, problem):
    session = Session3D(StubPredictor(), tube()[0])
    with pytest.raises(InputError) as err:
        session.add_objects([prompt], source="vol.nii.gz")
    assert problem in str(err.value)


def test_segment_volume_replays_clicks_through_the_session():
    volume, ring = tube()
    prompt = VolumePrompt(TUBE.box, TUBE.key_slice, TUBE.z_range, 5, (Click(30, 20, 0, z=4),))
    result = segment_volume(volume, Geometry(spacing=(5.0, 0.7, 1.1)), [prompt], StubPredictor(),
                            VolumeOptions(modality="rgb"))
    session = Session3D(StubPredictor(), volume)
    obj = session.add_object(VolumePrompt(TUBE.box, TUBE.key_slice, TUBE.z_range, 5))
    session.add_click(obj, (30, 20, 4, 0))
    np.testing.assert_array_equal(result.labels, session.label_map())
    assert result.labels[4].astype(bool).sum() == ring[4].sum() and result.label_ids == (5,)


class RecordingPropagator:
    """A Propagator that records the prompts it is given and marks every slice of the range."""

    def __init__(self) -> None:
        self.prompts: list = []

    def init_state(self, slices, prompts):
        self.prompts.append(list(prompts))
        return (slices.shape, list(prompts))

    def propagate(self, state):
        (nz, h, w), prompts = state
        for z in range(nz):
            ids = tuple(i for i, p in enumerate(prompts) if p.z_range[0] <= z <= p.z_range[1])
            logits = np.full((len(ids), h, w), 5.0, np.float32)
            yield SliceResult(z, ids, logits > 0, logits, True)


def test_a_propagator_plugs_in_and_gets_the_clicks_as_points():
    volume, _ = tube()
    fake = RecordingPropagator()
    session = Session3D(StubPredictor(), volume, refiner=PropagatorRefiner(fake, VolumeSlices(volume)))
    obj = session.add_object(VolumePrompt((14, 4, 46, 36), 4, (3, 5), 2))
    assert session.label_map()[3:6].all() and not session.label_map()[6:].any()
    session.add_click(obj, (20, 20, 8, 1))
    last = fake.prompts[-1][0]
    assert last.points == (Click(20, 20, 1, z=8),) and last.z_range == (3, 8) and last.box == (14, 4, 46, 36)
    assert session.label_map()[3:9].all()


# ------------------------------------------------------------ ranges, progress, clear (web app)
def _three_boxes():
    rng = np.random.default_rng(1)
    volume = np.full((NZ, H, W), 20, np.uint8)
    for k, (x, y) in enumerate([(8, 8), (30, 12)]):
        for z in range(1, 9):
            dx, dy = rng.integers(-2, 3, 2)
            volume[z, y + dy:y + dy + 9, x + dx:x + dx + 12] = 180 + 20 * k
    return volume, [VolumePrompt((7, 5, 22, 19), 4, (1, 8), 1), VolumePrompt((28, 9, 44, 23), 5, (0, 9), 2)]


def test_an_object_added_on_its_key_slice_then_given_its_range_equals_one_added_with_it():
    volume, prompts = _three_boxes()
    whole = Session3D(StubPredictor(), volume)
    whole.add_objects(prompts)
    stepwise = Session3D(StubPredictor(), volume)
    ids = stepwise.add_objects([VolumePrompt(p.box, p.key_slice, (p.key_slice, p.key_slice), p.label) for p in prompts])
    assert all(set(stepwise.object(i).slices) == {p.key_slice} for i, p in zip(ids, prompts))
    stepwise.set_ranges({i: p.z_range for i, p in zip(ids, prompts)})
    np.testing.assert_array_equal(stepwise.label_map(), whole.label_map())
    assert stepwise.refiner.embeddings.encoder_calls == whole.refiner.embeddings.encoder_calls  # each slice once
    assert [stepwise.object(i).z_range for i in ids] == [(1, 8), (0, 9)]
    # shrinking drops the slices outside; undo gives them back
    stepwise.set_range(ids[1], (3, 6))
    assert set(stepwise.object(ids[1]).slices) == {3, 4, 5, 6}
    stepwise.undo()
    np.testing.assert_array_equal(stepwise.label_map(), whole.label_map())
    with pytest.raises(InputError, match="leaves out its key slice 4"):
        stepwise.set_range(ids[0], (5, 9))
    with pytest.raises(InputError, match="within the volume's slices 0..9"):
        stepwise.set_range(ids[0], (0, 10))


def test_the_monitor_follows_every_slice_and_stopping_it_leaves_the_session_as_it_was():
    volume, prompts = _three_boxes()
    session = Session3D(StubPredictor(), volume)
    [obj] = session.add_objects([VolumePrompt(prompts[0].box, 4, (4, 4), 1)])
    calls = []
    session.monitor = lambda done, planned, z: calls.append((done, planned, z))
    session.set_range(obj, (1, 8))
    assert calls == [(0, 7, 5), (1, 7, 6), (2, 7, 7), (3, 7, 8), (4, 7, 3), (5, 7, 2), (6, 7, 1)]
    before = session.label_map()
    session.undo()
    key_only = session.label_map()

    class Stop(Exception):
        pass

    def stop_at_slice_2(done, planned, z):
        if z == 2:
            raise Stop

    session.monitor = stop_at_slice_2
    with pytest.raises(Stop):
        session.set_range(obj, (1, 8))
    assert session.object(obj).z_range == (4, 4)
    np.testing.assert_array_equal(session.label_map(), key_only)
    session.monitor = None
    session.redo()
    np.testing.assert_array_equal(session.label_map(), before)


def test_clear_is_one_undoable_step_and_label_slice_is_a_slice_of_the_label_map():
    volume, prompts = _three_boxes()
    session = Session3D(StubPredictor(), volume)
    session.add_objects(prompts)
    labels = session.label_map()
    assert all(np.array_equal(session.label_slice(z), labels[z]) for z in range(NZ))
    session.clear()
    assert session.objects == () and not session.label_map().any() and not session.label_slice(4).any()
    session.undo()
    np.testing.assert_array_equal(session.label_map(), labels)


def test_a_range_that_shrinks_drops_the_clicks_outside_and_replays_the_same():
    volume, prompts = _three_boxes()
    session = Session3D(StubPredictor(), volume)
    [obj] = session.add_objects([VolumePrompt(prompts[0].box, 4, (4, 4), 1)])
    session.add_click(obj, (14, 12, 8, 1))  # extends the range to slice 8
    session.add_click(obj, (14, 12, 5, 0))
    assert session.object(obj).z_range == (4, 8)
    session.set_range(obj, (2, 6))
    shrunk = session.object(obj)
    assert shrunk.z_range == shrunk.given_range == (2, 6) and [c.z for c in shrunk.clicks] == [5]
    assert set(shrunk.slices) == {2, 3, 4, 5, 6}
    replay = Session3D(StubPredictor(), volume)
    [record] = session.prompt_records()
    assert record["z_range"] == [2, 6] and record["slice"] == 4
    replay.add_objects([VolumePrompt(tuple(record["box"]), record["slice"], tuple(record["z_range"]), 1,
                                     shrunk.clicks)])
    np.testing.assert_array_equal(replay.label_map(), session.label_map())
