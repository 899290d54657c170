"""``benchmarks/box_margin.py``: each label's truth box grown by K pixels, decoded alone, scored
per label and K, on a synthetic nested volume with the stub predictor of tests/inference (it
keeps the bright pixels inside the box): the inner label's exact box gives it exactly, a wider
box takes in the outer label's bright pixels too, a box inside it loses its border."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench_helpers import fake_volumes, import_benchmark

box_margin, StubPredictor = import_benchmark("box_margin")


def nested() -> tuple[np.ndarray, np.ndarray]:
    """A bright block (label 1) holding a bright core (label 2) on slices 1..4."""
    image = np.full((6, 40, 48), 30, np.uint8)
    truth = np.zeros(image.shape, np.int16)
    truth[1:5, 8:32, 8:40] = 1
    truth[1:5, 16:24, 18:30] = 2
    image[truth > 0] = 200
    return image, truth


def test_margin_dice_per_label_and_margin():
    image, truth = nested()
    got = box_margin.margin_dice(StubPredictor(), image, truth, [-2, 0, 3])
    assert sorted(got) == [1, 2] and all(len(v) == 4 for by_grow in got.values() for v in by_grow.values())
    core = truth[1] == 2
    assert got[2][0] == [1.0] * 4  # the exact box: the core alone
    wider = np.zeros_like(core)
    wider[13:27, 15:33] = True  # the core's box grown by 3: bright pixels of the block come in
    assert got[2][3] == pytest.approx([2 * core.sum() / (core.sum() + wider.sum())] * 4)
    inner = np.zeros_like(core)
    inner[18:22, 20:28] = True  # a box 2 px inside: only its pixels
    assert got[2][-2] == pytest.approx([2 * inner.sum() / (core.sum() + inner.sum())] * 4)
    # the block's own box: label 1 is the block without the core, the stub keeps both
    block = truth[1] == 1
    assert got[1][0] == pytest.approx([2 * block.sum() / (block.sum() + (block | core).sum())] * 4)


def test_the_script_writes_a_table_and_json(tmp_path, monkeypatch, capsys):
    pytest.importorskip("nibabel")
    image, truth = nested()
    fake_volumes(monkeypatch, box_margin.bench, tmp_path / "volumes", image, truth, stub=StubPredictor)
    out = tmp_path / "margin.json"
    assert box_margin.main(["--model", "stub=litemedsam", "--grows", "0", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| stub | 2 | 4 | 1.000 |" in printed
    assert set(json.loads(out.read_text())["models"]["stub"]["dice"]) == {"1", "2"}
