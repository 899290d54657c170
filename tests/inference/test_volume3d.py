"""segment_volume: geometry kept, label ids, overlaps, the volume-wide intensity scheme, cleanup,
errors. The model is :class:`fake_predictor.FakePredictor` (bright pixels inside the box); the
real weights run in test_propagate.py and tests/cli/test_cli_segment3d.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_predictor import FakePredictor

from medsamkit.errors import InputError
from medsamkit.inference.prompts3d import VolumePrompt
from medsamkit.inference.propagate import SliceResult
from medsamkit.inference.volume3d import (
    Cleanup,
    LabelAssembler,
    VolumeOptions,
    read_label_prompts,
    segment_volume,
    volume_kind,
)
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume

Z, H, W = 12, 32, 48
_A = np.deg2rad(20.0)
_ROTATION = np.array([[1, 0, 0], [0, np.cos(_A), -np.sin(_A)], [0, np.sin(_A), np.cos(_A)]]) @ np.array(
    [[np.cos(_A), 0, np.sin(_A)], [0, 1, 0], [-np.sin(_A), 0, np.cos(_A)]])
OBLIQUE = Geometry(spacing=(3.0, 0.8, 0.7), origin=(-12.5, 40.25, 7.0), direction=tuple(_ROTATION.ravel()))


def two_blocks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A float32 volume (background 0..10) with two bright blocks; returns (volume, a, b)."""
    volume = np.random.default_rng(0).uniform(0, 10, (Z, H, W)).astype(np.float32)
    a = np.zeros((Z, H, W), bool)
    b = np.zeros((Z, H, W), bool)
    a[2:9, 4:14, 4:16] = True
    b[5:11, 18:28, 30:44] = True
    volume[a] = 400
    volume[b] = 300
    return volume, a, b


def test_labels_geometry_and_ids():
    volume, a, b = two_blocks()
    result = segment_volume(volume, OBLIQUE, [(4, 4, 2, 15, 13, 8), (30, 18, 5, 43, 27, 10)], FakePredictor())
    assert result.geometry is OBLIQUE
    assert result.labels.shape == volume.shape and result.labels.dtype == np.uint8
    np.testing.assert_array_equal(result.labels, a * 1 + b * 2)
    assert result.label_ids == (1, 2)
    assert result.encoder_calls == result.slices_visited == 9  # slices 2..10
    assert "percentile" in result.scheme

    prompts = [VolumePrompt.from_box3d((4, 4, 2, 15, 13, 8), label=300), VolumePrompt.from_box3d((30, 18, 5, 43, 27, 10))]
    result = segment_volume(volume, OBLIQUE, prompts, FakePredictor())
    assert result.labels.dtype == np.uint16 and result.label_ids == (300, 2)
    np.testing.assert_array_equal(result.labels, a * 300 + b * 2)


def test_intensity_scheme_is_volume_wide():
    """A dim object on one slice stays dim: percentiles come from the whole volume, not the slice."""
    volume, a, _ = two_blocks()
    volume[5][a[5]] = 40  # on slice 5 only, object A is dim (40 of 400)
    result = segment_volume(volume, OBLIQUE, [(4, 4, 2, 15, 13, 8)], FakePredictor())
    found = result.labels == 1
    assert not found[5].any()  # a per-slice min-max would have made it bright
    assert all(found[z].sum() == a[z].sum() for z in (2, 3, 4, 6, 7, 8))
    # an explicit scheme replaces the selection (here: min-max of the raw values, 40 -> 25 of 255)
    from medsamkit.preprocessing.intensity import MinMax

    result = segment_volume(volume, OBLIQUE, [(4, 4, 2, 15, 13, 8)], FakePredictor(), scheme=MinMax())
    assert result.scheme == "min-max to 0..255" and not (result.labels[5] == 1).any()


def test_ct_window_from_options():
    volume = np.full((Z, H, W), -1000, np.int16)  # air
    volume[3:8, 5:15, 5:15] = 200  # bright in an abdomen window (200 HU of -160..240)
    volume[3:8, 20:30, 20:30] = 1000  # bone: bright in any window
    result = segment_volume(volume, OBLIQUE, [(5, 5, 3, 14, 14, 7)], FakePredictor(), VolumeOptions(modality="ct"))
    assert "CT window abdomen" in result.scheme and (result.labels == 1).sum() == 5 * 100
    result = segment_volume(volume, OBLIQUE, [(5, 5, 3, 14, 14, 7)], FakePredictor(), VolumeOptions(window="bone"))
    assert not result.labels.any()  # 200 HU is dark in a bone window (clip -500..1300: 200 HU -> 99 of 255)


