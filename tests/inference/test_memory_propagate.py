"""SAM2 memory propagation through volumes: the Propagator contract on a tiny random model, and
parity with MedSAM2's official 3D inference (../shared/data/parity/medsam2_3d_brats2021.npz:
forward pass, reset, reverse pass, union, largest 3D component, hole filling; made on stand-in
weights, ../shared/docs/parity.md) through ``segment_volume`` and ``medsamkit segment``.

The target's logits are float16: ours are compared within 1e-2 plus float16's rounding of the
stored value; masks must match (Dice >= 0.999).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medsamkit.cli.main import main
from medsamkit.inference.clicks import Click
from medsamkit.inference.factory import make_predictor
from medsamkit.inference.memory_propagate import MemoryConfig, MemoryPropagator, fill_small_holes
from medsamkit.inference.prompts3d import VolumePrompt
from medsamkit.inference.propagate import VolumeSlices
from medsamkit.inference.sam2_predictor import SAM2Predictor
from medsamkit.inference.volume3d import Cleanup, VolumeOptions, default_propagator, segment_volume
from medsamkit.io.geometry import Geometry
from medsamkit.models.loader import load_model
from medsamkit.models.sam2.config import build_test_model
from medsamkit.models.standin import standin_state_dict
from medsamkit.preprocessing.geometry import SAM2Geometry
from medsamkit.preprocessing.labels import largest_connected_component

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TARGET = SHARED / "parity" / "medsam2_3d_brats2021.npz"
_needs_target_skip = pytest.mark.skipif(not TARGET.is_file(), reason=f"{TARGET} absent (the shared parity data)")


def needs_target(test):
    """Marks a test that needs ../shared/data (``realdata``) and skips it when that is absent."""
    return pytest.mark.realdata(_needs_target_skip(test))


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """The tiny model's operations are too small for two threads (on a busy machine, thread
    hand-offs make them 50x slower); parity tests keep torch's default."""
    if "parity" in request.fixturenames:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TinyGeometry(SAM2Geometry):
    input_size = 64


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_test_model(64).eval()
    with torch.no_grad():  # the object is always present: masks carry the prompts' effect
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    predictor = SAM2Predictor(model, TinyGeometry())
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (12, 30, 40), dtype=np.uint8)
    volume[:, 8:22, 10:30] = 230  # a bright block through every slice
    return predictor, VolumeSlices(volume)


def _run(propagator, slices, prompts):
    state = propagator.init_state(slices, prompts)
    results = list(propagator.propagate(state))
    return state, results


def _per_object(results):
    """{(object, z): logits} from SliceResults."""
    return {(o, r.z): lg for r in results for o, lg in zip(r.obj_ids, r.logits)}


def test_one_box_visits_its_range_once_and_encodes_each_slice_once(tiny):
    predictor, slices = tiny
    state, results = _run(MemoryPropagator(predictor), slices, [VolumePrompt((10, 8, 30, 22), 5, (2, 9))])
    assert [r.z for r in results] == [5, 6, 7, 8, 9, 4, 3, 2]  # up from the key slice, then down
    assert all(r.obj_ids == (0,) and r.masks.shape == (1, 30, 40) for r in results)
    assert all(r.final for r in results) and np.array_equal(results[0].masks, results[0].logits > 0)
    assert state.encoder_calls == 8 and state.decoder_calls == 8


def test_a_2d_box_without_range_covers_the_whole_volume(tiny):
    predictor, slices = tiny
    prompt = VolumePrompt((10, 8, 30, 22), 5, (4, 6), z_range_given=False)
    state, results = _run(MemoryPropagator(predictor), slices, [prompt])
    assert sorted(r.z for r in results) == list(range(12))
    assert state.objects[0].z_range == (0, 11)


def test_objects_share_encodings_and_get_what_they_get_alone(tiny):
    predictor, slices = tiny
    a = VolumePrompt((10, 8, 30, 22), 3, (1, 8))
    b = VolumePrompt((5, 5, 25, 20), 7, (2, 11))
    state, together = _run(MemoryPropagator(predictor), slices, [a, b])
    assert state.encoder_calls == 11  # slices 1..11, each once, though both sweeps visit 3..7
    logits = _per_object(together)
    for i, prompt in enumerate((a, b)):
        _, alone = _run(MemoryPropagator(predictor), slices, [prompt])
        for (o, z), lg in _per_object(alone).items():
            assert np.allclose(logits[(i, z)], lg, atol=1e-5), (i, z)
    # slices visited twice are final only on their last visit
    seen = {}
    for r in together:
        assert not seen.get(r.z, False), r.z
        seen[r.z] = r.final
    assert all(seen.values())


