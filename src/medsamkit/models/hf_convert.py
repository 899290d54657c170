"""Convert SAM weights between the official layout and Hugging Face transformers' ``SamModel``.

medsamkit's models use the official segment-anything key layout (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``). transformers' ``SamModel`` holds the same tensors under
other names (``vision_encoder.*``, ``prompt_encoder.shared_embedding.*``, ...). The two layouts
differ only in names: no tensor is split, merged, transposed or rescaled (the ViT's fused ``qkv``
projection stays fused in both). The differences:

* ViT encoder: ``blocks.i`` -> ``layers.i``, ``norm1/2`` -> ``layer_norm1/2``,
  ``patch_embed.proj`` -> ``patch_embed.projection``, ``neck.0..3`` -> ``neck.conv1, layer_norm1,
  conv2, layer_norm2``.
* Prompt encoder: the random-frequency matrix (a buffer, ``pe_layer.positional_encoding_gaussian_matrix``)
  is a parameter in transformers, stored twice there: ``prompt_encoder.shared_embedding.positional_embedding``
  (prompt coordinates) and ``shared_image_embedding.positional_embedding`` (the image-wide
  encoding), tied to each other. ``point_embeddings.i`` -> ``point_embed.i``,
  ``mask_downscaling.0,1,3,4,6`` -> ``mask_embed.conv1, layer_norm1, conv2, layer_norm2, conv3``.
* Mask decoder: ``norm*`` -> ``layer_norm*`` in the two-way transformer,
  ``output_upscaling.0,1,3`` -> ``upscale_conv1, upscale_layer_norm, upscale_conv2``, and the
  hypernetwork and IoU MLPs' ``layers.0 .. layers.n-1`` -> ``proj_in, layers.0 .. layers.n-3, proj_out``.

transformers stays an optional dependency: it is imported only inside :func:`hf_sam_config`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .sam import Sam

log = logging.getLogger(__name__)

_PE_SAM = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_PE_HF_PROMPT = "prompt_encoder.shared_embedding.positional_embedding"
_PE_HF_IMAGE = "shared_image_embedding.positional_embedding"
#: non-persistent buffers of the original ``Sam`` module that some exported files still carry
_DROPPED = ("pixel_mean", "pixel_std")

# (official name, transformers name); "#" stands for a layer number, kept as it is. A name
# ending in "." is a module prefix (the parameter name after it is kept); any other is a whole key.
_RENAMES: tuple[tuple[str, str], ...] = (
    ("image_encoder.patch_embed.proj.", "vision_encoder.patch_embed.projection."),
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.blocks.#.norm1.", "vision_encoder.layers.#.layer_norm1."),
    ("image_encoder.blocks.#.norm2.", "vision_encoder.layers.#.layer_norm2."),
    ("image_encoder.blocks.#.attn.", "vision_encoder.layers.#.attn."),
    ("image_encoder.blocks.#.mlp.", "vision_encoder.layers.#.mlp."),
    ("image_encoder.neck.0.", "vision_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "vision_encoder.neck.layer_norm1."),
    ("image_encoder.neck.2.", "vision_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "vision_encoder.neck.layer_norm2."),
    (_PE_SAM, _PE_HF_PROMPT),
    ("prompt_encoder.point_embeddings.#.", "prompt_encoder.point_embed.#."),
    ("prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    ("prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    ("mask_decoder.iou_token.", "mask_decoder.iou_token."),
    ("mask_decoder.mask_tokens.", "mask_decoder.mask_tokens."),
    ("mask_decoder.transformer.layers.#.norm#.", "mask_decoder.transformer.layers.#.layer_norm#."),
    ("mask_decoder.transformer.layers.#.self_attn.", "mask_decoder.transformer.layers.#.self_attn."),
    ("mask_decoder.transformer.layers.#.cross_attn_token_to_image.",
     "mask_decoder.transformer.layers.#.cross_attn_token_to_image."),
    ("mask_decoder.transformer.layers.#.cross_attn_image_to_token.",
     "mask_decoder.transformer.layers.#.cross_attn_image_to_token."),
    ("mask_decoder.transformer.layers.#.mlp.", "mask_decoder.transformer.layers.#.mlp."),
    ("mask_decoder.transformer.final_attn_token_to_image.", "mask_decoder.transformer.final_attn_token_to_image."),
    ("mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
    ("mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
    ("mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
    ("mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
)

# MLP heads: official ``<head>layers.k.*`` <-> transformers ``<head>proj_in / layers.j / proj_out``
_SAM_MLP = re.compile(r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+)\.)layers\.(\d+)\.(.+)$")
_HF_MLP = re.compile(
    r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+)\.)(proj_in|proj_out|layers\.(\d+))\.(.+)$"
)

#: key beginnings found only in transformers' layout
_HF_MARKERS = (
    "vision_encoder.",
    "shared_image_embedding.",
    "prompt_encoder.shared_embedding.",
    "prompt_encoder.point_embed.",
    "prompt_encoder.mask_embed.",
    "mask_decoder.upscale_conv1.",
    "mask_decoder.upscale_layer_norm.",
    "mask_decoder.transformer.layer_norm_final_attn.",
    "mask_decoder.iou_prediction_head.proj_in.",
)


def _compile(pattern: str) -> re.Pattern[str]:
    body = r"(\d+)".join(re.escape(piece) for piece in pattern.rstrip(".").split("#"))
    return re.compile("^" + body + (r"\.(.+)$" if pattern.endswith(".") else "()$"))


def _fill(template: str, numbers: tuple[str, ...], rest: str) -> str:
    pieces = template.rstrip(".").split("#")
    name = pieces[0] + "".join(number + piece for number, piece in zip(numbers, pieces[1:], strict=True))
    return name + (f".{rest}" if template.endswith(".") else "")


_TO_HF = [(_compile(src), dst) for src, dst in _RENAMES]
_TO_SAM = [(_compile(dst), src) for src, dst in _RENAMES]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            *numbers, rest = match.groups()
            return _fill(template, tuple(numbers), rest)
    return None


def _unknown(keys: list[str], layout: str) -> ValueError:
    shown = ", ".join(keys[:6]) + (f", ... ({len(keys) - 6} more)" if len(keys) > 6 else "")
    return ValueError(f"{len(keys)} keys are not part of the {layout} SAM ViT layout: {shown}")


def is_hf_layout(state: Mapping[str, object]) -> bool:
    """True when ``state`` holds keys that only transformers' ``SamModel`` layout uses."""
    return any(key.startswith(_HF_MARKERS) for key in state)


