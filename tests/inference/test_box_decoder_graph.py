"""The rearranged box decoder (:class:`BoxDecoderGraph`) computes what ``Sam.decode(embedding,
boxes=...)`` computes, for one box and many, with random weights (biases included)."""

from __future__ import annotations

import pytest
import torch

from medsamkit.inference.box_decoder_graph import BoxDecoderGraph
from medsamkit.models.registry import ARCHITECTURES


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = ARCHITECTURES["tinyvit"]().eval()
    with torch.no_grad():  # non-zero biases everywhere, so the reassociated bias terms are exercised
        for name, p in model.mask_decoder.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("n", [1, 2, 9])
def test_the_graph_gives_the_decoder_logits_and_iou(model, n):
    g = torch.Generator().manual_seed(n)
    embedding = torch.randn(1, 256, 64, 64, generator=g) * 0.5
    xy = torch.rand(n, 2, generator=g) * 180
    boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 60], 1)
    with torch.inference_mode():
        ref_logits, ref_iou = model.decode(embedding, boxes=boxes)
        logits, iou = BoxDecoderGraph(model)(embedding, boxes)
    assert logits.shape == ref_logits.shape == (n, 1, 256, 256) and iou.shape == ref_iou.shape == (n, 1)
    scale = ref_logits.abs().max()
    assert ref_logits.std() > 0.01  # real logits, not a degenerate output
    assert (logits - ref_logits).abs().max() < 1e-4 * scale
    assert torch.allclose(iou, ref_iou, atol=1e-5)
    assert ((logits > 0) == (ref_logits > 0)).float().mean() > 0.9999
