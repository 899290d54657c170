"""Per-family model geometry: the image, its boxes, points and masks stay aligned.

Facts checked (design.md): LiteMedSAM resizes the longest side to 256 (int(x + 0.5)), min-max
*after* resizing, zero-pads bottom/right, truncates boxes int(v * 256 / max(H, W)); MedSAM squashes
to 1024 x 1024 without mean/std and scales boxes by 1024 / [W, H, W, H]; SAM resizes the longest
side to 1024, applies ImageNet mean/std and pads.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image
import pytest
import torch

from medsamkit.preprocessing.geometry import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    LiteMedSAMGeometry,
    MedSAMGeometry,
    SAMGeometry,
    geometry_for,
    longest_side_size,
)

FAMILIES = ["litemedsam", "medsam", "sam"]
SHAPES = [(300, 500), (500, 300)]


def _scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark RGB image with one bright rectangle placed asymmetrically; returns (image, box).

    The box is x0, y0, x1, y1 with the rectangle covering pixels x0..x1-1, y0..y1-1, i.e. the
    box edges are the rectangle's edges in continuous pixel coordinates.
    """
    x0, x1 = int(0.15 * w), int(0.55 * w)
    y0, y1 = int(0.30 * h), int(0.85 * h)
    image = np.full((h, w, 3), 30, np.uint8)
    image[y0:y1, x0:x1] = (230, 200, 180)
    return image, np.array([[x0, y0, x1, y1]], dtype=np.float64)


