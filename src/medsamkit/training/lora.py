"""LoRA adapters (PEFT) on the image encoder's attention layers or on the mask decoder, and
merging them for export.

Encoder adapters go on the ``attn.qkv`` and ``attn.proj`` linear layers of the ViT and TinyViT
encoders (configurable). Decoder adapters (:func:`add_decoder_lora`, mode ``decoder-lora``) go on
every linear layer of the mask decoder: attention projections, MLPs, the hypernetwork and IoU
heads. The base weights are frozen, only ``lora_A``/``lora_B`` train. Training checkpoints keep
only the adapters (plus the other trained parts); :func:`merged_copy` folds them into the base
weights so the exported model has the official SAM/LiteMedSAM layout.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from torch import nn

from ..models.adapters import DECODER_TARGETS


def target_pattern(targets: Sequence[str]) -> str:
    """Regex of the module names PEFT adapts: ``<anything>.attn.<target>``."""
    return rf".*\battn\.({'|'.join(re.escape(t) for t in targets)})$"


def add_lora(encoder: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
             targets: Sequence[str] = ("qkv", "proj")) -> nn.Module:
    """Inject LoRA adapters into ``encoder`` in place and freeze everything else in it.

    Raises:
        ValueError: no module matches ``targets``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    pattern = target_pattern(targets)
    if not any(re.fullmatch(pattern, name) for name, _ in encoder.named_modules()):
        raise ValueError(f"no attention layer named {', '.join(targets)} in the image encoder for LoRA")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    encoder = inject_adapter_in_model(config, encoder)
    for name, param in encoder.named_parameters():
        param.requires_grad = "lora_" in name
    return encoder


#: what mode ``decoder-lora`` trains in full besides the adapters: the prompt encoder's point
#: embeddings (foreground, background, box corners, not-a-point) and its mask-prompt path
DECODER_PROMPT_PARTS = ("prompt_encoder.point_embeddings.", "prompt_encoder.not_a_point_embed.",
                        "prompt_encoder.mask_downscaling.", "prompt_encoder.no_mask_embed.")


def add_decoder_lora(decoder: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> nn.Module:
    """Inject LoRA adapters into every linear layer of a SAM mask decoder (in place); only the
    adapters are trainable in it afterwards."""
    from peft import LoraConfig, inject_adapter_in_model

    if not any(re.fullmatch(DECODER_TARGETS, name) for name, _ in decoder.named_modules()):
        raise ValueError("no linear layer of a SAM mask decoder found for LoRA")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=DECODER_TARGETS, bias="none")
    decoder = inject_adapter_in_model(config, decoder)
    for name, param in decoder.named_parameters():
        param.requires_grad = "lora_" in name
    return decoder


def has_lora(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in module.modules())


def merge_lora_(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter of ``module`` into its base layer and put the base layer back
    in place (in place; returns ``module``): the state_dict keys become the official ones."""
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
    return module


def merged_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with its LoRA adapters merged (the original keeps training)."""
    return merge_lora_(copy.deepcopy(model)) if has_lora(model) else model
