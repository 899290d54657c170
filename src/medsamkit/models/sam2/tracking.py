"""One SAM2 tracking step: condition a frame on its object's memories, segment it, encode its
own memory.

The memory of an object is explicit, typed state (:class:`MemoryBank`): the conditioning
frames (frames the user prompted, at temporal position 0) and the tracked frames, each a
:class:`FrameMemory` (spatial memory + object pointer). The selection rules follow
facebookresearch/sam2 ``SAM2Base._prepare_memory_conditioned_features`` in eval mode: all
conditioning frames, the ``num_maskmem - 1`` tracked frames just before the current one (in the
tracking direction), and object pointers of the conditioning frames not in the future plus up
to ``max_obj_ptrs - 1`` tracked frames before it. Nothing here disables gradients: training
runs the same steps (see :func:`track_step`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import FrameFeatures, HeadsOutput, SAM2Base
from .position import sine_encoding_1d


@dataclass
class FrameMemory:
    """What one frame leaves behind for later frames of one object (or a batch of B objects).

    maskmem: (B, 64, h, w) spatial memory, or None when it was not encoded.
    obj_ptr: (B, 256) object pointer.
    """

    maskmem: torch.Tensor | None
    obj_ptr: torch.Tensor


@dataclass
class MemoryBank:
    """The memories of one object (or a batch of objects tracked together) in one video.

    Attributes:
        num_frames: frames in the whole video (volume depth); bounds the pointer window.
        cond: conditioning frames (prompted by the user) by frame index.
        tracked: frames segmented from memory, by frame index.
    """

    num_frames: int
    cond: dict[int, FrameMemory] = field(default_factory=dict)
    tracked: dict[int, FrameMemory] = field(default_factory=dict)

    def forget_before(self, frame_idx: int, reverse: bool, keep: int) -> None:
        """Drop tracked frames more than ``keep`` frames behind ``frame_idx`` in the tracking
        direction (they can no longer be selected: bounded memory on long volumes)."""
        for t in list(self.tracked):
            behind = t > frame_idx + keep if reverse else t < frame_idx - keep
            if behind:
                del self.tracked[t]


@dataclass(frozen=True)
class PointPrompt:
    """Points of B objects on one frame in model-input pixels: coords (B, P, 2), labels (B, P)
    (1 foreground, 0 background, 2/3 box corners, -1 padding)."""

    coords: torch.Tensor
    labels: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.labels.shape[1])


def use_multimask(prompt: PointPrompt | None) -> bool:
    """The official rule: multimask output for 0 or 1 points (tracking and a single click), a
    single mask otherwise (a box counts as two points)."""
    return (0 if prompt is None else prompt.count) <= 1


def memory_tokens(model: SAM2Base, bank: MemoryBank, frame_idx: int, reverse: bool, batch: int
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The memory a frame attends to: (B, M, 64) tokens, their (B, M, 64) position encoding
    and how many of the last tokens are object pointers."""
    opts = model.options
    sign = -1 if reverse else 1
    selected: list[tuple[int, FrameMemory]] = [(0, m) for m in bank.cond.values()]
    for t_pos in range(1, opts.num_maskmem):
        previous = frame_idx - sign * (opts.num_maskmem - t_pos)
        memory = bank.tracked.get(previous)
        if memory is not None:
            selected.append((t_pos, memory))
    tokens, positions = [], []
    for t_pos, memory in selected:
        if memory.maskmem is None:
            continue
        maskmem = memory.maskmem.to(torch.float32)
        tokens.append(maskmem.flatten(2).transpose(1, 2))
        pos = model.memory_position(maskmem).flatten(2).transpose(1, 2)
        positions.append((pos + model.maskmem_tpos_enc[opts.num_maskmem - t_pos - 1].view(1, 1, -1)).expand(batch, -1, -1))

    max_ptrs = min(bank.num_frames, opts.max_obj_ptrs)
    pointers = [((frame_idx - t) * sign if opts.temporal_pointer_encoding else abs(frame_idx - t), m.obj_ptr)
                for t, m in bank.cond.items() if (t >= frame_idx if reverse else t <= frame_idx)]
    for t_diff in range(1, max_ptrs):
        t = frame_idx - sign * t_diff
        if t < 0 or t >= bank.num_frames:
            break
        memory = bank.tracked.get(t)
        if memory is not None:
            pointers.append((t_diff, memory.obj_ptr))
    n_ptr_tokens = 0
    if pointers:
        offsets = torch.tensor([p for p, _ in pointers], device=pointers[0][1].device)
        ptrs = torch.stack([ptr for _, ptr in pointers], dim=1)  # (B, N, 256)
        hidden, mem_dim = model.hidden_dim, model.mem_dim
        if opts.temporal_pointer_encoding:
            pos = sine_encoding_1d(offsets / (max_ptrs - 1), hidden)
            pos = model.obj_ptr_tpos_proj(pos).unsqueeze(0).expand(batch, -1, -1)
        else:
            pos = ptrs.new_zeros(batch, len(pointers), mem_dim)
        split = hidden // mem_dim  # each 256-d pointer becomes 4 tokens of 64
        ptrs = ptrs.reshape(batch, -1, split, mem_dim).flatten(1, 2)
        pos = pos.repeat_interleave(split, dim=1)
        tokens.append(ptrs)
        positions.append(pos)
        n_ptr_tokens = ptrs.shape[1]
    return torch.cat(tokens, dim=1), torch.cat(positions, dim=1), n_ptr_tokens


