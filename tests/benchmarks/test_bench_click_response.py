"""``benchmarks/click_response.py``: per slice, the truth box then protocol clicks, each label alone,
on a synthetic nested volume with the stub predictor of tests/inference (it keeps the bright
pixels inside the box; a click adds or removes the connected region of its grey level): the outer
label's box takes in the core, one background click in the core removes it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench_helpers import fake_volumes, import_benchmark
from stub_predictor import IgnoresClicks

click_response, StubPredictor = import_benchmark("click_response")


def nested() -> tuple[np.ndarray, np.ndarray]:
    """A bright block (label 1, grey 200) holding a less bright core (label 2, grey 150) on slices 1..4."""
    image = np.full((6, 40, 48), 30, np.uint8)
    truth = np.zeros(image.shape, np.int16)
    truth[1:5, 8:32, 8:40] = 1
    truth[1:5, 16:24, 18:30] = 2
    image[truth == 1] = 200
    image[truth == 2] = 150
    return image, truth


def test_a_background_click_in_the_core_fixes_the_block_and_is_satisfied():
    image, truth = nested()
    got = click_response.click_response(StubPredictor(), image, truth, steps=3)
    block, core = truth[1] == 1, truth[1] == 2
    box_dice = 2 * block.sum() / (block.sum() + (block | core).sum())
    assert got[1]["dice"][0] == pytest.approx([box_dice] * 4)
    assert got[1]["dice"][1:] == [[1.0] * 4] * 3  # one click, then exact: no more clicks
    assert got[1]["satisfied"] == [True] * 4
    assert got[2]["dice"] == [[1.0] * 4] * 4 and got[2]["satisfied"] == []


def test_the_script_writes_a_table_and_json(tmp_path, monkeypatch, capsys):
    pytest.importorskip("nibabel")
    image, truth = nested()
    fake_volumes(monkeypatch, click_response.bench, tmp_path / "volumes", image, truth, stub=StubPredictor)
    out = tmp_path / "clicks.json"
    assert click_response.main(["--model", "stub=litemedsam", "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| stub | 1 | 4 |" in printed and "| 1.000 | 1.000 | 1.00 of 4 |" in printed
    assert "| stub | 2 | 4 | 1.000 | 1.000 | 1.000 | no clicks |" in printed
    saved = json.loads(out.read_text())["models"]["stub"]
    assert saved["cases"] == ["patient999_frame01"] and set(saved["labels"]) == {"1", "2"}


def test_local_clicks_make_a_click_the_decoder_ignores_hold():
    image, truth = nested()
    plain = click_response.click_response(IgnoresClicks(), image, truth, steps=2)
    assert plain[1]["satisfied"] == [False] * 8 and plain[1]["dice"][2] == plain[1]["dice"][0]
    local = click_response.click_response(IgnoresClicks(), image, truth, steps=2, local_clicks=True)
    assert local[1]["satisfied"][0] and local[1]["dice"][1] == [1.0] * 4  # the core (grey 150) is grown and removed