def test_features_spill_to_disk_with_the_same_result(tiny):
    predictor, slices = tiny
    prompts = [VolumePrompt((10, 8, 30, 22), 3, (1, 8)), VolumePrompt((5, 5, 25, 20), 7, (2, 11))]
    state, spilled = _run(MemoryPropagator(predictor, MemoryConfig(max_cached_features=0)), slices, prompts)
    _, kept = _run(MemoryPropagator(predictor), slices, prompts)
    assert state.spilled > 0
    for key, lg in _per_object(kept).items():
        assert np.array_equal(_per_object(spilled)[key], lg)


def test_memory_stays_bounded_on_long_volumes(tiny):
    predictor, _ = tiny
    slices = VolumeSlices(np.random.default_rng(1).integers(0, 255, (40, 20, 20), dtype=np.uint8))
    propagator = MemoryPropagator(predictor)
    state = propagator.init_state(slices, [VolumePrompt((2, 2, 15, 15), 0, (0, 39))])
    sizes = []
    for _ in propagator.propagate(state):
        sizes.append(len(state.objects[0].bank.tracked))
    assert max(sizes) == 15 and len(sizes) == 40  # the 15 slices the next one may read


def test_box_then_clicks_become_points_per_slice(tiny):
    predictor, slices = tiny
    prompt = VolumePrompt((10.0, 8.0, 30.0, 22.0), 5, (3, 6), points=(Click(20.0, 15.0, 0, z=5), Click(12.0, 10.0, 1, z=9)))
    state, results = _run(MemoryPropagator(predictor), slices, [prompt])
    obj = state.objects[0]
    assert sorted(obj.prompts) == [5, 9] and obj.z_range == (3, 9)  # the click's slice joins the range
    assert obj.prompts[5].labels.tolist() == [[2, 3, 0]] and obj.prompts[9].labels.tolist() == [[1]]
    assert torch.allclose(obj.prompts[5].coords[0, 0], torch.tensor([10 / 40 * 64, 8 / 30 * 64]))
    assert sorted(obj.cond) == [5, 9] and sorted(r.z for r in results) == list(range(3, 10))


def test_a_point_only_object_starts_from_its_clicks(tiny):
    predictor, slices = tiny
    prompt = VolumePrompt(None, 4, (0, 11), points=(Click(20.0, 15.0, 1, z=4), Click(5.0, 5.0, 0, z=4)),
                          z_range_given=False)
    state, results = _run(MemoryPropagator(predictor), slices, [prompt])
    assert state.objects[0].prompts[4].labels.tolist() == [[1, 0]]
    assert sorted(r.z for r in results) == list(range(12)) and state.encoder_calls == 12


def test_clicks_reach_memory_propagation_through_segment_volume(tiny):
    predictor, slices = tiny
    box = VolumePrompt((10.0, 8.0, 30.0, 22.0), 5, (0, 11))
    clicked = VolumePrompt((10.0, 8.0, 30.0, 22.0), 5, (0, 11), points=(Click(12.0, 10.0, 0, z=5),))
    _, plain = _run(MemoryPropagator(predictor), slices, [box])
    _, clicked_results = _run(MemoryPropagator(predictor), slices, [clicked])
    assert not np.allclose(_per_object(plain)[(0, 5)], _per_object(clicked_results)[(0, 5)])  # the click counts
    result = segment_volume(slices.volume, Geometry.identity(), [clicked], predictor,
                            VolumeOptions(cleanup=Cleanup(keep_largest=False)))
    assert result.encoder_calls == 12  # the memory propagator, not an interactive session
    expected = np.stack([_per_object(clicked_results)[(0, z)] for z in range(12)]) > 0
    assert np.array_equal(result.labels > 0, expected)


def test_small_background_holes_are_filled():
    logits = torch.full((1, 1, 12, 12), 5.0)
    logits[0, 0, 2:4, 2:4] = -3.0  # 4 pixels: filled
    logits[0, 0, 6:9, 6:9] = -3.0  # 9 pixels: kept
    logits[0, 0, 0, 11] = -1.0  # a corner pixel counts too
    out = fill_small_holes(logits, 8)
    assert (out[0, 0, 2:4, 2:4] == 0.1).all() and out[0, 0, 0, 11] == 0.1
    assert (out[0, 0, 6:9, 6:9] == -3.0).all() and (out[logits > 0] == 5.0).all()
    assert torch.equal(fill_small_holes(logits, 0), logits)


