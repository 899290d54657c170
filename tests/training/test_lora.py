"""LoRA on the encoders' attention layers: what is adapted, what trains, and exact merging."""

from __future__ import annotations

import re

import pytest
import torch
from training_fixtures import tiny_sam

from medsamkit.models.registry import ARCHITECTURES
from medsamkit.training.lora import add_lora, has_lora, merge_lora_, merged_copy, target_pattern


def _adapted(module) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return [name for name, m in module.named_modules() if isinstance(m, LoraLayer)]


def test_only_attention_qkv_and_proj_are_adapted():
    vit = add_lora(tiny_sam().image_encoder, rank=2)
    assert _adapted(vit) == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.attn.qkv", "blocks.1.attn.proj"]
    # patch_embed.proj (a convolution named proj) is left alone
    assert not has_lora(vit.patch_embed)
    trained = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trained and all(re.search(r"\.lora_[AB]\.", n) for n in trained)


def test_tinyvit_attention_is_adapted():
    with torch.device("meta"):
        encoder = ARCHITECTURES["tinyvit"]().image_encoder
    names = _adapted(add_lora(encoder, rank=2, targets=["qkv"]))
    assert len(names) == 10 and all(n.endswith("attn.qkv") for n in names)


def test_unknown_targets_are_refused():
    with pytest.raises(ValueError, match="no attention layer named query"):
        add_lora(tiny_sam().image_encoder, targets=["query"])
    assert re.fullmatch(target_pattern(["qkv"]), "layers.1.blocks.0.attn.qkv")
    assert not re.fullmatch(target_pattern(["proj"]), "patch_embed.proj")


def test_merge_gives_the_adapted_outputs_with_official_keys():
    torch.manual_seed(0)
    model = tiny_sam().eval()
    official = set(model.state_dict())
    model.image_encoder = add_lora(model.image_encoder, rank=4, alpha=8.0)
    with torch.no_grad():  # make the adapters matter (lora_B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        adapted = model.image_encoder(x)
        merged = merged_copy(model)
        assert merged is not model and has_lora(model) and not has_lora(merged)
        assert set(merged.state_dict()) == official
        assert torch.allclose(merged.image_encoder(x), adapted, atol=1e-5)
        plain = tiny_sam().eval()
        plain.load_state_dict(merge_lora_(model).state_dict())  # strict: official keys only
        assert torch.allclose(plain.image_encoder(x), adapted, atol=1e-5)
