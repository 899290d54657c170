"""Parity of medsamkit's SAM with Hugging Face transformers' ``SamModel``, and HF-layout loading.

Both models get the same random weights (every parameter and buffer drawn from a seeded
generator, converted with :func:`sam_to_hf_state_dict` and loaded strictly) and must give the
same image embeddings, low-resolution mask logits and IoU scores for box, multi-box, point,
box+point and box+mask prompts, with and without multimask output. Each model decodes from its own
embedding, so the comparison is end to end.

Tolerance: ``max|ours - hf| <= TOL * max(1, max|hf|)`` with ``TOL = 1e-4`` (float32, different
attention kernels and summation orders). Observed: embeddings (max |value| ~5.5) differ by
~1.1e-5, mask logits (max |value| 2.4-4.9) by 2.6e-6 to 5.8e-6, IoU scores by at most 6.6e-7.
The ViT-B comparison runs two real-size encodes and is marked ``slow``.

Prompts are fed to both models unchanged, in the 1024-pixel model-input frame: transformers'
prompt encoder, like ours and the original, adds the +0.5 pixel-centre shift and divides by the
input size itself (its SamProcessor, which rescales coordinates from the original image, is not
used). Shapes differ only by transformers' extra leading image-batch axis:
``input_boxes (1, B, 4)``, ``input_points (1, B, N, 2)``, ``input_labels (1, B, N)``.
"""

from __future__ import annotations

import logging
import math
from itertools import chain

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers (optional test dependency) is needed to compare with its SamModel"
)

from medsamkit.errors import CheckpointError  # noqa: E402
from medsamkit.models.checkpoint import normalise_state_dict, read_checkpoint  # noqa: E402
from medsamkit.models.hf_convert import (  # noqa: E402
    hf_sam_config,
    hf_to_sam_state_dict,
    is_hf_layout,
    sam_to_hf_state_dict,
)
from medsamkit.models.loader import load_model  # noqa: E402
from medsamkit.models.registry import ARCHITECTURES, _build_vit  # noqa: E402

TOL = 1e-4
PE_PROMPT = "prompt_encoder.shared_embedding.positional_embedding"
PE_IMAGE = "shared_image_embedding.positional_embedding"


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Draw every parameter and buffer: LayerNorm weights 1 + N(0, 0.1), biases N(0, 0.05),
    relative and absolute position tables N(0, 0.1), embedding tables and tokens N(0, 0.1), the
    positional frequency matrix N(0, 1) (SAM's own scale), other weights N(0, 1/fan_in) so
    activations stay of order one through the layers and the outputs are far from trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in chain(model.named_parameters(), model.named_buffers()):
            r = torch.randn(tensor.shape, generator=gen)
            owner = name.split(".")[-2]
            if name.endswith("positional_encoding_gaussian_matrix"):
                value = r
            elif tensor.ndim == 1 and name.endswith("weight"):
                value = 1 + 0.1 * r
            elif name.endswith("bias"):
                value = 0.05 * r
            elif "rel_pos" in name or name.endswith("pos_embed") or "embed" in owner or "token" in owner:
                value = 0.1 * r
            else:
                value = r / math.sqrt(tensor[0].numel())
            tensor.copy_(value)


def hf_model_for(ours, **config_overrides):
    config = hf_sam_config(ours)
    for section, values in config_overrides.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    hf = transformers.SamModel(config).eval()
    hf.load_state_dict(sam_to_hf_state_dict(ours.state_dict()), strict=True)
    return hf


def assert_near(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: float = TOL) -> float:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    print(f"{what}: max abs difference {diff:.2e} (output scale {scale:.3g})")  # shown with -s / -rP
    assert diff <= tol * scale, f"{what}: max abs difference {diff:.3g} > {tol:g} * {scale:.3g}"
    return diff


def hf_decode(hf, embeddings, boxes=None, points=None, masks=None, multimask=False):
    """Our decode() arguments in transformers' shapes; returns (B, K, 256, 256), (B, K)."""
    per_image = embeddings.shape[0] > 1  # one prompt per image, else B prompts on one image
    lead = (lambda t: t[:, None]) if per_image else (lambda t: t[None])
    kwargs = {}
    if boxes is not None:
        kwargs["input_boxes"] = lead(boxes)
    if points is not None:
        kwargs["input_points"] = lead(points[0])
        kwargs["input_labels"] = lead(points[1])
    if masks is not None:
        kwargs["input_masks"] = masks
    with torch.no_grad():
        out = hf(image_embeddings=embeddings, multimask_output=multimask, **kwargs)
    masks_out, iou = out.pred_masks, out.iou_scores
    return masks_out.flatten(0, 1), iou.flatten(0, 1)


# prompts in the 1024-pixel model-input frame
BOX = torch.tensor([[180.0, 240.0, 610.0, 700.0]])
BOXES = torch.tensor([[180.0, 240.0, 610.0, 700.0], [10.0, 20.0, 300.0, 260.0], [0.0, 0.0, 1023.0, 1023.0]])
POINTS = (
    torch.tensor([[[400.0, 420.0], [90.0, 800.0], [512.0, 130.0]], [[700.0, 650.0], [702.5, 100.25], [5.0, 5.0]]]),
    torch.tensor([[1, 0, 1], [1, 1, 0]]),
)
BOX_AND_POINTS = (
    torch.tensor([[180.0, 240.0, 610.0, 700.0], [600.0, 500.0, 900.0, 1000.0]]),
    (torch.tensor([[[400.0, 420.0], [200.0, 650.0]], [[750.0, 760.0], [880.0, 520.0]]]), torch.tensor([[1, 0], [0, 1]])),
)
MASK = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(7))

