"""The ONNX Runtime encoder gives the torch encoder's embedding and is exported once."""

import pytest
import torch

from medsamkit.errors import MedsamkitError
from medsamkit.inference import onnx_encoder
from medsamkit.inference.onnx_encoder import OnnxEncoder, onnx_available
from medsamkit.models.registry import ARCHITECTURES

pytestmark = pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed")


@pytest.fixture(scope="module")
def small_encoder():
    torch.manual_seed(0)
    model = ARCHITECTURES["tinyvit"]()
    # randomise BatchNorm statistics so folding them is exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.image_encoder.eval()


def test_onnx_embedding_matches_torch_and_export_is_cached(small_encoder, tmp_path, monkeypatch):
    x = torch.rand(1, 3, 256, 256)
    enc = OnnxEncoder(small_encoder, 256, tmp_path, "tinyvit", threads=2)
    with torch.inference_mode():
        ref = small_encoder(x)
    out = enc(x)
    assert out.shape == (1, 256, 64, 64)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
    assert enc.path.parent == tmp_path and enc.path.exists()

    exports = []
    monkeypatch.setattr(OnnxEncoder, "_export", staticmethod(lambda *a: exports.append(a)))
    again = OnnxEncoder(small_encoder, 256, tmp_path, "tinyvit", threads=2)
    assert exports == [] and again.path == enc.path
    assert torch.equal(again(x), out)


def test_changed_weights_get_a_new_export(small_encoder, tmp_path, monkeypatch):
    key_before = onnx_encoder._weights_key(small_encoder)
    with torch.no_grad():
        small_encoder.neck[0].weight.mul_(1.01)
    try:
        assert onnx_encoder._weights_key(small_encoder) != key_before
    finally:
        with torch.no_grad():
            small_encoder.neck[0].weight.div_(1.01)


def test_missing_onnxruntime_is_a_clear_error(small_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_encoder, "onnx_available", lambda: False)
    with pytest.raises(MedsamkitError, match="pip install onnxruntime onnx"):
        OnnxEncoder(small_encoder, 256, tmp_path, "tinyvit")


# ----------------------------------------------------------------- SAM2 family: three outputs
@pytest.fixture(scope="module")
def tiny_sam2():
    from medsamkit.models.sam2.config import build_test_model

    torch.manual_seed(0)
    return build_test_model(64).eval()


def test_sam2_features_match_torch_and_the_export_is_cached(tiny_sam2, tmp_path, monkeypatch):
    from medsamkit.inference.encoder_graph import SAM2_OUTPUTS, encoder_graph

    graph = encoder_graph(tiny_sam2, "sam2")
    x = torch.rand(1, 3, 64, 64)
    enc = OnnxEncoder(graph.module, 64, tmp_path, "tiny-sam2", threads=1, outputs=graph.outputs)
    with torch.inference_mode():
        ref = tiny_sam2.encode(x)
    out = enc(x)
    assert graph.outputs == SAM2_OUTPUTS and len(out) == 3
    for o, r in zip(out, ref):
        assert o.shape == r.shape and torch.allclose(o, r, atol=1e-5), (o - r).abs().max()
    key = onnx_encoder._weights_key(graph.module)
    assert enc.path.name == f"tiny-sam2-64px-{key}.onnx"  # the input size is part of the name
    # the digest covers what is exported: the Hiera encoder and the two high-resolution projections
    assert {k.split(".")[0] for k in graph.module.state_dict()} == {"image_encoder", "conv_s0", "conv_s1"}

    exports = []
    monkeypatch.setattr(OnnxEncoder, "_export", staticmethod(lambda *a: exports.append(a)))
    again = OnnxEncoder(graph.module, 64, tmp_path, "tiny-sam2", threads=1, outputs=graph.outputs)
    assert exports == [] and again.path == enc.path
    assert all(torch.equal(a, b) for a, b in zip(again(x), out))


def test_sam_family_cache_names_are_unchanged(small_encoder):
    key = onnx_encoder._weights_key(small_encoder)
    assert onnx_encoder.export_name("tinyvit", 256, key) == f"tinyvit-{key}"  # existing caches stay valid
    assert onnx_encoder.export_name("x", 512, key, ("a", "b")) == f"x-512px-{key}"
