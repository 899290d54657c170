"""Which masks decoded from a bf16 embedding are too close to call (torch-free)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medsamkit.inference.margin_check import MarginCheck
from medsamkit.preprocessing.frames import Frame

FRAME = Frame(original_size=(300, 400), resized_size=(192, 256), input_size=256)


def _disc(sharpness: float, side: int = 256) -> np.ndarray:
    """Logits of a disc of radius 40 px at (100, 90) in a side x side output (scaled with the side),
    ``sharpness`` logits per pixel across its edge."""
    scale = side / 256
    yy, xx = np.mgrid[:side, :side] / scale
    return (sharpness * (40 - np.hypot(xx - 100, yy - 90))).astype(np.float32) * scale


def test_a_crisp_mask_is_sure_and_a_soft_one_is_not():
    check = MarginCheck(band=1.0, max_fraction=0.5)
    logits = np.stack([_disc(5.0), _disc(0.02)])
    fractions = check.near_fraction(logits, FRAME)
    # crisp: only the ring of pixels within 0.2 px of the edge is near 0; soft: 50 px either side
    assert fractions[0] < 0.05 and fractions[1] > 2
    assert check.uncertain(logits, FRAME).tolist() == [False, True]


def test_the_padding_is_not_counted():
    check = MarginCheck(band=1.0, max_fraction=0.5)
    logits = _disc(5.0)[None].copy()
    base = check.near_fraction(logits, FRAME)[0]
    logits[0, 192:, :] = 0.0  # below the resized image (192 rows): padding, near 0 everywhere
    assert check.near_fraction(logits, FRAME)[0] == base
    logits[0, :192, 250:] = 0.0  # inside it: counted
    assert check.near_fraction(logits, FRAME)[0] > base


def test_a_decoder_output_smaller_than_the_input_is_mapped_to_the_resized_part():
    """MedSAM: 1024 px input, 256 px logits: the resized part is scaled to the logits' side."""
    frame = Frame(original_size=(300, 400), resized_size=(768, 1024), input_size=1024)
    check = MarginCheck()
    logits = _disc(5.0)[None].copy()
    base = check.near_fraction(logits, frame)[0]
    logits[0, 192:, :] = 0.0  # 768 / 4 = 192 rows of the 256 px logits hold the image
    assert check.near_fraction(logits, frame)[0] == base


def test_an_empty_mask_counts_its_near_pixels_against_one_pixel():
    logits = np.full((1, 256, 256), -5.0, np.float32)
    assert MarginCheck().near_fraction(logits, FRAME)[0] == 0
    logits[0, 10:20, 10:20] = -0.5  # no mask, 100 pixels near the threshold: a mask could appear
    assert MarginCheck().uncertain(logits, FRAME)[0]


def test_logits_must_be_one_map_per_prompt():
    with pytest.raises(ValueError, match="expected"):
        MarginCheck().near_fraction(np.zeros((256, 256)), FRAME)


def test_fp32_only_once_most_of_the_last_decodes_needed_it(caplog):
    from medsamkit.inference.margin_check import FallbackTracker

    caplog.set_level(logging.INFO, logger="medsamkit.inference.margin_check")
    tracker = FallbackTracker(window=4, share=0.5)
    for needed in (True, False, True):  # 2 of 3: the window is not full yet
        tracker.record(needed)
    assert not tracker.exact_only
    tracker.record(False)  # 2 of 4: half
    assert tracker.exact_only
    assert "2 of the last 4 decodes needed the fp32 embedding" in caplog.text
    tracker = FallbackTracker(window=4, share=0.5)
    for needed in (True, False, False, False, True, False, False, False):  # never 2 in any 4
        tracker.record(needed)
    assert not tracker.exact_only
