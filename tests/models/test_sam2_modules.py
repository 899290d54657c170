"""SAM2 building blocks on a tiny random configuration: shapes, the tracking step's memory
selection, the stability fallback, rotary encodings, and gradients through the memory path
(the fine-tuning contract: nothing on the forward paths disables autograd)."""

from __future__ import annotations

import math

import pytest
import torch

from medsamkit.models.sam2.base import NO_OBJECT_SCORE
from medsamkit.models.sam2.config import build_test_model
from medsamkit.models.sam2.mask_decoder import StabilityFallback
from medsamkit.models.sam2.position import apply_rope, axial_rope_frequencies, sine_encoding_1d, sine_encoding_2d
from medsamkit.models.sam2.tracking import (
    FrameMemory,
    MemoryBank,
    PointPrompt,
    memory_tokens,
    track_step,
    use_multimask,
)

S = 64  # tiny model input; features 4 x 4, low-res masks 16 x 16


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model's operations are too small for two threads (on a busy machine, thread
    hand-offs make them 50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_test_model(S).eval()


def _box_prompt(batch: int = 1) -> PointPrompt:
    coords = torch.tensor([[[10.0, 12.0], [40.0, 50.0]]]).repeat(batch, 1, 1)
    return PointPrompt(coords, torch.tensor([[2, 3]]).repeat(batch, 1))


