"""Keeping an object's topology while a box is propagated (medsamkit.inference.topology)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stub_predictor import StubPredictor

from medsamkit.inference.predictor import Prediction
from medsamkit.inference.propagate import BoxPropagator, PropagationConfig, VolumeSlices, topology_kept
from medsamkit.inference.prompts3d import VolumePrompt
from medsamkit.inference.session3d import Session3D
from medsamkit.inference.topology import LOOSEN_PX, enclosed, is_ring, keeps_topology, retries, retry_box
from medsamkit.preprocessing.geometry import Frame, ModelGeometry

CAVITY, WALL = 200, 100


def disc(shape, cy, cx, r):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def heart(radii, wall=5, shape=(64, 64)):
    """A volume whose slices hold a bright cavity of the given radius inside a grey wall."""
    volume = np.zeros((len(radii), *shape), np.uint8)
    for z, r in enumerate(radii):
        volume[z][disc(shape, 32, 32, r + wall)] = WALL
        volume[z][disc(shape, 32, 32, r)] = CAVITY
    return volume


def bounds(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


class MarginDecoder(StubPredictor):
    """A box-only decoder that, like ``litemedsam-clicks``, tells the wall from the cavity by the
    box's margin: a box more than 3 px looser than the cavity gives the wall inside it, a tighter
    one the cavity."""

    def predict(self, boxes=None, points=None, point_labels=None, mask_input=None, multimask_output=False):
        grey = self.embedding.features.numpy()
        out = []
        for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
            inside = np.zeros(grey.shape, bool)
            inside[int(np.ceil(y0)):int(np.floor(y1)) + 1, int(np.ceil(x0)):int(np.floor(x1)) + 1] = True
            cavity = inside & (grey == CAVITY)
            margin = np.mean(np.abs(np.subtract(bounds(cavity), (x0, y0, x1, y1)))) if cavity.any() else 0
            out.append(inside & (grey == (WALL if margin > 3 else CAVITY)))
        masks = np.stack(out)[:, None]
        logits = np.where(masks, 10.0, -10.0).astype(np.float32)
        low = torch.zeros((len(out), 1, 256, 256))  # no mask prompts in these tests
        return Prediction(masks, logits, np.full((len(out), 1), 0.9, np.float32), low)


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# ------------------------------------------------------------------------ the pure rule
def test_a_ring_encloses_its_hole_and_a_pinhole_does_not_count():
    ring = disc((40, 40), 20, 20, 12) & ~disc((40, 40), 20, 20, 6)
    assert is_ring(ring) and enclosed(ring).sum() == disc((40, 40), 20, 20, 6).sum()
    solid = disc((40, 40), 20, 20, 12)
    assert not is_ring(solid) and not enclosed(solid).any()
    pinhole = solid.copy()
    pinhole[20, 20] = False  # 1 px of ~450: under MIN_HOLE_FRACTION
    assert not is_ring(pinhole)
    assert not is_ring(np.zeros((40, 40), bool))


def test_retry_box_takes_what_a_new_ring_encloses_and_loosens_a_collapsed_ring():
    geometry, frame = ModelGeometry(), Frame((40, 40), (40, 40), 40)
    solid = disc((40, 40), 20, 20, 12)
    ring = solid & ~disc((40, 40), 20, 20, 6)
    # solid -> ring: the hole's box (x 14..26), grown by 2 px, in slice pixels (identity frame)
    assert retry_box(solid, ring, (5, 5, 35, 35), frame, geometry, 2) == (12.0, 12.0, 28.0, 28.0)
    # ring -> solid: the box loosened by LOOSEN_PX on every side, clipped to the slice
    assert retry_box(ring, solid, (2, 10, 30, 30), frame, geometry, 2) == (
        0.0, 10.0 - LOOSEN_PX, 30.0 + LOOSEN_PX, 30.0 + LOOSEN_PX)
    # nothing changed, or nothing to compare: no retry
    assert retry_box(solid, solid, (5, 5, 35, 35), frame, geometry, 2) is None
    assert retry_box(ring, ring, (5, 5, 35, 35), frame, geometry, 2) is None
    assert retry_box(np.zeros_like(solid), ring, (5, 5, 35, 35), frame, geometry, 2) is None
    assert retry_box(solid, np.zeros_like(solid), (5, 5, 35, 35), frame, geometry, 2) is None
    # a retry is kept only with the previous topology, and never empty
    assert keeps_topology(solid, solid) and keeps_topology(ring, ring)
    assert not keeps_topology(solid, ring) and not keeps_topology(solid, np.zeros_like(solid))



def test_retries_lists_only_the_objects_that_changed_topology():
    geometry, frame = ModelGeometry(), Frame((40, 40), (40, 40), 40)
    solid = disc((40, 40), 20, 20, 12)
    ring = solid & ~disc((40, 40), 20, 20, 6)
    box = (5, 5, 35, 35)
    todo = retries([solid, None, ring, solid], [ring, ring, ring, solid], [box] * 4, frame, geometry, 2)
    assert todo == {0: (12.0, 12.0, 28.0, 28.0)}  # no previous mask (1), unchanged (2, 3): nothing

def test_retry_box_maps_through_a_scaled_frame():
    """On a 128 px slice with a 64 px model frame, growth and loosening count model pixels."""
    geometry, frame = ModelGeometry(), Frame((128, 128), (64, 64), 64)
    solid = disc((128, 128), 64, 64, 30)
    ring = solid & ~disc((128, 128), 64, 64, 10)
    x0, y0, x1, y1 = retry_box(solid, ring, (20, 20, 108, 108), frame, geometry, 1)
    hole = bounds(enclosed(ring))
    assert x0 == pytest.approx(hole[0] - 2, abs=1) and x1 == pytest.approx(hole[2] + 2, abs=1)
    assert retry_box(ring, solid, (30, 30, 90, 90), frame, geometry, 1) == (
        30 - 2 * LOOSEN_PX, 30 - 2 * LOOSEN_PX, 90 + 2 * LOOSEN_PX, 90 + 2 * LOOSEN_PX)


# ------------------------------------------------------------------------ propagation
APEX = [12, 12, 12, 9, 6]  # the cavity narrows by 3 px a slice above slice 2
WIDEN = [18, 15, 12, 12, 12]  # ... widens by 3 px a slice below slice 2


def _propagate(volume, box, keep):
    predictor = MarginDecoder()
    propagator = BoxPropagator(predictor, PropagationConfig(grow_px=1, keep_topology=keep))
    state = propagator.init_state(VolumeSlices(volume), [VolumePrompt(box, 2, (0, len(volume) - 1))])
    masks = {r.z: r.masks[0] for r in propagator.propagate(state) if r.obj_ids}
    return masks, state.decoder_calls


@pytest.mark.parametrize("keep", [False, True])
def test_box_propagation_keeps_the_cavity_where_it_narrows(keep):
    volume = heart(APEX)
    cavity = volume == CAVITY
    masks, calls = _propagate(volume, bounds(cavity[2]), keep)
    assert dice(masks[2], cavity[2]) == 1.0 and dice(masks[0], cavity[0]) == 1.0
    if keep:  # each narrowing slice drew the wall first and was decoded again with its hole's box
        assert all(dice(masks[z], cavity[z]) == 1.0 for z in (3, 4))
        assert calls == 5 + 2
    else:  # the loose box gives the wall: the object switched
        assert dice(masks[3], cavity[3]) == 0 and is_ring(masks[3])
        assert calls == 5


@pytest.mark.parametrize("keep", [False, True])
def test_box_propagation_keeps_the_wall_where_it_widens(keep):
    volume = heart(WIDEN)
    wall = volume == WALL
    masks, _ = _propagate(volume, bounds(wall[2]), keep)
    assert dice(masks[2], wall[2]) == 1.0
    if keep:
        assert all(dice(masks[z], wall[z]) > 0.95 for z in range(5))
    else:  # the tight box gives the cavity inside the wall
        assert dice(masks[1], wall[1]) == 0 and not is_ring(masks[1])


def test_the_model_decides_unless_the_config_does():
    predictor = StubPredictor()
    assert topology_kept(PropagationConfig(), predictor) is False
    predictor.keep_topology = True
    assert topology_kept(PropagationConfig(), predictor) is True
    assert topology_kept(PropagationConfig(keep_topology=False), predictor) is False


def test_registry_turns_it_on_for_the_ring_trained_decoder_only():
    from medsamkit.models.registry import MODELS

    assert MODELS["litemedsam-clicks"].keep_topology
    assert not any(spec.keep_topology for name, spec in MODELS.items() if name != "litemedsam-clicks")


@pytest.mark.parametrize("keep", [False, True])
def test_a_session_keeps_the_cavity_through_its_box_step_and_a_click(keep):
    volume = heart(APEX)
    cavity = volume == CAVITY
    session = Session3D(MarginDecoder(), volume, propagation=PropagationConfig(grow_px=1, keep_topology=keep),
                        overlap="logit")
    session.add_object(VolumePrompt(bounds(cavity[2]), 2, (0, 4)))
    labels = session.label_map()
    assert [dice(labels[z] == 1, cavity[z]) == 1.0 for z in range(5)] == [True, True, True, keep, keep]
    # a click on the narrowed slice re-decodes it and walks on from there: the rule holds there too
    session.add_click(1, (32, 32, 3, 1))
    labels = session.label_map()
    assert [dice(labels[z] == 1, cavity[z]) == 1.0 for z in range(5)] == [True, True, True, keep, keep]
    # the slice keeps the box it was decoded with: the retry's (the cavity's, grown 1 px) or the propagated one
    assert session.object(1).slices[3].box == ((22.0, 22.0, 42.0, 42.0) if keep else (19.0, 19.0, 45.0, 45.0))