def test_segment_volume_picks_memory_propagation_and_keeps_the_largest_component(tiny):
    predictor, slices = tiny
    options = VolumeOptions()
    assert isinstance(default_propagator(predictor, options), MemoryPropagator)
    prompts = [VolumePrompt((10, 8, 30, 22), 5, (0, 11))]
    kept = segment_volume(slices.volume, Geometry.identity(), prompts, predictor, options)
    raw = segment_volume(slices.volume, Geometry.identity(), prompts, predictor,
                         VolumeOptions(cleanup=Cleanup(keep_largest=False)))
    assert np.array_equal(kept.labels > 0, largest_connected_component(raw.labels))
    assert kept.encoder_calls == 12


# --- parity with MedSAM2's official 3D inference -------------------------------------------------


def _fp16_excess(ours: np.ndarray, target: np.ndarray) -> float:
    target = target.astype(np.float32)
    return float((np.abs(ours - target) - np.abs(target) * 2.0**-11).max())


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


class Recorder:
    """Passes a propagator's results through and keeps each object's logits per slice."""

    def __init__(self, inner):
        self.inner = inner
        self.keeps_largest_component = inner.keeps_largest_component
        self.logits: dict[int, np.ndarray] = {}

    def init_state(self, slices, prompts):
        return self.inner.init_state(slices, prompts)

    def propagate(self, state):
        for result in self.inner.propagate(state):
            if result.obj_ids:
                self.logits[result.z] = result.logits[0]
            yield result


_FEATURES: dict = {}


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    if not TARGET.is_file():
        pytest.skip(f"{TARGET} absent (the shared parity data)")
    ref = dict(np.load(TARGET))
    layout = json.loads((SHARED / "parity" / "keys" / "sam2.1_hiera_t.json").read_text(encoding="utf-8"))
    folder = tmp_path_factory.mktemp("medsam2")
    checkpoint = folder / "MedSAM2_latest.pt"
    torch.save({"model": standin_state_dict(layout)}, checkpoint)
    loaded = load_model(checkpoint=checkpoint, device="cpu")
    assert loaded.spec.name == "medsam2"
    predictor = make_predictor(loaded)
    # slice features, shared with the CLI test below (the encoder is a pure function of the input)
    encode = predictor.encode_tensor

    def memo(tensor):
        key = hashlib.sha1(tensor.numpy().tobytes()).hexdigest()
        if key not in _FEATURES:
            _FEATURES[key] = encode(tensor)
        return _FEATURES[key]

    predictor.encode_tensor = memo
    recorder = Recorder(default_propagator(predictor, VolumeOptions()))
    prompt = VolumePrompt(tuple(float(v) for v in ref["box"]), int(ref["key"]), (0, ref["imgs"].shape[0] - 1))
    result = segment_volume(ref["imgs"], Geometry.identity(), [prompt], predictor, propagator=recorder)
    return ref, result, recorder, checkpoint


@needs_target
def test_parity_logits_of_both_passes(parity):
    ref, result, recorder, _ = parity
    assert isinstance(recorder.inner, MemoryPropagator)
    key = int(ref["key"])
    for z in range(ref["imgs"].shape[0]):
        target = ref["logits_fwd"][z] if z >= key else ref["logits_rev"][z]
        assert _fp16_excess(recorder.logits[z], target) <= 1e-2, z
    # the key slice is the same in both passes
    assert _fp16_excess(recorder.logits[key], ref["logits_rev"][key]) <= 1e-2
    assert result.encoder_calls == ref["imgs"].shape[0]


@needs_target
def test_parity_union_and_largest_component(parity):
    ref, result, recorder, _ = parity
    union = np.stack([recorder.logits[z] for z in range(ref["imgs"].shape[0])]) > 0
    assert _dice(union, ref["seg_before_largest_cc"] > 0) >= 0.999
    assert result.labels.shape == ref["seg"].shape
    assert _dice(result.labels > 0, ref["seg"] > 0) >= 0.999


@needs_target
def test_parity_through_the_cli(parity, tmp_path, capsys, monkeypatch):
    ref, _, _, checkpoint = parity
    monkeypatch.setattr(SAM2Predictor, "encode_tensor", lambda self, tensor: _FEATURES.get(
        hashlib.sha1(tensor.numpy().tobytes()).hexdigest()) or SAM2Predictor.__dict__["encode_tensor"](self, tensor))
    volume = tmp_path / "flair.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ref["imgs"]), str(volume))
    out = tmp_path / "seg.nii.gz"
    box = ",".join(f"{v:g}" for v in ref["box"])
    # --backend torch: the features memoised above are torch's (the engines: tests/cli/test_cli_sam2_backends.py)
    code = main(["-q", "segment", str(volume), "--checkpoint", str(checkpoint), "--box", box,
                 "--slice", str(int(ref["key"])), "--backend", "torch", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert _dice(seg > 0, ref["seg"] > 0) >= 0.999