def test_encoder_outputs_three_levels(model):
    vision, s0, s1 = model.encode(torch.randn(2, 3, S, S))
    assert vision.shape == (2, 32, S // 16, S // 16)
    assert s0.shape == (2, 4, S // 4, S // 4) and s1.shape == (2, 8, S // 8, S // 8)
    assert model.vision_position(vision).shape == (1, 32, S // 16, S // 16)


def test_conditioning_then_tracked_frames(model):
    features = model.frame_features(torch.randn(1, 3, S, S))
    bank = MemoryBank(num_frames=10)
    with torch.no_grad():
        cond = track_step(model, features, bank, 3, points=_box_prompt(), is_cond=True)
        assert cond.heads.low_res.shape == (1, 1, S // 4, S // 4) and cond.heads.high_res.shape == (1, 1, S, S)
        assert cond.memory.maskmem.shape == (1, 16, S // 16, S // 16) and cond.memory.obj_ptr.shape == (1, 32)
        bank.cond[3] = cond.memory
        step = track_step(model, features, bank, 4)
    # tracking frames have no points: 3 candidate masks, the best by IoU is the output
    assert step.heads.multimask_logits.shape == (1, 3, S // 4, S // 4) and step.heads.ious.shape == (1, 3)
    best = step.heads.ious.argmax()
    masks = step.heads.multimask_logits[0, best]
    absent = step.heads.object_score.item() <= 0
    assert torch.equal(step.heads.low_res[0, 0], masks)
    assert (masks == NO_OBJECT_SCORE).all() == absent


def test_multimask_rule():
    assert use_multimask(None) and use_multimask(PointPrompt(torch.zeros(1, 1, 2), torch.ones(1, 1)))
    assert not use_multimask(_box_prompt())  # a box counts as two points


def test_memory_selection_forward_and_reverse(model):
    h = S // 16
    ptr = torch.zeros(1, 32)
    mem = FrameMemory(torch.zeros(1, 16, h, h), ptr)
    bank = MemoryBank(num_frames=40, cond={20: mem}, tracked={t: mem for t in range(21, 30)})
    tokens, pos, n_ptr = memory_tokens(model, bank, 30, reverse=False, batch=1)
    # the conditioning frame + the 6 frames just before (24..29); pointers: cond + 9 tracked
    assert n_ptr == (1 + 9) * 2  # each 32-d pointer is 2 tokens of 16
    assert tokens.shape == (1, 7 * h * h + n_ptr, 16) and pos.shape == tokens.shape
    # tracking down from frame 19, the frames above are the ones behind: the conditioning frame
    # (20), frames 21..25 (6 back at most) and pointers of 20 and 21..29 (10 back at most)
    tokens, _, n_ptr = memory_tokens(model, bank, 19, reverse=True, batch=1)
    assert n_ptr == 10 * 2 and tokens.shape[1] == 6 * h * h + n_ptr
    # tracking up from frame 10: no tracked frame is behind, and the conditioning frame (20) is
    # in the future: its memory counts, its pointer does not
    tokens, _, n_ptr = memory_tokens(model, bank, 10, reverse=False, batch=1)
    assert n_ptr == 0 and tokens.shape[1] == h * h
    bank.forget_before(30, reverse=False, keep=3)
    assert sorted(bank.tracked) == [27, 28, 29]


def test_pointer_window_is_bounded_by_the_video(model):
    h = S // 16
    mem = FrameMemory(torch.zeros(1, 16, h, h), torch.zeros(1, 32))
    bank = MemoryBank(num_frames=4, cond={0: mem}, tracked={1: mem, 2: mem})
    _, _, n_ptr = memory_tokens(model, bank, 3, reverse=False, batch=1)
    assert n_ptr == 3 * 2


def test_stability_fallback_takes_the_best_multimask_when_unstable(model):
    decoder = model.sam_mask_decoder
    assert decoder.stability == StabilityFallback(True, 0.05, 0.98)
    masks = torch.zeros(2, 4, 8, 8)
    masks[0, 0] = 5.0  # stable single mask
    masks[1, 0] = 0.01  # |logits| < delta everywhere: unstable
    masks[:, 1:] = torch.arange(1, 4).float().view(1, 3, 1, 1)
    iou = torch.tensor([[0.1, 0.5, 0.9, 0.2], [0.1, 0.5, 0.9, 0.2]])
    out_masks, out_iou = decoder._stability_fallback(masks, iou)
    assert torch.equal(out_masks[0, 0], masks[0, 0]) and out_iou[0, 0] == 0.1
    assert torch.equal(out_masks[1, 0], masks[1, 2]) and out_iou[1, 0] == 0.9


def test_rotary_encoding_preserves_norms_and_tiles_for_memory_frames():
    freqs = axial_rope_frequencies(16, 3, 3)
    assert freqs.shape == (9, 8) and torch.allclose(freqs.abs(), torch.ones(9, 8))
    q, k = torch.randn(1, 1, 9, 16), torch.randn(1, 1, 18, 16)
    q_rot, k_rot = apply_rope(q, k, freqs, repeat_for_k=True)
    assert torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # two stacked memory frames get the same rotations as the query grid
    _, k_first = apply_rope(q, k[:, :, :9], freqs, repeat_for_k=False)
    _, k_second = apply_rope(q, k[:, :, 9:], freqs, repeat_for_k=False)
    assert torch.allclose(k_rot, torch.cat([k_first, k_second], dim=2))
    # token 0 is not rotated; token 1 (x = 1) turns the first pair by the first frequency (1 rad)
    assert torch.allclose(q_rot[0, 0, 0], q[0, 0, 0], atol=1e-6)
    a, b = q[0, 0, 1, 0], q[0, 0, 1, 1]
    assert torch.allclose(q_rot[0, 0, 1, :2], torch.stack([a * math.cos(1) - b * math.sin(1),
                                                            a * math.sin(1) + b * math.cos(1)]), atol=1e-5)


def test_sine_encodings_follow_the_formula():
    pe = sine_encoding_2d(8, 2, 3)  # 4 channels for y then 4 for x, pairs (sin, cos)
    assert pe.shape == (1, 8, 2, 3)
    y, x = 2, 3  # bottom-right cell: y = 2 / 2 * 2pi, x = 3 / 3 * 2pi (up to the 1e-6 guard)
    ang_y = [2 * math.pi * y / (2 + 1e-6) / 10000 ** (2 * (i // 2) / 4) for i in range(4)]
    expected_y = [math.sin(ang_y[0]), math.cos(ang_y[1]), math.sin(ang_y[2]), math.cos(ang_y[3])]
    assert torch.allclose(pe[0, :4, 1, 2], torch.tensor(expected_y), atol=1e-5)
    ang_x = [2 * math.pi * x / (3 + 1e-6) / 10000 ** (2 * (i // 2) / 4) for i in range(4)]
    expected_x = [math.sin(ang_x[0]), math.cos(ang_x[1]), math.sin(ang_x[2]), math.cos(ang_x[3])]
    assert torch.allclose(pe[0, 4:, 1, 2], torch.tensor(expected_x), atol=1e-5)
    # 1D: frequencies 10000 ** (2 * (i // 2) / half), sines then cosines (sam2_utils.get_1d_sine_pe)
    pe1 = sine_encoding_1d(torch.tensor([0.5]), 8)
    angles = [0.5, 0.5, 0.005, 0.005]
    expected = [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    assert torch.allclose(pe1, torch.tensor([expected]))


def test_a_given_mask_is_taken_as_output(model):
    features = model.frame_features(torch.randn(1, 3, S, S))
    empty = torch.zeros(1, 1, S, S)
    with torch.no_grad():
        out = model.mask_as_output(features.vision, features.high_res, empty)
    assert out.object_score.item() == -10.0 and torch.equal(out.obj_ptr, model.no_obj_ptr)
    assert (out.high_res == -10).all() and out.low_res.shape == (1, 1, S // 4, S // 4)


def test_gradients_reach_every_trained_part_through_the_memory_path():
    """Fine-tuning (MedSAM2 recipe: encoder frozen) trains the prompt encoder, mask decoder,
    memory attention and memory encoder: a loss on a tracked frame reaches all of them."""
    torch.manual_seed(1)
    model = build_test_model(S).train()
    with torch.no_grad():  # frozen encoder: features computed once (they can be cached)
        frames = [model.frame_features(torch.randn(1, 3, S, S)) for _ in range(3)]
    bank = MemoryBank(num_frames=3)
    first = track_step(model, frames[0], bank, 0, points=_box_prompt(), is_cond=True)
    bank.cond[0] = first.memory
    second = track_step(model, frames[1], bank, 1)
    bank.tracked[1] = second.memory
    third = track_step(model, frames[2], bank, 2)
    # (masks of a frame predicted empty are constant -1024: the object score carries the gradient)
    loss = sum(step.heads.ious.sum() + step.heads.object_score.sum() + step.heads.multimask_logits.sigmoid().mean()
               for step in (first, third))
    loss.backward()
    for part in ("sam_mask_decoder", "sam_prompt_encoder.point_embeddings", "memory_attention", "memory_encoder",
                 "obj_ptr_proj", "obj_ptr_tpos_proj", "maskmem_tpos_enc"):
        grads = [p.grad for name, p in model.named_parameters() if name.startswith(part)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part
    assert all(p.grad is None for p in model.image_encoder.parameters())
