"""``medsamkit segment --model medsam2 --backend onnx|openvino``: the SAM2 family's image encoder on
an engine, in 2D and in 3D (memory propagation encodes its slices on the engine too), with the
masks of ``--backend torch``. A tiny random SAM2 at MedSAM2's 512 px stands in for the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medsamkit.cli.main import main
from medsamkit.inference.engines import ENGINES
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import read_volume, write_volume
from medsamkit.models.loader import LoadedModel
from medsamkit.models.registry import get_spec
from medsamkit.models.sam2.base import SAM2Base
from medsamkit.models.sam2.config import build_test_model


@pytest.fixture(scope="module")
def tiny_medsam2() -> LoadedModel:
    torch.manual_seed(0)
    model = build_test_model(512).eval()
    with torch.no_grad():  # the object is always present: the masks carry the features' effect
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    return LoadedModel(model, get_spec("medsam2"), Path("random"), torch.device("cpu"))


@pytest.fixture(autouse=True)
def tiny_model(tiny_medsam2, monkeypatch, tmp_path_factory):
    monkeypatch.setattr("medsamkit.models.loader.load_model", lambda *a, **k: tiny_medsam2)
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path_factory.getbasetemp() / "sam2-engine-cache"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sam2-inputs")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (60, 80, 3), dtype=np.uint8)
    image[15:45, 20:60] = 220
    Image.fromarray(image).save(d / "image.png")
    volume = rng.normal(100, 20, (6, 40, 48)).astype(np.float32)
    volume[1:5, 10:30, 12:36] = 400
    write_volume(d / "vol.nii.gz", volume, Geometry(spacing=(2.0, 1.0, 1.0)))
    return d


def _segment(capsys, source: Path, box: str, out: Path, backend: str) -> str:
    code = main(["segment", str(source), "--model", "medsam2", "--box", box, "--backend", backend,
                 "--threads", "1", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def _no_torch_encoder(monkeypatch) -> None:
    def refuse(self, images):
        raise AssertionError("the torch image encoder ran although an engine was asked for")

    monkeypatch.setattr(SAM2Base, "encode", refuse)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_2d_engine_gives_the_torch_mask(inputs, tmp_path, capsys, monkeypatch, backend):
    if not ENGINES[backend].available():
        pytest.skip(f"{backend} is not installed")
    _segment(capsys, inputs / "image.png", "18,12,62,48", tmp_path / "torch.png", "torch")
    _no_torch_encoder(monkeypatch)
    err = _segment(capsys, inputs / "image.png", "18,12,62,48", tmp_path / "engine.png", backend)
    assert f"image encoder engine: {backend} fp32" in err
    torch_mask, engine_mask = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("torch", "engine"))
    assert torch_mask.any() and np.array_equal(engine_mask, torch_mask)


def test_3d_memory_propagation_encodes_on_the_engine(inputs, tmp_path, capsys, monkeypatch):
    if not ENGINES["openvino"].available():
        pytest.skip("openvino is not installed")
    box = "10,8,1,38,32,4"
    _segment(capsys, inputs / "vol.nii.gz", box, tmp_path / "torch.nii.gz", "torch")
    _no_torch_encoder(monkeypatch)
    err = _segment(capsys, inputs / "vol.nii.gz", box, tmp_path / "engine.nii.gz", "openvino")
    assert "image encoder engine: openvino fp32" in err
    ours, theirs = read_volume(tmp_path / "engine.nii.gz")[0], read_volume(tmp_path / "torch.nii.gz")[0]
    assert theirs.any() and np.array_equal(ours, theirs)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_missing_engine_is_a_clear_error(inputs, tmp_path, capsys, monkeypatch, backend):
    import dataclasses

    monkeypatch.setitem(ENGINES, backend, dataclasses.replace(ENGINES[backend], available=lambda: False))
    code = main(["segment", str(inputs / "image.png"), "--model", "medsam2", "--box", "18,12,62,48",
                 "--backend", backend, "-o", str(tmp_path / "m.png")])
    assert code != 0 and f"--backend {backend} is not installed: pip install -e" in capsys.readouterr().err
