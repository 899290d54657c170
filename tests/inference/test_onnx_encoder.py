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