def sam_to_hf_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SAM keys (medsamkit's ``Sam`` with a ViT encoder) -> transformers ``SamModel`` keys.

    The tensors are reused, not copied, except the positional-frequency matrix: transformers
    stores it under two tied names and the second one gets a clone, so the result can be written
    with ``safetensors`` (which refuses tensors sharing memory). ``pixel_mean``/``pixel_std``
    buffers are dropped. Keys of any other encoder (TinyViT) raise a ValueError.
    """
    out: dict[str, torch.Tensor] = {}
    mlp_layers: dict[str, set[int]] = {}
    for key in state:
        match = _SAM_MLP.match(key)
        if match:
            mlp_layers.setdefault(match.group(1), set()).add(int(match.group(2)))
    unknown = []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        match = _SAM_MLP.match(key)
        if match:
            head, index, rest = match.group(1), int(match.group(2)), match.group(3)
            count = max(mlp_layers[head]) + 1
            if count < 2:
                raise ValueError(f"{head[:-1]} has {count} layer; transformers' SamFeedForward needs at least 2")
            name = "proj_in" if index == 0 else "proj_out" if index == count - 1 else f"layers.{index - 1}"
            out[f"{head}{name}.{rest}"] = value
            continue
        new = _rename(key, _TO_HF)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise _unknown(unknown, "official")
    if _PE_HF_PROMPT in out:
        out[_PE_HF_IMAGE] = out[_PE_HF_PROMPT].clone()
    return out


def hf_to_sam_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ``SamModel`` keys -> official SAM keys, loadable by medsamkit's ViT models.

    The tied positional-frequency matrix may be stored under either or both of its two names;
    when both are present they must be equal (one matrix serves both in the official model).
    """
    state = dict(state)
    prompt_pe = state.pop(_PE_HF_PROMPT, None)
    image_pe = state.pop(_PE_HF_IMAGE, None)
    both = prompt_pe is not None and image_pe is not None
    if both and not (prompt_pe.is_meta or image_pe.is_meta) and not torch.equal(prompt_pe, image_pe):
        raise ValueError(
            f"{_PE_HF_PROMPT} and {_PE_HF_IMAGE} differ; the official SAM layout has one positional "
            "matrix for both, so these weights cannot be represented"
        )
    pe = prompt_pe if prompt_pe is not None else image_pe

    hidden: dict[str, set[int]] = {}
    for key in state:
        match = _HF_MLP.match(key)
        if match:
            hidden.setdefault(match.group(1), set())
            if match.group(3) is not None:
                hidden[match.group(1)].add(int(match.group(3)))
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        match = _HF_MLP.match(key)
        if match:
            head, name, index, rest = match.groups()
            if name == "proj_in":
                layer = 0
            elif name == "proj_out":
                layer = max(hidden[head], default=-1) + 2
            else:
                layer = int(index) + 1
            out[f"{head}layers.{layer}.{rest}"] = value
            continue
        new = _rename(key, _TO_SAM)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise _unknown(unknown, "transformers")
    if pe is not None:
        out[_PE_SAM] = pe
    return out


def _vision_numbers(arch: str | Sam) -> dict[str, object]:
    """ViT sizes of a registry architecture name or of a built model, in SamVisionConfig's words."""
    from functools import partial

    from . import registry
    from .image_encoder_vit import ImageEncoderViT

    if isinstance(arch, str):
        builder = registry.ARCHITECTURES.get(arch)
        if not (isinstance(builder, partial) and builder.func is registry._build_vit):
            vits = [name for name, b in registry.ARCHITECTURES.items() if isinstance(b, partial)]
            raise ValueError(f"{arch!r} is not a SAM ViT architecture; transformers' SamModel has {', '.join(vits)}")
        embed_dim, depth, num_heads, global_attn = builder.args
        return {
            "hidden_size": embed_dim,
            "num_hidden_layers": depth,
            "num_attention_heads": num_heads,
            "global_attn_indexes": list(global_attn),
        }
    encoder = arch.image_encoder
    if not isinstance(encoder, ImageEncoderViT):
        raise ValueError(f"transformers' SamModel has no {type(encoder).__name__} image encoder")
    blocks = list(encoder.blocks)
    proj = encoder.patch_embed.proj
    return {
        "hidden_size": proj.out_channels,
        "num_hidden_layers": len(blocks),
        "num_attention_heads": blocks[0].attn.num_heads,
        "global_attn_indexes": [i for i, block in enumerate(blocks) if block.window_size == 0],
        "window_size": next((block.window_size for block in blocks if block.window_size > 0), 14),
        "mlp_dim": blocks[0].mlp.lin1.out_features,
        "image_size": encoder.img_size,
        "patch_size": proj.kernel_size[0],
        "qkv_bias": blocks[0].attn.qkv.bias is not None,
        "use_abs_pos": encoder.pos_embed is not None,
        "use_rel_pos": blocks[0].attn.use_rel_pos,
        "output_channels": encoder.neck[0].out_channels,
    }


def hf_sam_config(arch: str | Sam = "vit-b", **vision_overrides):
    """A ``transformers.SamConfig`` whose ``SamModel`` computes what medsamkit's model computes.

    Args:
        arch: "vit-b", "vit-l" or "vit-h" (the registry's numbers), or a built ViT ``Sam`` whose
            sizes are read from its modules (custom sizes, e.g. a small test model).
        vision_overrides: further ``SamVisionConfig`` fields.

    One deliberate difference from transformers' defaults: the mask decoder's two-way transformer
    LayerNorms use eps 1e-5 as in the original SAM (``nn.LayerNorm`` default) and in medsamkit;
    transformers' default is 1e-6, a difference of order 1e-6 in the outputs.
    """
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    from .registry import EMBED_DIM

    vision = {
        "image_size": 1024,
        "patch_size": 16,
        "num_channels": 3,
        "output_channels": EMBED_DIM,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "use_abs_pos": True,
        "use_rel_pos": True,
        "window_size": 14,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "num_pos_feats": EMBED_DIM // 2,
    }
    vision.update(_vision_numbers(arch))
    vision.update(vision_overrides)
    if "mlp_dim" not in vision:
        vision["mlp_dim"] = int(vision["hidden_size"] * vision["mlp_ratio"])
    image_size, patch_size = vision["image_size"], vision["patch_size"]
    prompt = SamPromptEncoderConfig(
        hidden_size=EMBED_DIM,
        image_size=image_size,
        patch_size=patch_size,
        mask_input_channels=16,
        num_point_embeddings=4,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=EMBED_DIM,
        hidden_act="relu",
        mlp_dim=2048,
        num_hidden_layers=2,
        num_attention_heads=8,
        attention_downsample_rate=2,
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        layer_norm_eps=1e-5,
    )
    return SamConfig(
        vision_config=SamVisionConfig(**vision),
        prompt_encoder_config=prompt,
        mask_decoder_config=decoder,
    )
