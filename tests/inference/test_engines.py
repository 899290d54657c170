"""Engine choice (``--backend``/``--precision``), the fallback when an engine is missing or fails,
and the OpenVINO encoder: same embedding as torch, exported and compiled once per weights and CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medsamkit import choices
from medsamkit.errors import MedsamkitError
from medsamkit.inference import engines, openvino_encoder, precision_probe
from medsamkit.inference.engines import ENGINES, EngineChoice, build_first, choose_engines
from medsamkit.inference.factory import make_predictor
from medsamkit.inference.onnx_encoder import OnnxEncoder, _weights_key
from medsamkit.inference.openvino_encoder import OpenVinoEncoder, openvino_available
from medsamkit.models.loader import LoadedModel
from medsamkit.models.registry import ARCHITECTURES, get_spec

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino/onnx not installed")


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    model = ARCHITECTURES["tinyvit"]().eval()
    for m in model.modules():  # randomised BatchNorm statistics, so folding them is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return LoadedModel(model, get_spec("litemedsam"), Path("random"), torch.device("cpu"))


def _missing(monkeypatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(ENGINES, name, dataclasses.replace(ENGINES[name], available=lambda: False))


def test_backends_are_auto_and_the_engines():
    assert choices.BACKENDS == ("auto", *ENGINES)
    assert {p for e in ENGINES.values() for p in e.precisions} <= set(choices.PRECISIONS)
    assert choices.DEFAULT_BACKEND == "auto"


def test_auto_prefers_openvino_then_onnx_then_torch(loaded, monkeypatch):
    monkeypatch.setattr(engines, "_has_bf16", lambda: True)
    monkeypatch.setattr(engines, "BF16_AGREES", frozenset({_weights_key(loaded.model.image_encoder)}))
    monkeypatch.setattr(precision_probe, "bf16_pays", lambda loaded: True)
    got = choose_engines("auto", None, loaded)
    expected = [EngineChoice(n, p) for n, p in (("openvino", "bf16"), ("onnx", "fp32"), ("torch", "fp32"))
                if ENGINES[n].available()]
    assert got == expected
    monkeypatch.setattr(engines, "_has_bf16", lambda: False)
    assert all(c.precision == "fp32" for c in choose_engines("auto", None, loaded))


def test_auto_takes_bf16_only_where_it_is_faster_on_this_cpu(loaded, monkeypatch, caplog):
    monkeypatch.setattr(engines, "_has_bf16", lambda: True)
    monkeypatch.setattr(engines, "BF16_AGREES", frozenset({_weights_key(loaded.model.image_encoder)}))
    monkeypatch.setattr(precision_probe, "bf16_pays", lambda loaded: False)
    assert all(c.precision == "fp32" for c in choose_engines("auto", None, loaded))
    if ENGINES["openvino"].available():
        assert choose_engines("openvino", None, loaded) == [EngineChoice("openvino", "fp32")]

    def cannot_time(loaded):
        raise RuntimeError("no such device")

    monkeypatch.setattr(precision_probe, "bf16_pays", cannot_time)
    assert all(c.precision == "fp32" for c in choose_engines("auto", None, loaded))
    assert "could not time the image encoder in bf16 (no such device)" in caplog.text


def test_bf16_only_for_weights_measured_to_agree(loaded, monkeypatch):
    monkeypatch.setattr(engines, "_has_bf16", lambda: True)
    assert all(c.precision == "fp32" for c in choose_engines("auto", None, loaded))  # random weights
    if ENGINES["openvino"].available():
        assert choose_engines("openvino", None, loaded) == [EngineChoice("openvino", "fp32")]
        assert choose_engines("openvino", "bf16", loaded) == [EngineChoice("openvino", "bf16")]  # asked for


def test_without_the_engines_auto_is_torch(loaded, monkeypatch):
    _missing(monkeypatch, "onnx", "openvino")
    assert choose_engines("auto", None, loaded) == [EngineChoice("torch", "fp32")]
    predictor = make_predictor(loaded, backend="auto")
    assert predictor.engine == EngineChoice("torch", "fp32")
    assert predictor.encoder == loaded.model.encode


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_missing_engine_asked_by_name_is_a_clear_error(loaded, monkeypatch, backend):
    _missing(monkeypatch, backend)
    with pytest.raises(MedsamkitError, match=rf"--backend {backend} is not installed: pip install -e"):
        choose_engines(backend, None, loaded)


def test_gpu_uses_torch_under_auto_and_refuses_engines(loaded):
    gpu = dataclasses.replace(loaded, device=torch.device("cuda"))
    assert choose_engines("auto", None, gpu) == [EngineChoice("torch", "fp32")]
    with pytest.raises(MedsamkitError, match="runs on the CPU"):
        choose_engines("onnx", None, gpu)


@pytest.fixture(scope="module")
def sam2_loaded() -> LoadedModel:
    from medsamkit.models.sam2.config import build_test_model

    torch.manual_seed(0)
    return LoadedModel(build_test_model(64).eval(), get_spec("sam2.1-hiera-tiny"), Path("random"),
                       torch.device("cpu"))


def test_sam2_auto_takes_the_engines_in_fp32_and_bf16_only_when_asked(sam2_loaded, monkeypatch):
    monkeypatch.setattr(engines, "_has_bf16", lambda: True)
    expected = [EngineChoice(n, "fp32") for n in ("openvino", "onnx", "torch") if ENGINES[n].available()]
    assert choose_engines("auto", None, sam2_loaded) == expected
    if ENGINES["openvino"].available():
        assert choose_engines("openvino", None, sam2_loaded) == [EngineChoice("openvino", "fp32")]
        assert choose_engines("openvino", "bf16", sam2_loaded) == [EngineChoice("openvino", "bf16")]
    if ENGINES["onnx"].available():
        assert choose_engines("onnx", None, sam2_loaded) == [EngineChoice("onnx", "fp32")]
    with pytest.raises(MedsamkitError, match="int8 is not available for sam2.1-hiera-tiny"):
        choose_engines("openvino", "int8", sam2_loaded)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_sam2_missing_engine_asked_by_name_is_a_clear_error(sam2_loaded, monkeypatch, backend):
    _missing(monkeypatch, backend)
    with pytest.raises(MedsamkitError, match=rf"--backend {backend} is not installed: pip install -e"):
        choose_engines(backend, None, sam2_loaded)
    _missing(monkeypatch, "onnx", "openvino")
    assert choose_engines("auto", None, sam2_loaded) == [EngineChoice("torch", "fp32")]


@pytest.mark.parametrize("backend", ["onnx", "openvino", "torch-bf16"])
def test_sam2_predictor_on_an_engine_gives_the_torch_masks(sam2_loaded, tmp_path, monkeypatch, backend):
    from medsamkit.inference.sam2_predictor import SAM2Predictor
    from medsamkit.preprocessing.geometry import SAM2Geometry

    name, precision = ("torch", "bf16") if backend == "torch-bf16" else (backend, "fp32")
    if not ENGINES[name].available():
        pytest.skip(f"{name} is not installed")
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = dataclasses.replace(sam2_loaded, spec=dataclasses.replace(sam2_loaded.spec, architecture="tiny"))
        predictor = make_predictor(loaded, backend=name, precision=precision, threads=1)
        assert predictor.engine == EngineChoice(name, precision) and predictor.encoder != loaded.model.encode
        if name == "openvino":
            assert predictor.encoder.mode == "latency"
        geometry = type("G", (SAM2Geometry,), {"input_size": 64})()
        ours, theirs = SAM2Predictor(loaded.model, geometry, predictor.encoder), SAM2Predictor(loaded.model, geometry)
        image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
        ours.set_image(image), theirs.set_image(image)
        box = np.array([[5, 5, 40, 30]], float)
        a, b = ours.predict(boxes=box), theirs.predict(boxes=box)
        agree = np.logical_and(a.masks, b.masks).sum() * 2 / max(a.masks.sum() + b.masks.sum(), 1)
        assert agree >= (0.9 if precision == "bf16" else 1.0 - 1e-9), agree
    finally:
        torch.set_num_threads(threads)


def test_precision_the_backend_does_not_offer_is_an_error(loaded):
    with pytest.raises(MedsamkitError, match="--precision bf16 is not offered by --backend onnx"):
        choose_engines("onnx", "bf16", loaded)
    with pytest.raises(MedsamkitError, match="unknown backend"):
        choose_engines("tpu", None, loaded)


def test_auto_falls_back_when_an_engine_fails_to_build(loaded, monkeypatch, caplog):
    built = []

    def build(choice, *a, **k):
        built.append(choice.backend)
        if choice.backend == "openvino":
            raise RuntimeError("compilation failed")
        return "encoder"

    monkeypatch.setattr(engines, "build_encoder", build)
    choice, enc = build_first([EngineChoice("openvino", "bf16"), EngineChoice("torch", "fp32")], loaded)
    assert (choice, enc, built) == (EngineChoice("torch", "fp32"), "encoder", ["openvino", "torch"])
    assert "compilation failed" in caplog.text
    with pytest.raises(RuntimeError, match="compilation failed"):  # asked by name: no silent fallback
        build_first([EngineChoice("openvino", "bf16")], loaded)


def test_torch_bf16_autocast_is_close_to_fp32(loaded):
    enc = engines.build_encoder(EngineChoice("torch", "bf16"), loaded)
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        ref, out = loaded.model.encode(x), enc(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.1 * (ref.max() - ref.min())


@needs_openvino
def test_openvino_fp32_matches_torch_and_is_built_once_per_weights_and_cpu(loaded, tmp_path, monkeypatch):
    x = torch.rand(1, 3, 256, 256)
    enc = OpenVinoEncoder(loaded.model.image_encoder, 256, tmp_path, "tinyvit", "fp32", threads=2)
    with torch.inference_mode():
        ref = loaded.model.encode(x)
    out = enc(x)
    assert out.shape == (1, 256, 64, 64)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
    assert enc.path.parent == tmp_path / "onnx"
    assert enc.cache == tmp_path / "openvino" / openvino_encoder.cpu_tag()
    assert any(enc.cache.iterdir())  # the compiled blob

    # a second process: no export, and the compiled blob is read back instead of compiling again
    exports = []
    monkeypatch.setattr(OnnxEncoder, "_export", staticmethod(lambda *a: exports.append(a)))
    blobs = {p: p.stat().st_mtime_ns for p in enc.cache.iterdir()}
    again = OpenVinoEncoder(loaded.model.image_encoder, 256, tmp_path, "tinyvit", "fp32", threads=2)
    assert exports == []
    assert {p: p.stat().st_mtime_ns for p in again.cache.iterdir()} == blobs
    assert torch.equal(again(x), out)


@needs_openvino
def test_openvino_bf16_is_close_and_refused_without_bf16(loaded, tmp_path, monkeypatch):
    if "BF16" in openvino_encoder.cpu_capabilities():
        enc = OpenVinoEncoder(loaded.model.image_encoder, 256, tmp_path, "tinyvit", "bf16", threads=2)
        x = torch.rand(1, 3, 256, 256)
        with torch.inference_mode():
            ref = loaded.model.encode(x)
        err = (enc(x) - ref).abs().max()
        assert 0 < err < 0.1 * (ref.max() - ref.min())  # bf16 differs, a little
    monkeypatch.setattr(openvino_encoder, "cpu_capabilities", lambda: ("FP32", "INT8"))
    with pytest.raises(MedsamkitError, match="no BF16 instructions"):
        OpenVinoEncoder(loaded.model.image_encoder, 256, tmp_path, "tinyvit", "bf16")


@needs_openvino
def test_factory_builds_the_asked_engine(loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path))
    predictor = make_predictor(loaded, backend="openvino", precision="fp32", threads=2)
    assert predictor.engine == EngineChoice("openvino", "fp32")
    assert isinstance(predictor.encoder, OpenVinoEncoder)
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    emb = predictor.set_image(image)
    with torch.inference_mode():
        ref = loaded.model.encode(predictor.geometry.prepare_image(image)[0])
    assert torch.allclose(emb.features, ref, atol=1e-4)
    assert predictor.exact_encoder is None and emb.inputs is None  # fp32: no re-check


def test_a_bf16_encoder_gets_an_fp32_one_for_masks_too_close_to_call(loaded, sam2_loaded):
    from medsamkit.inference.engines import exact_encoder

    assert exact_encoder(EngineChoice("openvino", "fp32"), loaded) is None
    assert exact_encoder(EngineChoice("onnx", "fp32"), loaded) is None
    assert exact_encoder(EngineChoice("openvino", "bf16"), sam2_loaded) is None  # SAM2: no re-check
    assert exact_encoder(EngineChoice("torch", "bf16"), loaded) == loaded.model.encode


@needs_openvino
def test_the_fp32_openvino_encoder_is_built_on_first_use_only(loaded, tmp_path, monkeypatch):
    from medsamkit.inference.engines import exact_encoder

    built: list[EngineChoice] = []
    real = engines.build_encoder
    monkeypatch.setattr(engines, "build_encoder", lambda choice, *a, **k: built.append(choice) or real(choice, *a, **k))
    encode = exact_encoder(EngineChoice("openvino", "bf16"), loaded, threads=2, cache=tmp_path)
    assert built == []
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        ref = loaded.model.encode(x)
        assert torch.allclose(encode(x), ref, atol=1e-4) and torch.allclose(encode(x), ref, atol=1e-4)
    assert built == [EngineChoice("openvino", "fp32")]


@needs_openvino
def test_auto_bf16_rechecks_and_bf16_asked_by_name_runs_as_asked(loaded, tmp_path, monkeypatch):
    if "BF16" not in openvino_encoder.cpu_capabilities():
        pytest.skip("this CPU has no BF16 instructions")
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(engines, "_has_bf16", lambda: True)
    monkeypatch.setattr(engines, "BF16_AGREES", frozenset({_weights_key(loaded.model.image_encoder)}))
    monkeypatch.setattr(precision_probe, "bf16_pays", lambda loaded: True)
    chosen = make_predictor(loaded, backend="auto", threads=2)
    assert chosen.engine == EngineChoice("openvino", "bf16") and chosen.exact_encoder is not None
    asked = make_predictor(loaded, backend="openvino", precision="bf16", threads=2)
    assert asked.engine == EngineChoice("openvino", "bf16") and asked.exact_encoder is None
