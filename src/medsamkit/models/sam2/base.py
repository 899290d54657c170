"""The composed SAM2 model: image encoder, SAM heads, memory encoder and memory attention.

The model holds weights and the per-frame computations; it holds no video state (that is the
caller's typed state: :mod:`.tracking` for one step, the propagator for a volume). Nothing here
disables gradients, so fine-tuning uses the same forward paths as inference.

State_dict keys are exactly the official ones (facebookresearch/sam2 ``SAM2Base``):
``image_encoder.*``, ``sam_prompt_encoder.*``, ``sam_mask_decoder.*``, ``memory_attention.*``,
``memory_encoder.*``, ``mask_downsample.*``, ``obj_ptr_proj.*``, ``obj_ptr_tpos_proj.*`` (SAM2.1),
``maskmem_tpos_enc``, ``no_mem_embed``, ``no_mem_pos_enc``, ``no_obj_ptr`` and
``no_obj_embed_spatial`` (SAM2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLP
from ..prompt_encoder import PromptEncoder
from .hiera import ImageEncoder
from .mask_decoder import SAM2MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .position import sine_encoding_2d

#: score given to every pixel of an object predicted absent (the reference's NO_OBJ_SCORE)
NO_OBJECT_SCORE = -1024.0


@dataclass(frozen=True)
class SAM2Options:
    """The behaviour switches that differ between SAM2 and SAM2.1 (the rest is fixed by the
    official configurations: 7 memories, sigmoid x20 - 10 for memories, multimask tracking...).

    Attributes:
        image_size: side of the square model input (1024; MedSAM2 512).
        temporal_pointer_encoding: add a projected sine encoding of the frame distance to the
            object pointers (SAM2.1; SAM2 adds none).
        no_object_spatial_embedding: add ``no_obj_embed_spatial`` to the memory of frames
            where the object is absent (SAM2.1).
        num_maskmem: memory frames (the conditioning frame + 6 previous).
        max_obj_ptrs: object pointers attended to.
    """

    image_size: int = 1024
    temporal_pointer_encoding: bool = True
    no_object_spatial_embedding: bool = True
    num_maskmem: int = 7
    max_obj_ptrs: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0


@dataclass
class FrameFeatures:
    """The image encoder's output for B frames (or B copies of one).

    vision: (B, 256, S/16, S/16) top-level features, before any memory.
    high_res: the stride-4 (B, 32, S/4, S/4) and stride-8 (B, 64, S/8, S/8) features, already
        through the decoder's ``conv_s0``/``conv_s1`` (as the reference caches them).
    """

    vision: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]

    def expand(self, batch: int) -> FrameFeatures:
        """The same features for ``batch`` objects (views, no copy)."""
        return FrameFeatures(self.vision.expand(batch, -1, -1, -1),
                             tuple(f.expand(batch, -1, -1, -1) for f in self.high_res))  # type: ignore[arg-type]


@dataclass
class HeadsOutput:
    """What the SAM heads give for B objects on one frame.

    multimask_logits: (B, M, S/4, S/4) all returned masks (M = 3 or 1), absent objects at -1024.
    ious: (B, M) predicted IoUs.
    low_res: (B, 1, S/4, S/4) the chosen mask (the best IoU among M).
    high_res: (B, 1, S, S) the chosen mask upsampled to the model input.
    obj_ptr: (B, 256) the object pointer.
    object_score: (B, 1) logit that the object is present.
    """

    multimask_logits: torch.Tensor
    ious: torch.Tensor
    low_res: torch.Tensor
    high_res: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor


class SAM2Base(nn.Module):
    """SAM2 built from injected parts (see :func:`medsamkit.models.sam2.config.build_sam2`)."""

    def __init__(self, image_encoder: ImageEncoder, prompt_encoder: PromptEncoder, mask_decoder: SAM2MaskDecoder,
                 memory_attention: MemoryAttention, memory_encoder: MemoryEncoder, options: SAM2Options) -> None:
        super().__init__()
        self.options = options
        self.image_encoder = image_encoder
        self.sam_prompt_encoder = prompt_encoder
        self.sam_mask_decoder = mask_decoder
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        hidden = image_encoder.neck.d_model
        mem_dim = memory_encoder.out_dim
        self.hidden_dim, self.mem_dim = hidden, mem_dim
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(options.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        self.no_obj_embed_spatial = (nn.Parameter(torch.zeros(1, mem_dim))
                                     if options.no_object_spatial_embedding else None)
        self.obj_ptr_proj = MLP(hidden, hidden, hidden, 3)
        self.obj_ptr_tpos_proj = nn.Linear(hidden, mem_dim) if options.temporal_pointer_encoding else nn.Identity()
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr,
                  self.no_obj_embed_spatial):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)

    @property
    def image_size(self) -> int:
        """Side of the square model input in pixels (1024, MedSAM2 512)."""
        return self.options.image_size

    @property
    def feature_size(self) -> int:
        """Side of the top-level feature grid (image_size / 16)."""
        return self.options.image_size // 16

    # ----------------------------------------------------------------------------- images
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised images -> (vision, stride-4, stride-8) features.

        This is the part an inference engine (ONNX, OpenVINO) may replace: its output is plain
        tensors, everything after it runs in torch. See :class:`FrameFeatures`.
        """
        fpn = self.image_encoder(images)
        return fpn[2], self.sam_mask_decoder.conv_s0(fpn[0]), self.sam_mask_decoder.conv_s1(fpn[1])

    def frame_features(self, images: torch.Tensor) -> FrameFeatures:
        vision, s0, s1 = self.encode(images)
        return FrameFeatures(vision, (s0, s1))

    def vision_position(self, features: torch.Tensor) -> torch.Tensor:
        """(1, 256, h, w) sine position encoding of the top-level features."""
        return self.image_encoder.position_encoding(features)

    # ------------------------------------------------------------------------- SAM heads
    def forward_sam_heads(self, features: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                          points: tuple[torch.Tensor, torch.Tensor] | None = None,
                          mask_input: torch.Tensor | None = None, multimask: bool = False) -> HeadsOutput:
        """Prompt encoder + mask decoder on B (memory-conditioned) feature maps.

        Args:
            features: (B, 256, h, w).
            high_res: stride-4 and stride-8 features (B or 1 in the batch dimension).
            points: coords (B, P, 2) in model-input pixels and labels (B, P) (1, 0, 2/3 box
                corners, -1 padding); None gives one padding point, as the reference does.
            mask_input: (B, 1, H, W) mask prompt, resized to 4h x 4w if needed.
            multimask: 3 outputs and the best by IoU, else 1 (with the stability fallback).
        """
        batch, device = features.shape[0], features.device
        if points is None:
            points = (torch.zeros(batch, 1, 2, device=device), -torch.ones(batch, 1, dtype=torch.int32, device=device))
        mask_prompt = None
        if mask_input is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = mask_input if tuple(mask_input.shape[-2:]) == tuple(size) else F.interpolate(
                mask_input.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=points, boxes=None, masks=mask_prompt)
        out = self.sam_mask_decoder(features, self.sam_prompt_encoder.get_dense_pe(), sparse, dense, multimask, high_res)
        present = out.object_score > 0
        masks = torch.where(present[:, None, None], out.masks, NO_OBJECT_SCORE).float()
        high = F.interpolate(masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        token = out.tokens[:, 0]
        if multimask:
            best = torch.argmax(out.iou, dim=-1)
            rows = torch.arange(batch, device=device)
            low_res, high_res_mask = masks[rows, best].unsqueeze(1), high[rows, best].unsqueeze(1)
            if out.tokens.shape[1] > 1:
                token = out.tokens[rows, best]
        else:
            low_res, high_res_mask = masks, high
        appear = present.float()
        obj_ptr = appear * self.obj_ptr_proj(token) + (1 - appear) * self.no_obj_ptr
        return HeadsOutput(masks, out.iou, low_res, high_res_mask, obj_ptr, out.object_score)

    def mask_as_output(self, features: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                       mask: torch.Tensor) -> HeadsOutput:
        """A given binary mask (B, 1, S, S) taken as the frame's output (logits +-10); the
        pointer comes from the decoder with the mask as prompt (the reference's
        ``use_mask_input_as_output_without_sam``)."""
        mask = mask.float()
        high = mask * 20.0 - 10.0
        low = F.interpolate(high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        ious = mask.new_ones(mask.shape[0], 1)
        obj_ptr = self.forward_sam_heads(features, high_res, mask_input=self.mask_downsample(mask)).obj_ptr
        appear = torch.any(mask.flatten(1) > 0.0, dim=1)[..., None].float()
        obj_ptr = appear * obj_ptr + (1 - appear) * self.no_obj_ptr
        return HeadsOutput(low, ious, low, high, obj_ptr, 20.0 * appear - 10.0)

    # --------------------------------------------------------------------------- memories
    def mask_for_memory(self, high_res_masks: torch.Tensor, binarize: bool = False) -> torch.Tensor:
        """Mask logits (B, 1, S, S) -> the memory encoder's input: sigmoid (or the binary mask
        for frames the user prompted, in eval), times 20, minus 10."""
        mask = (high_res_masks > 0).float() if binarize and not self.training else torch.sigmoid(high_res_masks)
        return mask * self.options.sigmoid_scale_for_mem_enc + self.options.sigmoid_bias_for_mem_enc

    def encode_memory(self, vision: torch.Tensor, high_res_masks: torch.Tensor, object_score: torch.Tensor,
                      binarize: bool = False) -> torch.Tensor:
        """(B, 256, h, w) raw features + (B, 1, S, S) mask logits -> (B, 64, h, w) memory; frames
        where the object is absent get ``no_obj_embed_spatial`` added (SAM2.1)."""
        memory = self.memory_encoder(vision, self.mask_for_memory(high_res_masks, binarize))
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score > 0).float()
            memory = memory + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return memory

    def memory_position(self, memory: torch.Tensor) -> torch.Tensor:
        """(1, 64, h, w) sine position encoding of a memory map (the same for every frame)."""
        return sine_encoding_2d(self.mem_dim, memory.shape[-2], memory.shape[-1], memory.device).to(memory.dtype)

    def forward(self, *args, **kwargs):  # noqa: D102
        raise NotImplementedError("SAM2 has no single forward: use encode / forward_sam_heads "
                                  "(images) or medsamkit.models.sam2.tracking.track_step (frames with memory)")
