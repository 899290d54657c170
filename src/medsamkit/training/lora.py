"""LoRA adapters (PEFT) on the image encoder's attention layers, and merging them for export.

Adapters go on the ``attn.qkv`` and ``attn.proj`` linear layers of the ViT and TinyViT encoders
(configurable); the base weights are frozen, only ``lora_A``/``lora_B`` train. Training
checkpoints keep only the adapters (plus the other trained parts); :func:`merged_copy` folds
them into the base weights so the exported model has the official SAM/LiteMedSAM layout.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from torch import nn


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