def _extent(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive ends) of the True pixels of a 2D mask."""
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _box_mask(box, h: int, w: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# --- alignment of image and boxes, every family -------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILIES)
def test_box_stays_on_the_rectangle_in_the_model_input(family, shape):
    geometry = geometry_for(family)
    image, box = _scene(*shape)
    tensor, frame = geometry.prepare_image(image)
    s = geometry.input_size
    assert tensor.shape == (1, 3, s, s) and tensor.dtype == torch.float32
    assert frame.original_size == shape and frame.input_size == s

    nh, nw = frame.resized_size
    channel = tensor[0, 0, :nh, :nw].numpy()
    background = channel[0, 0]  # the image's own top-left corner (not padding)
    rect_value = channel[int(nh * 0.6), int(nw * 0.35)]  # inside the rectangle
    assert rect_value > background
    bright = channel > (background + rect_value) / 2
    found = np.array(_extent(bright), dtype=np.float64)

    model_box = geometry.boxes_to_model(box, frame)
    assert model_box.shape == (1, 4) and model_box.dtype == torch.float32
    tol = 1.5 if family == "litemedsam" else 2.0  # model pixels
    np.testing.assert_allclose(model_box[0].numpy(), found, atol=tol)

    # the rectangle's centre, as a point prompt, lands on the rectangle's centre too
    centre = np.array([[[(box[0, 0] + box[0, 2]) / 2, (box[0, 1] + box[0, 3]) / 2]]])
    point = geometry.points_to_model(centre, frame)[0, 0].numpy()
    np.testing.assert_allclose(point, [(found[0] + found[2]) / 2, (found[1] + found[3]) / 2], atol=tol)


@pytest.mark.parametrize("family", FAMILIES)
def test_geometry_for_returns_the_family(family):
    geometry = geometry_for(family)
    assert geometry.family == family
    assert type(geometry) is {"litemedsam": LiteMedSAMGeometry, "medsam": MedSAMGeometry, "sam": SAMGeometry}[family]
    with pytest.raises(KeyError):
        geometry_for("no-such-family")


# --- LiteMedSAM ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, resized",
    [
        ((300, 500), (154, 256)),  # 153.6 -> 154
        ((500, 300), (256, 154)),
        ((333, 1000), (85, 256)),  # 85.248 -> 85
        ((101, 202), (128, 256)),  # 128
        ((255, 511), (128, 256)),  # 127.749... -> 128
        ((256, 256), (256, 256)),
        ((1000, 3), (256, 1)),  # 0.768 -> 1
    ],
)
def test_litemedsam_resized_size_rounds_half_up(shape, resized):
    h, w = shape
    assert longest_side_size(h, w, 256) == resized
    assert LiteMedSAMGeometry().frame(shape).resized_size == resized
    # the reference rounding, written out
    scale = 256 * 1.0 / max(h, w)
    assert resized == (int(h * scale + 0.5), int(w * scale + 0.5))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_litemedsam_minmax_after_resize_and_zero_padding(shape):
    rng = np.random.default_rng(0)
    # values 40..200 everywhere: min-max must be computed on the *resized* image
    image = rng.integers(40, 201, size=(*shape, 3), dtype=np.uint8)
    tensor, frame = LiteMedSAMGeometry().prepare_image(image)
    nh, nw = frame.resized_size
    inside = tensor[0, :, :nh, :nw]
    assert float(inside.min()) == 0.0
    assert float(inside.max()) == 1.0
    # zero padding on the bottom and right only
    assert torch.count_nonzero(tensor[0, :, nh:, :]) == 0
    assert torch.count_nonzero(tensor[0, :, :, nw:]) == 0
    assert (nh, nw) != (256, 256)
    # the top-left is image content (at least one non-zero per row and per column of the image part)
    assert bool((inside.amax(dim=(0, 2)) > 0).all()) and bool((inside.amax(dim=(0, 1)) > 0).all())


def test_litemedsam_intensity_is_not_mean_std_normalised():
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, 64:] = 255
    tensor, _ = LiteMedSAMGeometry().prepare_image(image)
    values = set(np.unique(tensor.numpy()).round(6))
    assert values <= {0.0, 1.0} | set(np.linspace(0, 1, 256).round(6))
    assert float(tensor[0, 0, 10, 10]) == 0.0 and float(tensor[0, 0, 10, 200]) == 1.0


@pytest.mark.parametrize(
    "shape, box, expected",
    [
        # ratio 256 / 500 = 0.512: 51.2, 25.6, 204.288, 153.088 -> truncated
        ((300, 500), [100, 50, 399, 299], [51, 25, 204, 153]),
        ((500, 300), [50, 100, 299, 499], [25, 51, 153, 255]),
        # ratio 256 / 333: 1.99 -> 1 (not 2), 255.23 -> 255
        ((333, 200), [2.6, 0, 199.9, 332], [1, 0, 153, 255]),
        # exact multiples stay exact: 10 * 256 / 1000 = 2.56 -> 2; 1000 -> 256
        ((1000, 800), [10, 0, 800, 1000], [2, 0, 204, 256]),
    ],
)
def test_litemedsam_box_truncation(shape, box, expected):
    geometry = LiteMedSAMGeometry()
    frame = geometry.frame(shape)
    got = geometry.boxes_to_model(np.array([box], dtype=np.float64), frame)
    ratio = 256 / max(shape)
    assert got[0].tolist() == [float(int(v * ratio)) for v in box] == [float(v) for v in expected]


# --- MedSAM -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_medsam_squashes_to_1024_without_mean_std(shape):
    geometry = MedSAMGeometry()
    image, _ = _scene(*shape)
    tensor, frame = geometry.prepare_image(image)
    assert frame.resized_size == (1024, 1024)  # aspect not kept, no padding
    assert tensor.shape == (1, 3, 1024, 1024)
    assert float(tensor.min()) == 0.0 and float(tensor.max()) == 1.0  # min-max, no mean/std
    # no padding: the last row and column are image content (the background)
    assert float(tensor[0, 0, -1, -1]) == 0.0
    assert float(tensor[0, 0, :, -1].max()) == 0.0


@pytest.mark.parametrize("shape", [(300, 500), (1500, 900)], ids=["upscale", "downscale"])
def test_medsam_resize_stays_in_the_input_range(shape):
    # the reference resizes with skimage (order 3, clip=True): cubic ringing at the rectangle's
    # edges must not push values outside the input's range (30..230 over all channels), or the
    # min-max would lift the background (to ~0.1 without clipping) and shift the rectangle's colour
    image, box = _scene(*shape)
    tensor, _ = MedSAMGeometry().prepare_image(image)
    lo, hi = 30.0, 230.0
    rect = (np.array([230, 200, 180]) - lo) / (hi - lo)
    for c in range(3):
        values = tensor[0, c].numpy()
        # far from the rectangle the background is exactly 0, inside it the colour is exact
        assert values[5, 5] == 0.0
        cy = int((box[0, 1] + box[0, 3]) / 2 * 1024 / shape[0])
        cx = int((box[0, 0] + box[0, 2]) / 2 * 1024 / shape[1])
        assert values[cy, cx] == pytest.approx(rect[c], abs=1e-6)


def test_medsam_thresholds_the_upsampled_sigmoid_not_the_upsampled_logit():
    # MedSAM_Inference.py: sigmoid, then bilinear to (H, W), then p > 0.5. Upsampling 256 -> 512,
    # output column 255 weighs low-res column 127 (logit -1) by 0.75 and column 128 (logit 4) by
    # 0.25: the upsampled logit is 0.25 > 0, but the upsampled probability is
    # 0.75 * sigmoid(-1) + 0.25 * sigmoid(4) = 0.447 < 0.5, so the pixel is background.
    low_res = torch.full((1, 1, 256, 256), -1.0)
    low_res[..., 128:] = 4.0
    frame = MedSAMGeometry().frame((512, 512))
    logits = MedSAMGeometry().logits_to_original(low_res, frame)[0, 0].numpy()
    p = 0.75 / (1 + np.exp(1.0)) + 0.25 / (1 + np.exp(-4.0))
    assert p < 0.5
    assert (logits[:, 255] < 0).all()  # background, as the reference
    assert (logits[:, 256] > 0).all() and (logits[:, :255] < 0).all()  # column 256: 0.25/0.75, both agree
    # upsampling the logits instead would call that pixel foreground (0.25)
    plain = torch.nn.functional.interpolate(low_res, (512, 512), mode="bilinear", align_corners=False)
    assert float(plain[0, 0, 0, 255]) == pytest.approx(0.25)
    # magnitudes away from the edge are the upsampled logits (they rank overlapping objects)
    assert logits[0, 0] == pytest.approx(-1.0) and logits[0, -1] == pytest.approx(4.0)


def test_medsam_box_scale_is_1024_over_w_h():
    geometry = MedSAMGeometry()
    h, w = 300, 500
    frame = geometry.frame((h, w))
    box = np.array([[100, 50, 399, 299], [0, 0, 500, 300]], dtype=np.float64)
    got = geometry.boxes_to_model(box, frame).numpy()
    expected = box / np.array([w, h, w, h]) * 1024
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[1], [0, 0, 1024, 1024])
    pts = geometry.points_to_model(np.array([[[250, 150]]]), frame).numpy()
    np.testing.assert_allclose(pts[0, 0], [512, 512])


# --- SAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sam_mean_std_padding_and_longest_side(shape):
    geometry = SAMGeometry()
    h, w = shape
    image = np.zeros((h, w, 3), np.uint8)
    image[:, :] = (200, 100, 50)
    tensor, frame = geometry.prepare_image(image)
    nh, nw = frame.resized_size
    assert max(nh, nw) == 1024 and (nh, nw) == longest_side_size(h, w, 1024)
    assert min(nh, nw) == 614  # 300 * 1024 / 500 = 614.4
    expected = (np.array([200, 100, 50]) - np.array(SAM_PIXEL_MEAN)) / np.array(SAM_PIXEL_STD)
    inside = tensor[0, :, :nh, :nw]
    for c in range(3):
        assert torch.allclose(inside[c], torch.tensor(expected[c], dtype=torch.float32), atol=1e-5)
    # padding after normalisation: zeros, bottom/right only
    assert torch.count_nonzero(tensor[0, :, nh:, :]) == 0
    assert torch.count_nonzero(tensor[0, :, :, nw:]) == 0
    sx, sy = frame.scale_xy
    assert sx == pytest.approx(nw / w) and sy == pytest.approx(nh / h)
    box = geometry.boxes_to_model(np.array([[10, 20, 110, 220]]), frame).numpy()[0]
    np.testing.assert_allclose(box, [10 * sx, 20 * sy, 110 * sx, 220 * sy], rtol=1e-6)


# --- logits back to the original image ----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_to_original_maps_the_box_back(family, shape):
    geometry = geometry_for(family)
    h, w = shape
    frame = geometry.frame(shape)
    boxes = np.array([[0.2 * w, 0.1 * h, 0.5 * w, 0.45 * h], [0.6 * w, 0.5 * h, 0.95 * w, 0.9 * h]])
    model_boxes = geometry.boxes_to_model(boxes, frame).numpy()
    low = 256 / geometry.input_size  # decoder logits are 256 x 256 over the model input
    logits = torch.full((2, 3, 256, 256), -10.0)
    for i, (x0, y0, x1, y1) in enumerate(model_boxes * low):
        logits[i, :, round(y0):round(y1), round(x0):round(x1)] = 10.0
    out = geometry.logits_to_original(logits, frame)
    assert out.shape == (2, 3, h, w)
    for i in range(2):
        want = _box_mask(boxes[i], h, w)
        for k in range(3):
            assert _iou(out[i, k].numpy() > 0, want) > 0.9


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILIES)
def test_the_numpy_upsampling_gives_the_torch_logits(family, shape):
    """The engine path's numpy form (OpenCV for LiteMedSAM) of ``logits_to_original``."""
    geometry = geometry_for(family)
    frame = geometry.frame(shape)
    # smooth logits with boundaries, as a decoder gives (noise alone has no meaningful sign field)
    yy, xx = np.mgrid[:256, :256]
    fields = [(40 - np.hypot(yy - 90, xx - 120)) / 8, (xx - 100) / 16.0, (yy - 150) / 10.0]
    low = np.stack([np.stack(fields), -np.stack(fields)]).astype(np.float32)
    low += np.random.default_rng(sum(shape)).normal(0, 0.05, low.shape).astype(np.float32)
    ref = geometry.logits_to_original(torch.from_numpy(low), frame).numpy()
    out = geometry.logits_to_original_numpy(low, frame)
    assert out.shape == ref.shape == (2, 3, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=0)
    assert ((out > 0) != (ref > 0)).sum() <= 6  # only where a logit is within rounding of 0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("family", FAMILIES)
