"""The SAM2 2D predictor: the Predictor contract on a tiny random model, and parity with the
official ``SAM2ImagePredictor`` (../shared/data/parity/sam2.1-hiera-tiny_2d_kvasir.npz, made on
stand-in weights; ../shared/docs/parity.md) through the public path: the weights saved as the
official ``{"model": state_dict}`` file, ``load_model(checkpoint=...)``, the predictor factory,
and ``medsamkit segment``.

The targets store features and full-size logits as float16: ours are compared with them within
1e-3 plus float16's rounding of the stored value (half a unit in its last place); float32 fields
(low-resolution logits, IoU) within 1e-3 directly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medsamkit.cli.main import main
from medsamkit.inference.factory import make_predictor
from medsamkit.inference.sam2_predictor import SAM2Predictor
from medsamkit.models.loader import load_model
from medsamkit.models.sam2.config import build_test_model
from medsamkit.models.standin import standin_state_dict
from medsamkit.preprocessing.geometry import SAM2Geometry

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TARGET = SHARED / "parity" / "sam2.1-hiera-tiny_2d_kvasir.npz"
_needs_target_skip = pytest.mark.skipif(not TARGET.is_file(), reason=f"{TARGET} absent (the shared parity data)")


def needs_target(test):
    """Marks a test that needs ../shared/data (``realdata``) and skips it when that is absent."""
    return pytest.mark.realdata(_needs_target_skip(test))


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """The tiny model's operations are too small for two threads (on a busy machine, thread
    hand-offs make them 50x slower); parity tests keep torch's default."""
    if "parity" in request.fixturenames:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TinyGeometry(SAM2Geometry):
    input_size = 64


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    predictor = SAM2Predictor(build_test_model(64).eval(), TinyGeometry())
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    predictor.set_image(image)
    return predictor, image


def test_boxes_are_decoded_together_as_they_are_one_by_one(tiny):
    predictor, _ = tiny
    boxes = np.array([[5, 5, 40, 30], [20, 10, 65, 45], [0, 0, 70, 50]], float)
    together = predictor.predict(boxes=boxes)
    assert together.masks.shape == (3, 1, 50, 70) and together.iou_scores.shape == (3, 1)
    assert together.low_res_logits.shape == (3, 1, 16, 16)
    for i, box in enumerate(boxes):
        alone = predictor.predict(boxes=box[None])
        assert np.allclose(alone.logits[0], together.logits[i], atol=1e-4)
    multi = predictor.predict(boxes=boxes, multimask_output=True)
    assert multi.masks.shape == (3, 3, 50, 70)
    assert np.array_equal(multi.masks, multi.logits > 0)


def test_points_boxes_and_mask_prompts(tiny):
    predictor, _ = tiny
    points = predictor.predict(points=np.array([[30.0, 20.0], [5.0, 5.0]]), point_labels=np.array([1, 0]))
    assert points.masks.shape == (1, 1, 50, 70)
    both = predictor.predict(boxes=np.array([[5, 5, 40, 30]]), points=np.array([[[20.0, 15.0]]]))
    assert both.masks.shape == (1, 1, 50, 70)
    again = predictor.predict(boxes=np.array([[5, 5, 40, 30]]), mask_input=both.low_res_logits)
    assert again.masks.shape == (1, 1, 50, 70)
    assert predictor.predict(boxes=np.zeros((0, 4))).masks.shape == (0, 1, 50, 70)
    with pytest.raises(ValueError, match="at least one prompt"):
        predictor.predict()
    with pytest.raises(ValueError, match="same number of prompts"):
        predictor.predict(boxes=np.array([[5, 5, 40, 30]] * 2), points=np.zeros((3, 1, 2)))


def test_embeddings_are_reusable_and_the_encoder_replaceable(tiny):
    predictor, image = tiny
    emb = predictor.embed(image)
    calls = []

    def engine(x):  # an inference engine stands in for the model's encoder
        calls.append(x.shape)
        return predictor.model.encode(x)

    other = SAM2Predictor(predictor.model, TinyGeometry(), encoder=engine)
    assert other.family == "sam2"
    with pytest.raises(RuntimeError, match="set_image"):
        other.predict(boxes=np.array([[5, 5, 40, 30]]))
    other.set_image(image)
    assert calls == [(1, 3, 64, 64)]
    box = np.array([[5, 5, 40, 30]])
    assert np.allclose(other.predict(boxes=box).logits, predictor.predict(boxes=box).logits, atol=1e-5)
    other.set_embedding(emb)
    assert np.allclose(other.predict(boxes=box).logits, predictor.predict(boxes=box).logits, atol=1e-5)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        other.embed(image[..., 0])


