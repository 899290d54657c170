"""Combining per-box predictions into one label map, and the label values written for each box."""

import numpy as np
import pytest
import torch

from medsamkit.inference.predictor import Prediction
from medsamkit.inference.segment2d import label_map_from_prediction, output_labels


def prediction(logits: np.ndarray) -> Prediction:
    logits = np.asarray(logits, np.float32)[:, None]  # (N, 1, H, W)
    n = logits.shape[0]
    return Prediction(masks=logits > 0, logits=logits, iou_scores=np.ones((n, 1), np.float32),
                      low_res_logits=torch.zeros(n, 1, 256, 256))


def test_overlap_goes_to_the_highest_logit():
    h, w = 6, 8
    a = np.full((h, w), -5.0)
    b = np.full((h, w), -5.0)
    a[:, :5] = 2.0  # object A claims columns 0..4
    b[:, 3:] = 1.0  # object B claims columns 3..7
    b[:, 4] = 3.0  # ... and is more confident than A in column 4
    lm = label_map_from_prediction(prediction(np.stack([a, b])), [1, 2])
    assert lm.shape == (h, w) and lm.dtype == np.uint8
    expected = np.array([1, 1, 1, 1, 2, 2, 2, 2], np.uint8)
    assert (lm == expected[None, :]).all()


def test_order_does_not_decide_the_overlap():
    a = np.array([[4.0, 1.0, -1.0]])
    b = np.array([[1.0, 4.0, 0.5]])
    first = label_map_from_prediction(prediction(np.stack([a, b])), [7, 9])
    swapped = label_map_from_prediction(prediction(np.stack([b, a])), [9, 7])
    assert first.tolist() == swapped.tolist() == [[7, 9, 9]]


def test_unclaimed_pixels_are_background():
    # every logit <= 0 -> nobody claims the pixel, even the "best" one
    a = np.array([[-0.1, 0.0, 2.0]])
    b = np.array([[-0.2, -3.0, -1.0]])
    lm = label_map_from_prediction(prediction(np.stack([a, b])), [1, 2])
    assert lm.tolist() == [[0, 0, 1]]


def test_single_box_255():
    a = np.array([[-1.0, 1.0], [1.0, -1.0]])
    lm = label_map_from_prediction(prediction(a[None]), [255])
    assert lm.dtype == np.uint8 and lm.tolist() == [[0, 255], [255, 0]]


def test_large_labels_give_uint16():
    a = np.array([[5.0, -1.0, -1.0]])
    b = np.array([[-1.0, 5.0, -1.0]])
    lm = label_map_from_prediction(prediction(np.stack([a, b])), [3, 1000])
    assert lm.dtype == np.uint16 and lm.tolist() == [[3, 1000, 0]]
    lm = label_map_from_prediction(prediction(np.stack([a, b])), [3, 65535])
    assert lm.dtype == np.uint16 and lm.tolist() == [[3, 65535, 0]]
    lm = label_map_from_prediction(prediction(np.stack([a, b])), [3, 255])
    assert lm.dtype == np.uint8 and lm.tolist() == [[3, 255, 0]]


def test_no_prediction_gives_an_empty_map():
    empty = Prediction(np.zeros((0, 1, 4, 5), bool), np.zeros((0, 1, 4, 5), np.float32),
                       np.zeros((0, 1), np.float32), torch.zeros(0, 1, 256, 256))
    lm = label_map_from_prediction(empty, [])
    assert lm.shape == (4, 5) and lm.dtype == np.uint8 and not lm.any()


@pytest.mark.parametrize(
    "n, labels, expected",
    [
        (1, None, [255]),
        (1, [None], [255]),
        (1, [4], [4]),
        (2, None, [1, 2]),
        (3, [None, None, None], [1, 2, 3]),
        (2, [5, 9], [5, 9]),
        (3, [None, 7, None], [1, 7, 3]),
        (2, [300, None], [300, 2]),
    ],
)
def test_output_labels(n, labels, expected):
    assert output_labels(n, labels) == expected