def test_mask_to_model_round_trip(family, shape):
    geometry = geometry_for(family)
    h, w = shape
    frame = geometry.frame(shape)
    yy, xx = np.mgrid[:h, :w]
    mask = ((xx - 0.4 * w) / (0.2 * w)) ** 2 + ((yy - 0.6 * h) / (0.25 * h)) ** 2 <= 1
    prompt = geometry.mask_to_model(mask, frame)
    assert prompt.shape == (1, 1, 256, 256) and prompt.dtype == torch.float32
    assert set(torch.unique(prompt).tolist()) == {-8.0, 8.0}
    back = geometry.logits_to_original(prompt, frame)[0, 0].numpy() > 0
    assert back.shape == (h, w)
    assert _iou(back, mask) > 0.9
    if family != "medsam":
        # nothing in the padding of the low-resolution frame
        nh, nw = frame.resized_size
        lh, lw = round(nh * 256 / geometry.input_size), round(nw * 256 / geometry.input_size)
        assert bool((prompt[0, 0, lh:, :] == -8).all()) and bool((prompt[0, 0, :, lw:] == -8).all())


def test_mask_prompt_sits_where_the_image_does():
    # the mask prompt of the rectangle lines up with the rectangle in the (downscaled) model input
    geometry = LiteMedSAMGeometry()
    image, box = _scene(300, 500)
    tensor, frame = geometry.prepare_image(image)
    mask = _box_mask(box[0], 300, 500)
    prompt = geometry.mask_to_model(mask, frame)[0, 0].numpy() > 0  # 256 x 256 over 256 model px
    bright = tensor[0, 0].numpy() > 0.5
    np.testing.assert_allclose(_extent(prompt), _extent(bright), atol=1.5)