def test_geometry_maps_coordinates_as_the_reference_transform():
    geometry = SAM2Geometry()
    frame = geometry.frame((529, 622))
    box = geometry.boxes_to_model(np.array([[39, 6, 429, 337]]), frame)
    expected = torch.tensor([[39 / 622, 6 / 529, 429 / 622, 337 / 529]], dtype=torch.float32) * 1024
    assert torch.allclose(box, expected)
    image = np.zeros((529, 622, 3), np.uint8)
    tensor, frame = geometry.prepare_image(image)
    assert tensor.shape == (1, 3, 1024, 1024)
    assert torch.allclose(tensor[0, :, 0, 0], -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225]))
    logits = geometry.logits_to_original(torch.zeros(1, 1, 256, 256), frame)
    assert logits.shape == (1, 1, 529, 622)


# --- parity with the official SAM2ImagePredictor ------------------------------------------------


def _close_to_fp16(ours: np.ndarray, target: np.ndarray) -> float:
    """Largest |ours - target| beyond float16's rounding of the stored target (must be <= 1e-3)."""
    target = target.astype(np.float32)
    half_ulp = np.abs(target) * 2.0**-11
    return float((np.abs(ours - target) - half_ulp).max())


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    if not TARGET.is_file():
        pytest.skip(f"{TARGET} absent (the shared parity data)")
    ref = dict(np.load(TARGET))
    layout = json.loads((SHARED / "parity" / "keys" / "sam2.1_hiera_t.json").read_text(encoding="utf-8"))
    folder = tmp_path_factory.mktemp("sam2")
    checkpoint = folder / "sam2.1_hiera_tiny.pt"
    torch.save({"model": standin_state_dict(layout)}, checkpoint)  # as the official file
    loaded = load_model(checkpoint=checkpoint, device="cpu")
    predictor = make_predictor(loaded)
    image_path = SHARED / "kvasir-seg" / "images" / str(ref["image_name"])
    image = np.asarray(Image.open(image_path).convert("RGB"))
    embedding = predictor.set_image(image)
    return ref, predictor, embedding, checkpoint, image_path, loaded


@needs_target
def test_parity_image_features(parity):
    ref, predictor, embedding, *_ = parity
    assert isinstance(predictor, SAM2Predictor)
    features = embedding.features
    image_embed = (features.vision + predictor.model.no_mem_embed.view(1, -1, 1, 1))[0].detach().numpy()
    assert _close_to_fp16(image_embed, ref["image_embed"]) <= 1e-3
    assert _close_to_fp16(features.high_res[0][0].numpy(), ref["high_res_feat0"]) <= 1e-3
    assert _close_to_fp16(features.high_res[1][0].numpy(), ref["high_res_feat1"]) <= 1e-3


@needs_target
@pytest.mark.parametrize("case", ["box_single", "box_multi", "points_multi"])
def test_parity_logits_iou_and_masks(parity, case):
    ref, predictor, *_ = parity
    if case.startswith("box"):
        prediction = predictor.predict(boxes=ref["box"][None], multimask_output=case == "box_multi")
    else:
        prediction = predictor.predict(points=ref["points"][None], point_labels=ref["point_labels"][None],
                                       multimask_output=True)
    logits, target = prediction.logits[0], ref[f"{case}_logits"]
    assert logits.shape == target.shape
    assert _close_to_fp16(logits, target) <= 1e-3
    assert np.abs(prediction.low_res_logits[0].numpy() - ref[f"{case}_lowres"]).max() <= 1e-3
    assert np.abs(prediction.iou_scores[0] - ref[f"{case}_iou"]).max() <= 1e-3
    for ours, theirs in zip(logits > 0, target.astype(np.float32) > 0):
        assert _dice(ours, theirs) >= 0.999


@needs_target
def test_parity_through_the_cli(parity, tmp_path, capsys, monkeypatch):
    ref, predictor, embedding, checkpoint, image_path, loaded = parity
    # the CLI's own path, with the model and the image's embedding shared with the tests above
    monkeypatch.setattr("medsamkit.models.loader.load_model",
                        lambda name, ckpt, device: loaded if Path(ckpt) == checkpoint else None)
    digest = hashlib.sha1(np.asarray(Image.open(image_path).convert("RGB")).tobytes()).hexdigest()
    original_embed = SAM2Predictor.embed
    monkeypatch.setattr(SAM2Predictor, "embed", lambda self, image: embedding
                        if hashlib.sha1(image.tobytes()).hexdigest() == digest else original_embed(self, image))
    out = tmp_path / "mask.png"
    box = ",".join(f"{v:g}" for v in ref["box"])
    # --backend torch: the embedding shared above is torch's (the engines: tests/cli/test_cli_sam2_backends.py)
    code = main(["-q", "segment", str(image_path), "--checkpoint", str(checkpoint), "--box", box,
                 "--backend", "torch", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    mask = np.asarray(Image.open(out)) == 255
    assert _dice(mask, ref["box_single_logits"][0].astype(np.float32) > 0) >= 0.999