CASES = {
    "box": dict(boxes=BOX),
    "boxes": dict(boxes=BOXES),
    "points": dict(points=POINTS),
    "box+points": dict(boxes=BOX_AND_POINTS[0], points=BOX_AND_POINTS[1]),
    "box+mask": dict(boxes=BOX, masks=MASK),
}


@pytest.fixture(scope="module")
def small():
    """A 2-block, 64-wide ViT (one windowed, one global block) on 1024 px: the 64x64 embedding
    grid, prompt encoder and mask decoder are the real SAM ones."""
    torch.manual_seed(0)
    ours = _build_vit(64, 2, 4, (1,)).eval()
    randomise(ours, seed=1)
    hf = hf_model_for(ours)
    images = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours_emb = ours.encode(images)
        hf_emb = hf.get_image_embeddings(images)
    return ours, hf, ours_emb, hf_emb


def test_small_embeddings_match(small):
    ours, hf, ours_emb, hf_emb = small
    assert ours_emb.shape == (2, 256, 64, 64)
    assert ours_emb.std() > 0.5
    assert_near(ours_emb, hf_emb, "image embeddings")


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
@pytest.mark.parametrize("case", list(CASES))
def test_small_decoder_matches(small, case, multimask):
    ours, hf, ours_emb, hf_emb = small
    prompt = CASES[case]
    with torch.no_grad():
        logits, iou = ours.decode(ours_emb[:1], multimask_output=multimask, **prompt)
    hf_logits, hf_iou = hf_decode(hf, hf_emb[:1], multimask=multimask, **prompt)
    n_prompts = (prompt.get("boxes") if "boxes" in prompt else prompt["points"][0]).shape[0]
    k = 3 if multimask else 1
    assert logits.shape == (n_prompts, k, 256, 256)
    assert logits.std() > 0.1 and iou.abs().max() > 0.01  # far from trivial outputs
    assert_near(logits, hf_logits, f"{case} logits")
    assert_near(iou, hf_iou, f"{case} IoU")


def test_small_image_batch_one_box_each(small):
    ours, hf, ours_emb, hf_emb = small
    boxes = BOXES[:2]
    with torch.no_grad():
        logits, iou = ours.decode(ours_emb, boxes=boxes, multimask_output=True)
    hf_logits, hf_iou = hf_decode(hf, hf_emb, boxes=boxes, multimask=True)
    assert_near(logits, hf_logits, "per-image logits")
    assert_near(iou, hf_iou, "per-image IoU")
    assert (logits[0] - logits[1]).abs().max() > 0.1  # the two images really differ


