"""The OpenVINO encoder on a module with several outputs (the SAM2 family's ``encode``): the torch
features, the torch masks through :class:`SAM2Predictor`, and one export and compilation per
weights and CPU. (The single-output SAM-family encoder: tests/inference/test_engines.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsamkit.inference import openvino_encoder
from medsamkit.inference.encoder_graph import encoder_graph
from medsamkit.inference.onnx_encoder import OnnxEncoder
from medsamkit.inference.openvino_encoder import OpenVinoEncoder, openvino_available
from medsamkit.inference.sam2_predictor import SAM2Predictor
from medsamkit.models.sam2.config import build_test_model
from medsamkit.preprocessing.geometry import SAM2Geometry

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino/onnx not installed")


class TinyGeometry(SAM2Geometry):
    input_size = 64


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is too small for thread hand-offs
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_sam2():
    torch.manual_seed(0)
    model = build_test_model(64).eval()
    with torch.no_grad():  # the object is always present: the masks carry the features' effect
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(10.0)
    return model


def test_sam2_fp32_features_and_masks_match_torch_and_build_once(tiny_sam2, tmp_path, monkeypatch):
    graph = encoder_graph(tiny_sam2, "sam2")
    enc = OpenVinoEncoder(graph.module, 64, tmp_path, "tiny-sam2", "fp32", threads=1, outputs=graph.outputs)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        ref = tiny_sam2.encode(x)
    out = enc(x)
    assert len(out) == 3
    for o, r in zip(out, ref):
        assert o.shape == r.shape and torch.allclose(o, r, atol=1e-5), (o - r).abs().max()

    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 30], [20, 10, 65, 45]], float)
    ours, theirs = SAM2Predictor(tiny_sam2, TinyGeometry(), enc), SAM2Predictor(tiny_sam2, TinyGeometry())
    ours.set_image(image), theirs.set_image(image)
    a, b = ours.predict(boxes=boxes), theirs.predict(boxes=boxes)
    assert np.array_equal(a.masks, b.masks) and np.allclose(a.logits, b.logits, atol=1e-4)

    # a second process: no export, no compilation (the blob is read back)
    exports = []
    monkeypatch.setattr(OnnxEncoder, "_export", staticmethod(lambda *a: exports.append(a)))
    blobs = {p: p.stat().st_mtime_ns for p in enc.cache.iterdir()}
    again = OpenVinoEncoder(graph.module, 64, tmp_path, "tiny-sam2", "fp32", threads=1, outputs=graph.outputs)
    assert exports == [] and again.path == enc.path
    assert {p: p.stat().st_mtime_ns for p in again.cache.iterdir()} == blobs
    assert all(torch.equal(p, q) for p, q in zip(again(x), out))


def test_sam2_throughput_requests_return_the_three_features(tiny_sam2, tmp_path):
    graph = encoder_graph(tiny_sam2, "sam2")
    enc = OpenVinoEncoder(graph.module, 64, tmp_path, "tiny-sam2", "fp32", threads=1, mode="throughput",
                          outputs=graph.outputs)
    x = torch.rand(1, 3, 64, 64)
    pending = enc.submit(x)
    with torch.inference_mode():
        ref = tiny_sam2.encode(x)
    assert all(torch.allclose(o, r, atol=1e-5) for o, r in zip(pending(), ref))


def test_sam2_bf16_is_close(tiny_sam2, tmp_path):
    if "BF16" not in openvino_encoder.cpu_capabilities():
        pytest.skip("this CPU has no BF16")
    graph = encoder_graph(tiny_sam2, "sam2")
    enc = OpenVinoEncoder(graph.module, 64, tmp_path, "tiny-sam2", "bf16", threads=1, outputs=graph.outputs)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        ref = tiny_sam2.encode(x)
    for o, r in zip(enc(x), ref):
        assert (o - r).abs().max() < 0.1 * (r.max() - r.min())
