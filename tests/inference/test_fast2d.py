"""The torch-free fast path (medsamkit.inference.fast2d): the same model input and (to float
rounding) the same logits as LiteMedSAMGeometry, and records that only match the run they describe."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medsamkit.inference import fast2d
from medsamkit.inference.fast2d import EngineRequest, fast_segmenter, find_record, remember_engines
from medsamkit.inference.prompts import BoxPrompt
from medsamkit.inference.clicks import Click
from medsamkit.preprocessing.geometry import LiteMedSAMGeometry, MedSAMGeometry

SIZES = [(220, 300), (300, 220), (256, 256), (97, 41), (1072, 1350), (31, 512)]


@pytest.mark.parametrize("size", SIZES)
def test_model_input_is_the_geometrys_exactly(size):
    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    x, frame = fast2d.model_input(image)
    tensor, expected = LiteMedSAMGeometry().prepare_image(image)
    assert frame == expected
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, tensor.numpy())


def test_model_input_refuses_what_the_predictor_refuses():
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        fast2d.model_input(np.zeros((10, 10), np.uint8))


@pytest.mark.parametrize("size", SIZES)
def test_logits_to_original_matches_torch_bilinear(size):
    geometry = LiteMedSAMGeometry()
    frame = geometry.frame(size)
    rng = np.random.default_rng(7)
    # smooth logits with a boundary, as a decoder gives (noise alone has no meaningful sign field)
    yy, xx = np.mgrid[:256, :256]
    low = np.stack([(40 - np.hypot(yy - 90, xx - 120)) / 8, (xx - 100) / 16.0]).astype(np.float32)
    low += rng.normal(0, 0.05, low.shape).astype(np.float32)
    ours = fast2d.logits_to_original(low, frame)
    ref = geometry.logits_to_original(torch.from_numpy(low)[:, None], frame)[:, 0].numpy()
    assert ours.shape == ref.shape == (2, *size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=0)
    assert ((ours > 0) != (ref > 0)).sum() <= 2  # only where a logit is within rounding of 0


def test_logits_to_original_refuses_another_side_and_handles_no_object():
    frame = LiteMedSAMGeometry().frame((100, 80))
    with pytest.raises(ValueError, match="side 64"):
        fast2d.logits_to_original(np.zeros((1, 64, 64), np.float32), frame)
    assert fast2d.logits_to_original(np.zeros((0, 256, 256), np.float32), frame).shape == (0, 100, 80)


# --- records --------------------------------------------------------------------------------

def _built(tmp_path: Path, backend: str = "openvino", precision: str = "bf16", family: str = "litemedsam"):
    """A torch run's predictor and loaded model, as remember_engines reads them (files on disk)."""
    encoder, decoder = tmp_path / "enc.onnx", tmp_path / "dec.onnx"
    encoder.write_bytes(b"encoder")
    decoder.write_bytes(b"decoder")
    (tmp_path / "dec.image.onnx").write_bytes(b"decoder, image side")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"weights v1")
    geometry = LiteMedSAMGeometry() if family == "litemedsam" else MedSAMGeometry()
    predictor = SimpleNamespace(engine=SimpleNamespace(backend=backend, precision=precision), geometry=geometry,
                                family="sam", encoder=SimpleNamespace(path=encoder),
                                box_decoder=SimpleNamespace(path=decoder, backend="onnx", precision="fp32"))
    loaded = SimpleNamespace(weights_path=weights, spec=SimpleNamespace(name="litemedsam"))
    return predictor, loaded