def condition_on_memory(model: SAM2Base, vision: torch.Tensor, bank: MemoryBank | None, frame_idx: int,
                        reverse: bool) -> torch.Tensor:
    """(B, 256, h, w) features fused with the object's memory; a frame with no memory (a
    conditioning frame, ``bank`` None) gets the learned ``no_mem_embed`` added instead."""
    b, c, h, w = vision.shape
    if bank is None:
        return vision + model.no_mem_embed.view(1, c, 1, 1)
    curr = vision.flatten(2).transpose(1, 2)
    curr_pos = model.vision_position(vision).flatten(2).transpose(1, 2)
    memory, memory_pos, n_ptr = memory_tokens(model, bank, frame_idx, reverse, b)
    out = model.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=n_ptr)
    return out.transpose(1, 2).reshape(b, c, h, w)


@dataclass
class StepOutput:
    """One tracking step: the SAM heads' output and the frame's memory (maskmem None when
    the memory encoder was not run)."""

    heads: HeadsOutput
    memory: FrameMemory


def track_step(model: SAM2Base, features: FrameFeatures, bank: MemoryBank, frame_idx: int, *,
               points: PointPrompt | None = None, mask: torch.Tensor | None = None, is_cond: bool = False,
               reverse: bool = False, run_memory_encoder: bool = True) -> StepOutput:
    """Segment B objects on one frame.

    Args:
        features: the frame's features, batch B (``FrameFeatures.expand`` for B objects).
        bank: the objects' memories (batch B); not changed here (the caller stores the output).
        points: prompts on this frame; ``mask``: a binary (B, 1, S, S) mask taken as output.
        is_cond: a conditioning frame (prompted): segmented without memory, like SAM.
        reverse: tracking towards lower frame indices.
        run_memory_encoder: also encode the frame's memory from the chosen mask (the sigmoid of
            its logits; binarised when the frame has points, in eval, as the reference does).
    """
    if mask is not None:
        heads = model.mask_as_output(features.vision, features.high_res, mask)
    else:
        fused = condition_on_memory(model, features.vision, None if is_cond else bank, frame_idx, reverse)
        heads = model.forward_sam_heads(fused, features.high_res, None if points is None else
                                        (points.coords, points.labels), multimask=use_multimask(points))
    maskmem = None
    if run_memory_encoder:
        maskmem = model.encode_memory(features.vision, heads.high_res, heads.object_score,
                                      binarize=points is not None)
    return StepOutput(heads, FrameMemory(maskmem, heads.obj_ptr))