def test_stock_transformers_decoder_eps_within_tolerance(small):
    """transformers' own default two-way-transformer LayerNorm eps is 1e-6 (the original SAM and
    hf_sam_config use 1e-5). With a stock hub config (facebook/sam-vit-base, wanglab/medsam-vit-base)
    SamModel therefore differs slightly (observed ~1e-4 relative): still close, within 1e-3."""
    ours, _, ours_emb, _ = small
    stock = hf_model_for(ours, mask_decoder_config={"layer_norm_eps": 1e-6})
    assert stock.mask_decoder.transformer.layers[0].layer_norm1.eps == 1e-6
    with torch.no_grad():
        logits, iou = ours.decode(ours_emb[:1], boxes=BOXES, points=None, multimask_output=True)
    hf_logits, hf_iou = hf_decode(stock, ours_emb[:1], boxes=BOXES, multimask=True)
    assert_near(logits, hf_logits, "logits with eps 1e-6", tol=1e-3)
    assert_near(iou, hf_iou, "IoU with eps 1e-6", tol=1e-3)


# ----------------------------------------------------------------------------- key conversion


@pytest.mark.parametrize("arch", ["vit-b", "vit-l", "vit-h"])
def test_keys_and_shapes_match_transformers(arch):
    """Built on the meta device (no memory, no compute): every converted key exists in
    SamModel(hf_sam_config(arch)) with the same shape, and nothing is missing."""
    with torch.device("meta"):
        ours = ARCHITECTURES[arch]()
        hf = transformers.SamModel(hf_sam_config(arch))
    ours_state = ours.state_dict()
    converted = sam_to_hf_state_dict(ours_state)
    hf_state = hf.state_dict()
    assert sorted(converted) == sorted(hf_state)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in hf_state.items()}
    back = hf_to_sam_state_dict(converted)
    assert sorted(back) == sorted(ours_state)


def test_round_trip_is_exact(small):
    ours = small[0]
    state = ours.state_dict()
    hf_state = sam_to_hf_state_dict(state)
    assert is_hf_layout(hf_state) and not is_hf_layout(state)
    assert not any(k.startswith("image_encoder.") for k in hf_state)
    back = hf_to_sam_state_dict(hf_state)
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    # the tied copy is a separate tensor (safetensors refuses shared storage) with equal values
    assert torch.equal(hf_state[PE_PROMPT], hf_state[PE_IMAGE])
    assert hf_state[PE_PROMPT].data_ptr() != hf_state[PE_IMAGE].data_ptr()
    # the MLP heads: official layers.0/1/2 <-> proj_in / layers.0 / proj_out
    assert torch.equal(hf_state["mask_decoder.iou_prediction_head.proj_out.weight"],
                       state["mask_decoder.iou_prediction_head.layers.2.weight"])
    assert torch.equal(hf_state["mask_decoder.output_hypernetworks_mlps.3.layers.0.bias"],
                       state["mask_decoder.output_hypernetworks_mlps.3.layers.1.bias"])


def test_either_tied_positional_key_is_enough(small):
    state = small[0].state_dict()
    hf_state = sam_to_hf_state_dict(state)
    pe = state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    for drop in (PE_PROMPT, PE_IMAGE):
        partial = {k: v for k, v in hf_state.items() if k != drop}
        assert torch.equal(hf_to_sam_state_dict(partial)["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"], pe)


