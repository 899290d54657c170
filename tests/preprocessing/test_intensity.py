"""Tests for medsamkit.preprocessing.intensity: numbers of each scheme and the selection rules."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.preprocessing import intensity
from medsamkit.preprocessing.intensity import (
    WINDOW_PRESETS,
    Compose,
    CTWindow,
    Identity,
    MinMax,
    PercentileClip,
    parse_window,
    select_scheme,
    to_rgb_uint8,
)


def test_abdomen_window_numbers() -> None:
    hu = np.array([-1000, -160, -60, 40, 140, 240, 3000], dtype=np.int16)
    out = CTWindow.preset("abdomen")(hu)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 63, 127, 191, 255, 255]  # (x+160)/400*255, truncated


def test_window_any_dimensionality_and_float_input() -> None:
    vol = np.linspace(-2000, 2000, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.float32)
    out = CTWindow(-600, 1500)(vol)
    assert out.shape == vol.shape and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.reshape(-1).astype(int)) >= 0)  # monotone


def test_window_is_blockwise_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    hu = np.random.default_rng(0).integers(-1200, 2000, (7, 33, 29)).astype(np.int16)
    whole = CTWindow(40, 400)(hu)
    monkeypatch.setattr(intensity, "_BLOCK", 100)
    np.testing.assert_array_equal(CTWindow(40, 400)(hu), whole)
    expected = ((np.clip(hu, -160, 240) + 160.0) / 400.0 * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(whole, expected)


def test_presets_and_parse_window() -> None:
    assert WINDOW_PRESETS["abdomen"] == (40, 400)
    assert WINDOW_PRESETS["liver"] == (80, 150)
    assert WINDOW_PRESETS["lung"] == WINDOW_PRESETS["chest"] == (-600, 1500)
    assert WINDOW_PRESETS["brain"] == (40, 80)
    assert WINDOW_PRESETS["bone"] == (400, 1800)
    assert WINDOW_PRESETS["mediastinum"] == (50, 350)
    assert CTWindow.preset("Brain").bounds == (0.0, 80.0)
    assert parse_window("lung") == (-600, 1500)
    assert parse_window("40,400") == (40.0, 400.0)
    assert parse_window(" -600, 1500 ") == (-600.0, 1500.0)


@pytest.mark.parametrize("text", ["abdomne", "40", "40,400,3", "a,b", ""])
def test_parse_window_rejects_and_lists_presets(text: str) -> None:
    with pytest.raises(InputError, match="abdomen, liver, lung, chest, brain, bone, mediastinum"):
        parse_window(text)


@pytest.mark.parametrize("text", ["40,0", "40,-5", "40,nan"])
def test_window_width_must_be_positive(text: str) -> None:
    with pytest.raises(InputError, match="width must be a number > 0"):
        parse_window(text)
    with pytest.raises(InputError):
        CTWindow(40, 0)


def test_unknown_preset() -> None:
    with pytest.raises(InputError, match="unknown CT window preset 'kidney'; presets: abdomen"):
        CTWindow.preset("kidney")


def test_percentile_clip_keeps_zeros_and_clips_outliers() -> None:
    img = np.zeros((40, 50), np.float32)
    img[5:35, 5:45] = np.linspace(100, 200, 30 * 40).reshape(30, 40)
    img[10, 10] = 1e6  # hot outlier
    img[11, 11] = 1e-3  # cold outlier (still > 0)
    out = PercentileClip()(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.all(out[img == 0] == 0)
    assert out[10, 10] == 255 and out[11, 11] == 0
    inside = img[5:35, 5:45]
    lo, hi = np.percentile(img[img > 0], [0.5, 99.5])
    expected = ((np.clip(inside, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(out[5:35, 5:45][inside != 0], expected[inside != 0])
    # the outlier did not squash the rest: the tissue uses nearly the full range
    assert out[5:35, 5:45].max() == 255 and np.percentile(out[5:35, 5:45], 50) > 100


def test_percentile_clip_without_positive_voxels_and_all_voxels() -> None:
    neg = np.linspace(-100, -1, 200).reshape(10, 20)
    out = PercentileClip()(neg)
    assert out.min() == 0 and out.max() == 255  # fell back to all voxels
    data = np.concatenate([np.zeros(50), np.linspace(-50, 50, 150)]).reshape(10, 20)
    out_all = PercentileClip(0, 100, nonzero_only=False)(data)
    assert out_all[0, 0] == 127  # 0 is mid-range here and is not forced to 0


def test_percentile_clip_degenerate_range() -> None:
    img = np.zeros((6, 6), np.uint16)
    img[2:4, 2:4] = 500
    out = PercentileClip()(img)
    assert out[3, 3] == 255 and out[0, 0] == 0


def test_minmax_and_constant_input() -> None:
    out = MinMax()(np.array([[10, 20], [30, 50]], np.uint16))
    assert out.tolist() == [[0, 63], [127, 255]]
    const = MinMax()(np.full((3, 4, 5), 7.5))
    assert const.dtype == np.uint8 and const.shape == (3, 4, 5) and not const.any()


def test_schemes_reject_nan() -> None:
    bad = np.array([[1.0, np.nan]])
    for scheme in (CTWindow(40, 400), PercentileClip(), MinMax()):
        with pytest.raises(InputError, match="NaN or inf"):
            scheme(bad)


def test_identity_and_compose() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert Identity()(rgb) is rgb
    assert Identity()(np.array([0, 255], np.int32)).dtype == np.uint8
    with pytest.raises(InputError, match="not integers in 0..255"):
        Identity()(np.array([0, 300], np.int32))
    composed = Compose(CTWindow(40, 400), to_rgb_uint8)
    out = composed(np.array([[-160, 240]], np.int16))
    assert out.shape == (1, 2, 3) and out[0, 1].tolist() == [255, 255, 255]
    assert "CT window" in composed.describe()


@pytest.mark.parametrize("kind, modality, window, expected", [
    ("ct", None, None, CTWindow(40, 400, "abdomen")),
    ("ct", "auto", None, CTWindow(40, 400, "abdomen")),
    ("grey16", "CT", None, CTWindow(40, 400, "abdomen")),
    ("ct", "ct", "lung", CTWindow(-600, 1500, "lung")),
    ("grey16", "mr", "-100,300", CTWindow(-100, 300)),
    ("rgb8", None, "brain", CTWindow(40, 80, "brain")),
    ("grey16", None, None, PercentileClip()),
    ("float", "auto", None, PercentileClip()),
    ("ct", "mr", None, PercentileClip()),
    ("grey8", "us", None, PercentileClip()),
    ("grey16", "percentile", None, PercentileClip()),
    ("rgb8", None, None, Identity()),
    ("grey8", None, None, Identity()),
    ("rgb8", "rgb", None, Identity()),
    ("grey16", "none", None, MinMax()),
    ("rgb8", "minmax", None, MinMax()),
])
def test_select_scheme_rules(kind: str, modality: str | None, window: str | None,
                             expected: object) -> None:
    scheme, description = select_scheme(kind, modality, window)
    assert scheme == expected
    assert isinstance(description, str) and "\n" not in description and kind in description


def test_select_scheme_rejects() -> None:
    with pytest.raises(InputError, match="unknown modality 'xrays'; accepted: auto, ct, mr"):
        select_scheme("grey16", "xrays")
    with pytest.raises(InputError, match="give a preset .abdomen, liver"):
        select_scheme("ct", None, "abdomenn")
    with pytest.raises(ValueError, match="unknown image kind"):
        select_scheme("jpeg")


def test_select_scheme_logs_its_choice_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    # DEBUG here: callers (Segmenter2D) report the scheme once at INFO, not once per image
    with caplog.at_level(logging.DEBUG, logger="medsamkit.preprocessing.intensity"):
        select_scheme("ct")
    assert any("CT window abdomen" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)


def test_to_rgb_uint8() -> None:
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3)
    rgb = to_rgb_uint8(grey)
    assert rgb.shape == (2, 3, 3) and all(np.array_equal(rgb[..., c], grey) for c in range(3))
    assert to_rgb_uint8(grey[..., None]).shape == (2, 3, 3)
    already = np.zeros((2, 3, 3), np.uint8)
    assert to_rgb_uint8(already) is already
    with pytest.raises(ValueError, match="uint8"):
        to_rgb_uint8(grey.astype(np.uint16))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 3, 4), np.uint8))