def test_a_record_is_found_by_the_same_request_only(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAMKIT_FAST_PATH", raising=False)
    predictor, loaded = _built(tmp_path)
    request = EngineRequest(None, str(loaded.weights_path), "auto", "auto", None, 2)
    path = remember_engines(request, loaded, predictor, cache=tmp_path / "cache")
    assert path is not None and path.parent == tmp_path / "cache" / "fastpath"
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["encoder_backend"] == "openvino" and saved["encoder_precision"] == "bf16"
    assert saved["decoder_backend"] == "onnx" and saved["threads"] == 2 and saved["model"] == "litemedsam"
    assert saved["weights_sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    record = find_record(request, tmp_path / "cache")
    assert record is not None and Path(record.encoder_path) == (tmp_path / "enc.onnx").resolve()

    cache = tmp_path / "cache"
    other = [EngineRequest(None, str(loaded.weights_path), "auto", "onnx", None, 2),   # another backend
             EngineRequest(None, str(loaded.weights_path), "auto", "auto", "fp32", 2),  # another precision
             EngineRequest(None, str(loaded.weights_path), "auto", "auto", None, 1),    # other threads
             EngineRequest("litemedsam", str(loaded.weights_path), "auto", "auto", None, 2)]
    assert [find_record(r, cache) for r in other] == [None] * 4
    # the fast path never stands in for a GPU, torch or a disabled fast path
    assert find_record(EngineRequest(None, str(loaded.weights_path), "cuda", "auto", None, 2), cache) is None
    assert find_record(EngineRequest(None, str(loaded.weights_path), "auto", "torch", None, 2), cache) is None
    # an instruction-set limit changes which precision auto takes: another CPU for the record
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert find_record(request, cache) is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert find_record(request, cache) is not None
    monkeypatch.setenv("MEDSAMKIT_FAST_PATH", "0")
    assert find_record(request, cache) is None


def test_changed_weights_or_a_missing_engine_file_void_the_record(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAMKIT_FAST_PATH", raising=False)
    predictor, loaded = _built(tmp_path)
    cache = tmp_path / "cache"
    request = EngineRequest(None, str(loaded.weights_path), "auto", "auto", None, 2)
    remember_engines(request, loaded, predictor, cache=cache)
    assert find_record(request, cache) is not None
    stat = loaded.weights_path.stat()
    os.utime(loaded.weights_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same contents
    assert find_record(request, cache) is not None
    loaded.weights_path.write_bytes(b"weights v2")  # same path and size, other contents
    assert find_record(request, cache) is None
    loaded.weights_path.write_bytes(b"weights v2, fine-tuned longer")
    assert find_record(request, cache) is None
    remember_engines(request, loaded, predictor, cache=cache)
    assert find_record(request, cache) is not None
    (tmp_path / "dec.image.onnx").unlink()  # the decoder's image side alone gone
    assert find_record(request, cache) is None
    (tmp_path / "dec.image.onnx").write_bytes(b"decoder, image side")
    assert find_record(request, cache) is not None
    (tmp_path / "dec.onnx").unlink()
    assert find_record(request, cache) is None
    assert find_record(EngineRequest(None, str(tmp_path / "gone.pth"), "auto", "auto", None, 2), cache) is None


def test_a_corrupt_record_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAMKIT_FAST_PATH", raising=False)
    predictor, loaded = _built(tmp_path)
    request = EngineRequest(None, str(loaded.weights_path), "auto", "auto", None, 2)
    path = remember_engines(request, loaded, predictor, cache=tmp_path / "cache")
    path.write_text("{not json", encoding="utf-8")
    assert find_record(request, tmp_path / "cache") is None


@pytest.mark.parametrize("what", ["torch", "int8", "medsam", "no decoder engine"])
def test_only_litemedsam_on_engines_is_recorded(tmp_path, what):
    predictor, loaded = _built(tmp_path, backend="torch" if what == "torch" else "openvino",
                               precision="int8" if what == "int8" else "fp32",
                               family="medsam" if what == "medsam" else "litemedsam")
    if what == "no decoder engine":
        predictor.box_decoder = None
    request = EngineRequest(None, str(loaded.weights_path))
    assert remember_engines(request, loaded, predictor, cache=tmp_path / "cache") is None
    assert not (tmp_path / "cache" / "fastpath").exists()


def test_prompts_with_clicks_take_the_torch_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAMKIT_FAST_PATH", raising=False)
    predictor, loaded = _built(tmp_path)
    request = EngineRequest(None, str(loaded.weights_path), "auto", "auto", None, 2)
    remember_engines(request, loaded, predictor, cache=tmp_path / "cache")
    built = []
    monkeypatch.setattr(fast2d, "FastPredictor", lambda *a, **k: built.append(a) or SimpleNamespace())
    clicked = [BoxPrompt((1, 2, 30, 40), points=(Click(5, 6, 1),))]
    point_only = [BoxPrompt(None, points=(Click(5, 6, 1),))]
    for prompts in (clicked, point_only, []):
        assert fast_segmenter(request, prompts, cache=tmp_path / "cache") is None
    assert built == []
    assert fast_segmenter(request, [BoxPrompt((1, 2, 30, 40))], cache=tmp_path / "cache") is not None
    assert len(built) == 1


def test_engines_that_fail_to_start_fall_back_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MEDSAMKIT_FAST_PATH", raising=False)
    predictor, loaded = _built(tmp_path)  # the "ONNX files" are not ONNX: the engines refuse them
    request = EngineRequest(None, str(loaded.weights_path), "auto", "onnx", None, 2)
    predictor.engine.backend, predictor.engine.precision = "onnx", "fp32"
    remember_engines(request, loaded, predictor, cache=tmp_path / "cache")
    pytest.importorskip("onnxruntime")
    assert fast_segmenter(request, [BoxPrompt((1, 2, 30, 40))], cache=tmp_path / "cache") is None
    assert "did not start" in caplog.text


# --- bf16 masks too close to call -----------------------------------------------------------

class _FakeEncoder:
    """OpenVinoRunner's stand-in: a bf16 run gives an embedding of zeros, an fp32 run of ones."""

    built: list[str] = []

    def __init__(self, path, blobs, precision, threads, mode="latency"):
        self.precision = precision
        _FakeEncoder.built.append(precision)

    def __call__(self, x):
        return self.submit(x)()

    def submit(self, x):
        fill = 0.0 if self.precision == "bf16" else 1.0
        return lambda: [np.full((1, 256, 64, 64), fill, np.float32)]


class _FakeDecoder:
    """The box decoder's stand-in: every logit is 8 on the ones (fp32) embedding; on the zeros (bf16)
    one, box 0's are 0.1 (too close to call) and the others' 9 (sure), so each source is recognisable."""

    def __init__(self, path, backend, threads, spin=True, blobs=None):
        self.backend = backend

    def __call__(self, e, boxes, key=None):
        out = np.full((len(boxes), 1, 256, 256), 8.0, np.float32)
        if e.mean() == 0:
            out[0], out[1:] = 0.1, 9.0
        return [out, np.zeros((len(boxes), 1), np.float32)]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_fast_path_decodes_masks_too_close_to_call_from_fp32(tmp_path, monkeypatch, precision):
    _FakeEncoder.built = []
    monkeypatch.setattr(fast2d, "OpenVinoRunner", _FakeEncoder)
    monkeypatch.setattr(fast2d, "SplitDecoder", _FakeDecoder)
    record = fast2d.EngineRecord("litemedsam", "openvino", precision, str(tmp_path / "enc.onnx"), "onnx",
                                 str(tmp_path / "dec.onnx"), 2, "0" * 64)
    predictor = fast2d.FastPredictor(record, tmp_path)
    assert _FakeEncoder.built == [precision]  # no fp32 encoder until a mask needs it
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:150, 50:200] = 200
    embedding = predictor.embed(image)
    logits = predictor.predict_boxes(embedding, np.array([[10, 10, 150, 150], [20, 20, 100, 100]]))
    if precision == "fp32":
        assert embedding.inputs is None and _FakeEncoder.built == ["fp32"]
        assert np.all(logits == 8.0)  # both from the fp32 embedding, no re-check
        return
    assert embedding.inputs is not None and embedding.inputs.shape == (1, 3, 256, 256)
    assert _FakeEncoder.built == ["bf16", "fp32"]
    assert np.all(logits[0] == 8.0)  # box 0 decoded again from the fp32 embedding
    assert np.all(logits[1] == 9.0)  # box 1 was sure in bf16 and stays
    predictor.predict_boxes(embedding, np.array([[10, 10, 150, 150]]))
    assert _FakeEncoder.built == ["bf16", "fp32"]  # the fp32 encoder is built once


def test_fast_path_encodes_in_fp32_only_once_most_decodes_needed_it(tmp_path, monkeypatch):
    _FakeEncoder.built = []
    monkeypatch.setattr(fast2d, "OpenVinoRunner", _FakeEncoder)
    monkeypatch.setattr(fast2d, "SplitDecoder", _FakeDecoder)
    record = fast2d.EngineRecord("litemedsam", "openvino", "bf16", str(tmp_path / "enc.onnx"), "onnx",
                                 str(tmp_path / "dec.onnx"), 2, "0" * 64)
    predictor = fast2d.FastPredictor(record, tmp_path)
    image = np.zeros((200, 300, 3), np.uint8)
    for _ in range(predictor.fallback.window):  # box 0 is too close to call on every bf16 embedding
        predictor.predict_boxes(predictor.embed(image), np.array([[10, 10, 150, 150]]))
    assert predictor.fallback.exact_only
    embedding = predictor.embed(image)
    assert embedding.inputs is None and np.all(embedding.features == 1.0)  # the fp32 embedding
    assert np.all(predictor.predict_boxes(embedding, np.array([[10, 10, 150, 150]])) == 8.0)


def test_fast_path_runs_a_bf16_asked_for_by_name_as_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(fast2d, "OpenVinoRunner", _FakeEncoder)
    monkeypatch.setattr(fast2d, "SplitDecoder", _FakeDecoder)
    record = fast2d.EngineRecord("litemedsam", "openvino", "bf16", str(tmp_path / "enc.onnx"), "onnx",
                                 str(tmp_path / "dec.onnx"), 2, "0" * 64)
    predictor = fast2d.FastPredictor(record, tmp_path, recheck=False)
    embedding = predictor.embed(np.zeros((200, 300, 3), np.uint8))
    assert embedding.inputs is None
    assert np.all(predictor.predict_boxes(embedding, np.array([[10, 10, 150, 150]])) == np.float32(0.1))
