"""One refinement step through the real Predictor and geometry: clicks reach the decoder in the
model frame of every family (non-square images), prompts of different forms are decoded in
separate batched calls, the best candidate is kept for a lone click, label maps by logit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medsamkit.inference.clicks import Click
from medsamkit.inference.predictor import Predictor
from medsamkit.inference.refine import DecodeRequest, decode_requests
from medsamkit.inference.segment2d_io import label_map_from_logits
from medsamkit.preprocessing.geometry import geometry_for


class SpyModel(nn.Module):
    """Records what the decoder is given; returns logits that say which prompt row they are for."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.size = size
        self.calls: list[dict] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[-2:] == (self.size, self.size)
        return torch.zeros(1, 256, 64, 64)

    def decode(self, embeddings, boxes=None, points=None, masks=None, multimask_output=False):
        self.calls.append({"boxes": boxes, "points": points, "masks": masks, "multimask": multimask_output})
        n = next(t.shape[0] for t in (boxes, None if points is None else points[0], masks) if t is not None)
        k = 3 if multimask_output else 1
        low = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, k, 256, 256) + 0.5
        iou = torch.tensor([[0.1, 0.8, 0.3][:k]] * n)
        return low.contiguous(), iou


H, W = 100, 300
EXPECTED = {  # the model-frame position of pixel (150, 50) on a 300 x 100 image
    "litemedsam": (150 * 256 / 300, 50 * 256 / 300),  # longest side to 256
    "medsam": (150 * 1024 / 300, 50 * 1024 / 100),  # stretched to 1024 x 1024
    # SAM's ResizeLongestSide: each axis by its rounded new size (100 -> int(341.33 + 0.5) = 341)
    "sam": (150 * 1024 / 300, 50 * 341 / 100),
}


@pytest.mark.parametrize("family", list(EXPECTED))
def test_clicks_reach_the_decoder_in_the_model_frame(family):
    geometry = geometry_for(family)
    model = SpyModel(geometry.input_size)
    predictor = Predictor(model, geometry)
    embedding = predictor.embed(np.zeros((H, W, 3), np.uint8))
    box = (30.0, 20.0, 270.0, 80.0)
    decode_requests(predictor, embedding, [DecodeRequest(box, (Click(150, 50, 1), Click(10, 90, 0)))])
    call = model.calls[-1]
    coords, labels = call["points"]
    np.testing.assert_allclose(coords[0, 0].numpy(), EXPECTED[family], rtol=1e-6)
    assert labels.tolist() == [[1, 0]]
    # the box went through the same frame (LiteMedSAM truncates boxes as its reference does)
    expected_box = geometry.boxes_to_model(np.array([box]), embedding.frame)
    assert torch.equal(call["boxes"], expected_box)
    sx = EXPECTED[family][0] / 150
    assert abs(float(call["boxes"][0, 2]) - 270 * sx) <= 1  # the box's right edge, same scale as the click


def test_requests_are_grouped_by_form_and_results_keep_their_order():
    geometry = geometry_for("litemedsam")
    model = SpyModel(256)
    predictor = Predictor(model, geometry)
    embedding = predictor.embed(np.zeros((H, W, 3), np.uint8))
    prior = torch.full((1, 256, 256), 3.0)
    requests = [
        DecodeRequest((0, 0, 50, 50)),
        DecodeRequest(None, (Click(5, 5, 1),)),  # alone: three candidates, the best kept
        DecodeRequest((0, 0, 60, 60)),
        DecodeRequest((0, 0, 50, 50), (Click(5, 5, 1),), prior),
    ]
    results = decode_requests(predictor, embedding, requests)
    assert len(model.calls) == 3
    assert [c["multimask"] for c in model.calls] == [False, True, False]
    assert model.calls[0]["boxes"].shape == (2, 4)  # both box-only requests in one call
    assert torch.equal(model.calls[2]["masks"], prior[None])
    # row i of a call has logits i + 0.5: each result is its own request's
    assert [float(r.low_res_logits[0, 0, 0]) for r in results] == [0.5, 0.5, 1.5, 0.5]
    assert results[1].score == pytest.approx(0.8)  # the best of three
    assert results[0].mask.shape == (H, W) and results[0].low_res_logits.shape == (1, 256, 256)


def test_label_map_from_logits():
    a = np.array([[2.0, 1.0, -1.0]])
    b = np.array([[1.0, 3.0, -2.0]])
    np.testing.assert_array_equal(label_map_from_logits([a, b], [4, 9], (1, 3)), [[4, 9, 0]])
    assert label_map_from_logits([], [], (2, 2)).shape == (2, 2)
    assert label_map_from_logits([a], [300], (1, 3)).dtype == np.uint16