def _reference_input(family: str, image: np.ndarray) -> np.ndarray:
    """The model input as each official pipeline builds it, written out step by step here
    (LiteMedSAM's inference script, MedSAM_Inference.py, segment-anything's SamPredictor)."""
    from skimage import transform

    h, w = image.shape[:2]
    if family == "litemedsam":  # longest side 256 (INTER_AREA), min-max, pad bottom/right
        scale = 256 / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float64)
        small = (small - small.min()) / np.clip(small.max() - small.min(), 1e-8, None)
        out = np.zeros((256, 256, 3))
        out[:nh, :nw] = small
        return out
    if family == "medsam":  # skimage order 3 to 1024 x 1024, truncated to uint8, min-max
        big = transform.resize(image, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
        return (big - big.min()) / np.clip(big.max() - big.min(), 1e-8, None)
    # SAM: longest side 1024 with PIL bilinear on the uint8 image, mean/std, pad
    scale = 1024 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    big = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR)).astype(np.float64)
    out = np.zeros((1024, 1024, 3))
    out[:nh, :nw] = (big - np.array(SAM_PIXEL_MEAN)) / np.array(SAM_PIXEL_STD)
    return out


@pytest.mark.parametrize("family", ["litemedsam", "medsam", "sam"])
def test_prepare_image_and_the_cached_resize_give_the_reference_input(family):
    """The model input equals the official pipeline's, written out independently; and caches,
    which keep the resized uint8 image and normalise it later, get the same input."""
    rng = np.random.default_rng(3)
    image = rng.integers(10, 240, (97, 151, 3), dtype=np.uint8)
    geom = geometry_for(family)
    tensor, frame = geom.prepare_image(image)
    reference = _reference_input(family, image)
    np.testing.assert_allclose(tensor[0].permute(1, 2, 0).numpy(), reference, atol=1e-6)
    resized, frame2 = geom.resize_image(image)
    assert frame2 == frame and resized.dtype == np.uint8 and resized.shape[:2] == frame.resized_size
    np.testing.assert_allclose(geom.normalise(resized)[0].permute(1, 2, 0).numpy(), reference, atol=1e-6)