def test_overlaps_go_to_the_highest_logit_also_across_visits():
    assembler = LabelAssembler((3, 2, 2), [4, 7], overlap="logit")
    logits = np.array([[[2.0, 1.0], [-1.0, 0.5]], [[1.0, 3.0], [-2.0, -1.0]]], np.float32)
    assembler.add(SliceResult(1, (0, 1), logits > 0, logits, final=False))
    np.testing.assert_array_equal(assembler.volume[1], [[4, 7], [0, 4]])
    # second visit of slice 1 (another object): wins only where its logit is higher
    later = np.array([[[1.5, 5.0], [0.2, 0.4]]], np.float32)
    assembler.add(SliceResult(1, (1,), later > 0, later, final=True))
    np.testing.assert_array_equal(assembler.volume[1], [[4, 7], [7, 4]])
    assert not assembler.volume[[0, 2]].any()


def test_overlap_last_lets_the_later_object_win():
    assembler = LabelAssembler((3, 2, 2), [4, 7, 9], overlap="last")
    logits = np.array([[[2.0, 1.0], [-1.0, 0.5]], [[1.0, 3.0], [-2.0, -1.0]]], np.float32)
    assembler.add(SliceResult(1, (0, 1), logits > 0, logits, final=False))
    np.testing.assert_array_equal(assembler.volume[1], [[7, 7], [0, 4]])
    later = np.array([[[-1.5, -5.0], [0.2, -0.4]]], np.float32)  # object 2 claims one voxel
    assembler.add(SliceResult(1, (2,), later > 0, later, final=True))
    np.testing.assert_array_equal(assembler.volume[1], [[7, 7], [9, 4]])
    with pytest.raises(ValueError):
        VolumeOptions(overlap="first")


def test_overlap_smallest_keeps_the_inner_object():
    outer = np.zeros((1, 6, 6), bool)
    outer[0, 0:6, 0:6] = True  # a filled blob, as a ring-shaped structure's box often gives
    inner = np.zeros((1, 6, 6), bool)
    inner[0, 2:4, 2:4] = True
    logits = np.where(np.concatenate([outer, inner]), 5.0, -5.0).astype(np.float32)
    logits[0, 2:4, 2:4] = 9.0  # the outer object is more confident even inside the inner one
    for rule, inside in (("logit", 1), ("smallest", 2)):
        assembler = LabelAssembler((1, 6, 6), [1, 2], overlap=rule)
        assembler.add(SliceResult(0, (0, 1), logits > 0, logits, final=True))
        assert (assembler.volume[0, 2:4, 2:4] == inside).all() and (assembler.volume[0][~inner[0]] == 1).all()
    # across two visits of a slice: the second object is smaller, so it wins where both claim
    assembler = LabelAssembler((1, 6, 6), [1, 2], overlap="smallest")
    assembler.add(SliceResult(0, (0,), outer, logits[:1], final=False))
    assembler.add(SliceResult(0, (1,), inner, logits[1:], final=True))
    assert (assembler.volume[0, 2:4, 2:4] == 2).all() and (assembler.volume[0][~inner[0]] == 1).all()


def test_by_default_the_object_given_last_wins_so_a_nested_inner_object_keeps_its_voxels():
    """ACDC-like nesting: the box around a ring (myocardium) also takes the bright cavity (LV)
    inside it. The fake's logits are equal there, so "highest logit" gives the cavity to the
    first object; the default ("last", the official script's rule) to the inner one, given last."""
    volume = np.random.default_rng(1).uniform(0, 10, (Z, H, W)).astype(np.float32)
    ring = np.zeros((Z, H, W), bool)
    ring[3:9, 4:28, 8:32] = True
    ring[3:9, 7:25, 11:29] = False  # a 3 px ring; inside it a dark gap of 4 px, then the cavity
    cavity = np.zeros((Z, H, W), bool)
    cavity[3:9, 11:21, 15:25] = True
    volume[ring | cavity] = 400
    prompts = [(8, 4, 3, 31, 27, 8), (15, 11, 3, 24, 20, 8)]  # the ring's box, then the cavity's
    assert VolumeOptions().overlap == "last"
    labels = segment_volume(volume, OBLIQUE, prompts, FakePredictor()).labels
    np.testing.assert_array_equal(labels, ring * 1 + cavity * 2)
    by_logit = segment_volume(volume, OBLIQUE, prompts, FakePredictor(), VolumeOptions(overlap="logit")).labels
    assert (by_logit[cavity] == 1).all()  # the cavity lost to the ring's filled box


