"""Adapter files: the few tensors a ``decoder-lora`` fine-tuning trains, applied on top of a
registry model's official weights.

An adapter file is a torch file ``{"format": "medsamkit-adapter", "version": 1, "base": NAME,
"base_sha256": SHA of the base weights' frozen part, "lora": {"rank", "alpha"}, "state_dict":
{key: tensor}, "info": {...}}``. Its tensors are the LoRA ``lora_A``/``lora_B`` matrices of every
linear layer of the mask decoder and the prompt encoder's point and mask embeddings (a few
hundred kB, where a whole LiteMedSAM is 39 MB). :func:`apply_adapter` checks them strictly (an
adapter for every linear layer of the decoder, no unknown tensor) and merges them into the
weights (no PEFT needed), so the result has the official layout and runs like any checkpoint. ``load_model(checkpoint=ADAPTER)`` does this on the registry's base
weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

FORMAT = "medsamkit-adapter"
VERSION = 1

#: the mask decoder's linear layers (names relative to the decoder): attention q/k/v/out
#: projections, the transformer MLPs, the hypernetwork MLPs and the IoU head's layers
DECODER_TARGETS = r"(.*\.(q_proj|k_proj|v_proj|out_proj|lin1|lin2)|.*(output_hypernetworks_mlps|iou_prediction_head)\.(\d+\.)?layers\.\d+)"


def frozen_fingerprint(model: nn.Module, trained: set[str]) -> str:
    """SHA-256 of the official-layout tensors an adapter does not replace (its base)."""
    h = hashlib.sha256()
    for key, tensor in sorted((k.replace(".base_layer", ""), v) for k, v in model.state_dict().items()):
        if key in trained or "lora_" in key:
            continue
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_adapter(model: nn.Module, path: str | os.PathLike, base: str, rank: int, alpha: float,
                 trained_prefixes: tuple[str, ...], info: dict[str, Any] | None = None) -> Path:
    """Write the adapter tensors of ``model`` (LoRA-injected, not merged) atomically."""
    from ..io.writers import atomic_output

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
             if "lora_" in k or k.startswith(trained_prefixes)}
    if not any("lora_" in k for k in state):
        raise ValueError("the model has no LoRA adapters to save")
    payload = {"format": FORMAT, "version": VERSION, "base": base,
               "base_sha256": frozen_fingerprint(model, set(state)),
               "lora": {"rank": int(rank), "alpha": float(alpha)}, "state_dict": state, "info": info or {}}
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_adapter(path: str | os.PathLike) -> dict[str, Any] | None:
    """The adapter record of ``path``, or None when the file is not an adapter (an ordinary checkpoint)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a plain torch file: not an adapter
        return None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        return None
    if obj.get("version") != VERSION or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{path}: medsamkit adapter of an unknown version {obj.get('version')!r}")
    return obj


def apply_adapter(model: nn.Module, adapter: dict[str, Any], source: str = "adapter") -> nn.Module:
    """Apply an adapter record to ``model`` (official weights loaded), in place; returns it.

    Each adapted linear layer gets ``W + (alpha / rank) * B @ A`` (what PEFT's merge computes);
    the other tensors replace the model's. Raises :class:`CheckpointError` when the base weights
    differ from the ones the adapter was trained on, or when its tensors do not fit the model.
    """
    state: dict[str, torch.Tensor] = adapter["state_dict"]
    plain = {k: v for k, v in state.items() if "lora_" not in k}
    found = frozen_fingerprint(model, set(plain))
    if adapter.get("base_sha256") not in (None, found):
        raise CheckpointError(f"{source}: the base weights differ from the ones this adapter was trained on "
                              f"({adapter.get('base')}); load it on those weights")
    own = model.state_dict()
    layers = {f"mask_decoder.{name}" for name, _ in model.mask_decoder.named_modules()
              if re.fullmatch(DECODER_TARGETS, name)}
    pairs = {k.split(".lora_", 1)[0] for k in state if "lora_" in k}
    complete = {p for p in pairs if f"{p}.lora_A.default.weight" in state and f"{p}.lora_B.default.weight" in state}
    missing = sorted(layers - complete) + sorted(k for k in plain if k not in own)
    unexpected = sorted(pairs - layers)
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not fit the model: {len(missing)} tensors missing or unknown "
                              f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
    scale = float(adapter["lora"]["alpha"]) / int(adapter["lora"]["rank"])
    merged = {}
    for layer in sorted(layers):
        a, b = state[f"{layer}.lora_A.default.weight"], state[f"{layer}.lora_B.default.weight"]
        weight = own[f"{layer}.weight"]
        if (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise CheckpointError(f"{source}: the adapter of {layer} is {b.shape[0]}x{a.shape[1]}, "
                                  f"the layer {tuple(weight.shape)}")
        merged[f"{layer}.weight"] = weight + scale * (b.float() @ a.float()).to(weight.dtype)
    for key, tensor in plain.items():
        if own[key].shape != tensor.shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)}, the model {tuple(own[key].shape)}")
        merged[key] = tensor
    model.load_state_dict(merged, strict=False)
    return model