@pytest.mark.parametrize("family", ["litemedsam", "medsam", "sam"])
def test_resize_mask_stays_aligned_with_the_image_and_the_box(family):
    h, w = 120, 200
    mask = np.zeros((h, w), np.uint8)
    mask[30:90, 50:150] = 3
    geom = geometry_for(family)
    frame = geom.frame((h, w))
    small = geom.resize_mask(mask, frame)
    assert small.shape == (frame.input_size, frame.input_size)
    assert set(np.unique(small)) == {0, 3}
    ys, xs = np.nonzero(small)
    box = geom.boxes_to_model(np.array([[50, 30, 150, 90]], float), frame)[0].numpy()
    # the resized mask fills the mapped box to within a pixel of resampling
    assert abs(xs.min() - box[0]) <= 1.5 and abs(ys.min() - box[1]) <= 1.5
    assert abs(xs.max() + 1 - box[2]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
    nh, nw = frame.resized_size
    assert not small[nh:].any() and not small[:, nw:].any()


# --------------------------------------------------------------- propagation boxes (grown_box)
def test_litemedsam_grown_box_grows_3_px_of_the_256_frame_on_a_non_square_slice():
    """512 x 384 slice: ratio 256/512 = 0.5, resized 192 x 256. A mask covering whole 2 x 2 blocks
    resizes (INTER_AREA) to exact 256-frame pixels, so the official box is known by hand."""
    geo = LiteMedSAMGeometry()
    frame = geo.frame((384, 512))
    assert frame.resized_size == (192, 256)
    mask = np.zeros((384, 512), bool)
    mask[100:160, 200:300] = True  # rows 100..159 -> 50..79, cols 200..299 -> 100..149 at 256
    box = geo.grown_box(mask, frame, 3)
    # 256 frame: (100 - 3, 50 - 3, 149 + 3, 79 + 3) = (97, 47, 152, 82); original = / 0.5
    assert box == (194.0, 94.0, 304.0, 164.0)  # 6 px on the low sides of a 512 px slice
    np.testing.assert_array_equal(geo.boxes_to_model(np.array([box]), frame)[0].numpy(), [97, 47, 152, 82])
    # clipped to the 256 x 256 model input (the padding included, as get_bbox256 clips to 256)
    corner = np.zeros((384, 512), bool)
    corner[300:384, 400:512] = True  # -> rows 150..191, cols 200..255
    assert geo.grown_box(corner, frame, 3) == (394.0, 294.0, 512.0, 388.0)  # (197, 147, 256, 194) * 2
    assert geo.grown_box(np.zeros((384, 512), bool), frame, 3) is None


def test_litemedsam_grown_box_follows_the_reference_on_an_odd_ratio():
    """622 x 500: ratio 256/622. The 256-frame box is the bounding box of the INTER_AREA-resized
    mask grown by 3 and clipped to 0..256 (written out here with cv2 as the script does); mapping
    it back to original pixels and forward again gives it exactly."""
    import cv2

    geo = LiteMedSAMGeometry()
    frame = geo.frame((500, 622))
    mask = np.zeros((500, 622), np.uint8)
    mask[37:211, 3:400] = 1
    small = np.zeros((256, 256), np.uint8)
    nh, nw = frame.resized_size
    small[:nh, :nw] = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(small)
    expected = [max(xs.min() - 3, 0), max(ys.min() - 3, 0), min(xs.max() + 3, 256), min(ys.max() + 3, 256)]
    box = geo.grown_box(mask, frame, 3)
    np.testing.assert_array_equal(geo.boxes_to_model(np.array([box]), frame)[0].numpy(), expected)
    assert expected[0] == 0  # x0 - 3 clipped at the frame's edge


@pytest.mark.parametrize("shape", [(500, 622), (622, 500), (333, 777), (91, 100), (512, 512), (1000, 37)])
def test_litemedsam_boxes_from_model_is_the_exact_inverse_of_the_truncation(shape):
    geo = LiteMedSAMGeometry()
    frame = geo.frame(shape)
    model = np.arange(257, dtype=np.float64)
    boxes = np.stack([model, model, model, model], axis=1)
    back = geo.boxes_from_model(boxes, frame)
    np.testing.assert_array_equal(geo.boxes_to_model(back, frame).numpy(), boxes)
    ratio = 256 / max(shape)
    np.testing.assert_allclose(back, boxes / ratio, rtol=1e-12)  # and no further than float rounding


def test_medsam_grown_box_grows_in_the_1024_frame_per_axis():
    """MedSAM squashes 512 wide x 256 high to 1024 x 1024: 3 model px are 1.5 px along x and
    0.75 px along y of the slice."""
    geo = MedSAMGeometry()
    frame = geo.frame((256, 512))
    mask = np.zeros((256, 512), bool)
    mask[5:8, 10:21] = True
    box = geo.grown_box(mask, frame, 3)
    np.testing.assert_allclose(box, (10 - 1.5, 5 - 0.75, 20 + 1.5, 7 + 0.75))
    np.testing.assert_allclose(geo.boxes_to_model(np.array([box]), frame)[0].numpy(), (17, 17, 43, 31))