def test_nan_inf_and_constant_volumes_are_refused_naming_the_source():
    volume, *_ = two_blocks()
    volume[3, 0, :4] = np.nan
    volume[7, 1, 1] = np.inf
    with pytest.raises(InputError) as err:
        segment_volume(volume, OBLIQUE, [(4, 4, 2, 15, 13, 8)], FakePredictor(), source="allnan.nii.gz")
    assert str(err.value) == "allnan.nii.gz: the volume contains 5 NaN or infinite values"
    with pytest.raises(InputError) as err:
        segment_volume(np.full((Z, H, W), 3.5, np.float32), OBLIQUE, [(4, 4, 2, 15, 13, 8)], FakePredictor(),
                       source="flat.nii.gz")
    assert str(err.value) == "flat.nii.gz: the volume is constant (every voxel equals 3.5); there is nothing to segment"


def test_the_progress_bar_counts_slices_not_visits(monkeypatch):
    """Two objects, z 2..8 (key slice 5) and 5..10 (key 7): the upward sweep visits 5..10, the
    downward 6..2, so slices 5 and 6 are visited twice: 9 slices, 11 visits (decoder calls). The
    bar's total and its ticks are the 9 slices."""
    bars = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.n = total, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.n += n

    monkeypatch.setattr("medsamkit.inference.volume3d.tqdm", Bar)
    volume, *_ = two_blocks()
    result = segment_volume(volume, OBLIQUE, [(4, 4, 2, 15, 13, 8), (30, 18, 5, 43, 27, 10)], FakePredictor(),
                            VolumeOptions(progress=True))
    assert result.slices_visited == 9 and result.decoder_calls == 11
    assert [(b.total, b.n) for b in bars] == [(9, 9)]


def test_cleanup():
    labels = np.zeros((6, 10, 10), np.uint8)
    labels[1:5, 2:8, 2:8] = 1
    labels[2:4, 4:6, 4:6] = 0  # a hole
    labels[0, 0, 0] = 1  # a stray voxel
    labels[5, 8:10, 8:10] = 2
    cleaned = Cleanup(keep_largest=True, fill_holes=True)(labels)
    expected = np.zeros_like(labels)
    expected[1:5, 2:8, 2:8] = 1
    expected[5, 8:10, 8:10] = 2
    np.testing.assert_array_equal(cleaned, expected)
    assert Cleanup()(labels) is labels


@pytest.mark.parametrize("prompt, problem", [
    ((4, 4, 2, 60, 13, 8), "box 4,4,60,13 lies outside the 48x32 slices"),
    ((4, 4, 8, 15, 13, 2), "z range 8,2 is inverted"),
    ((4, 4, 2, 15, 13, 12), "z1 12 is outside the volume's slices 0..11"),
    ((15, 4, 2, 4, 13, 8), "is inverted"),
])
def test_bad_prompts_name_the_volume(prompt, problem):
    volume, _, _ = two_blocks()
    fake = FakePredictor()
    with pytest.raises(InputError) as err:
        segment_volume(volume, OBLIQUE, [(4, 4, 2, 15, 13, 8), prompt], fake, source="ct.nii.gz")
    assert str(err.value).startswith("ct.nii.gz: box 2 (") and problem in str(err.value)
    assert not fake.embedded  # checked before any work


def test_bad_volumes_and_prompt_lists():
    with pytest.raises(InputError, match="^ct.nii.gz: a volume must be a non-empty 3D"):
        segment_volume(np.zeros((4, 4)), OBLIQUE, [(0, 0, 0, 1, 1, 0)], FakePredictor(), source="ct.nii.gz")
    with pytest.raises(InputError, match="no box given"):
        segment_volume(np.zeros((2, 4, 4)), OBLIQUE, [], FakePredictor(), source="ct.nii.gz")
    with pytest.raises(InputError, match="6 numbers"):
        segment_volume(np.zeros((2, 4, 4)), OBLIQUE, [(0, 0, 1, 1)], FakePredictor())


def test_read_label_prompts(tmp_path: Path):
    _, a, b = two_blocks()
    path = tmp_path / "labels.nii.gz"
    write_volume(path, (a * 3 + b * 6).astype(np.uint8), OBLIQUE, mask=True)
    prompts = read_label_prompts(path, (Z, H, W), [6])
    assert prompts == [VolumePrompt((30.0, 18.0, 43.0, 27.0), 5, (5, 10), 6)]
    with pytest.raises(InputError, match=r"labels.nii.gz: label volume has shape \(12, 32, 48\) but the image"):
        read_label_prompts(path, (Z, H, W + 1))


def test_volume_kind():
    assert volume_kind(np.zeros(2, np.float32)) == "float"
    assert volume_kind(np.zeros(2, np.uint8)) == "grey8"
    assert volume_kind(np.zeros(2, np.int16)) == "grey16"
    assert volume_kind(np.zeros(2, np.int16), ct=True) == "ct"