def test_conversion_errors(small):
    state = small[0].state_dict()
    hf_state = sam_to_hf_state_dict(state)
    broken = dict(hf_state, **{PE_IMAGE: hf_state[PE_IMAGE] + 1})
    with pytest.raises(ValueError, match="differ"):
        hf_to_sam_state_dict(broken)
    with pytest.raises(ValueError, match="vision_encoder.extra.weight"):
        hf_to_sam_state_dict(dict(hf_state, **{"vision_encoder.extra.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match="not part of the official"):
        sam_to_hf_state_dict({"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(1)})  # TinyViT
    with pytest.raises(ValueError, match="tinyvit"):
        hf_sam_config("tinyvit")
    # original-SAM buffers are dropped
    assert "pixel_mean" not in sam_to_hf_state_dict(dict(state, pixel_mean=torch.zeros(3, 1, 1)))
    # through the checkpoint reader a bad HF file is a CheckpointError
    with pytest.raises(CheckpointError, match="Hugging Face"):
        normalise_state_dict(broken, source="x.safetensors")


def test_normalise_state_dict_converts_wrapped_hf_layout(small, caplog):
    state = small[0].state_dict()
    wrapped = {"model": {f"module.{k}": v for k, v in sam_to_hf_state_dict(state).items()}, "epoch": 3}
    with caplog.at_level(logging.INFO, logger="medsamkit.models.checkpoint"):
        out = normalise_state_dict(wrapped, source="ckpt.pth")
    assert sorted(out) == sorted(state)
    assert all(torch.equal(out[k], v) for k, v in state.items())
    assert any("Hugging Face" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    # the official layout passes through untouched
    assert normalise_state_dict(dict(state)).keys() == state.keys()


# ----------------------------------------------------------------------------- real ViT-B size


@pytest.fixture(scope="module")
def vit_b_models():
    """Real SAM ViT-B sizes, random weights; transformers' SamModel with the converted weights."""
    torch.manual_seed(0)
    ours = ARCHITECTURES["vit-b"]().eval()
    randomise(ours, seed=3)
    return ours, hf_model_for(ours)


@pytest.mark.slow  # two ViT-B encodes at 1024 px: 25-80 s on a busy 2-core CPU
def test_vit_b_matches_transformers(vit_b_models):
    ours, hf = vit_b_models
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ours_emb = ours.encode(image)
        hf_emb = hf.get_image_embeddings(image)
    assert ours_emb.std() > 0.5
    assert_near(ours_emb, hf_emb, "ViT-B image embeddings")
    for case in ("boxes", "box+points"):
        for multimask in (False, True):
            with torch.no_grad():
                logits, iou = ours.decode(ours_emb, multimask_output=multimask, **CASES[case])
            hf_logits, hf_iou = hf_decode(hf, hf_emb, multimask=multimask, **CASES[case])
            assert logits.std() > 0.1
            assert_near(logits, hf_logits, f"ViT-B {case} multimask={multimask} logits")
            assert_near(iou, hf_iou, f"ViT-B {case} multimask={multimask} IoU")


def _assert_same_model(loaded, ours):
    """Bit-identical weights (so the image encoder computes bit-identical embeddings) and
    bit-identical decoder predictions."""
    state, own = loaded.model.state_dict(), ours.state_dict()
    assert sorted(state) == sorted(own)
    for key, value in own.items():
        assert torch.equal(state[key], value), key
    embeddings = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ours.decode(embeddings, multimask_output=True, **CASES["box+mask"])
        actual = loaded.model.decode(embeddings, multimask_output=True, **CASES["box+mask"])
    assert expected[0].std() > 0.1
    assert torch.equal(actual[0], expected[0]) and torch.equal(actual[1], expected[1])


def test_hf_layout_torch_file_loads_into_vit_b(vit_b_models, tmp_path, caplog):
    ours, hf = vit_b_models
    path = tmp_path / "medsam_vit_b_hf.pth"
    torch.save(hf.state_dict(), path)  # SamModel.state_dict(): both tied positional keys
    with caplog.at_level(logging.INFO, logger="medsamkit.models.checkpoint"):
        loaded = load_model(checkpoint=path, device="cpu")  # architecture recognised from the keys
    assert loaded.spec.name == "medsam-vit-b"
    assert any("Hugging Face" in r.getMessage() for r in caplog.records)
    _assert_same_model(loaded, ours)


def test_hf_save_pretrained_safetensors_loads_into_vit_b(vit_b_models, tmp_path):
    """The file transformers itself writes (model.safetensors, as on the hub for
    wanglab/medsam-vit-base), read by read_checkpoint's safetensors branch."""
    ours, hf = vit_b_models
    hf.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    assert path.is_file()
    assert sorted(read_checkpoint(path)) == sorted(ours.state_dict())
    loaded = load_model("medsam-vit-b", checkpoint=path, device="cpu")
    _assert_same_model(loaded, ours)


def test_unreadable_safetensors_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(path)
