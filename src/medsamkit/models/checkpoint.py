"""Reading, strictly loading and saving SAM-family checkpoints.

Accepted forms (MedSAM users hit each of them: design.md, MedSAM issues #122 #200 #224 #228 #272):
a raw state_dict, ``{"model": state_dict, ...}`` (MedSAM training checkpoints),
``{"state_dict": ...}`` (Lightning), and keys prefixed by ``module.`` (DDP) or ``model.``
(a LightningModule attribute), and Hugging Face transformers ``SamModel`` files (``.safetensors``
or torch, e.g. wanglab/medsam-vit-base; see :mod:`.hf_convert`). Saving writes the official
layout: a raw state_dict with ``image_encoder.``, ``prompt_encoder.`` and ``mask_decoder.`` keys
(SAM family) or ``{"model": state_dict}`` (SAM2, MedSAM2), readable by the original tools.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_PREFIXES = ("module.", "model.", "_orig_mod.")
_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.", "sam_prompt_encoder.", "sam_mask_decoder.",
          "memory_attention.", "memory_encoder.")
_SAM2_PARTS = ("sam_mask_decoder.", "memory_attention.")


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file onto the CPU and return its normalised state_dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path}: reading .safetensors files needs the safetensors package") from None
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(
                f"{path}: cannot be read as a safetensors file ({type(exc).__name__}: {exc})"
            ) from None
        return normalise_state_dict(obj, source=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # training checkpoints may pickle extra objects (argparse namespaces, optimizer configs);
        # garbage files land here too, so warn only once the full unpickling has succeeded
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
            raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({exc})") from None
        log.warning("%s holds more than tensors; loaded it with full unpickling (trust the file)", path)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    return normalise_state_dict(obj, source=str(path))


def normalise_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap ``{"model": ...}`` / ``{"state_dict": ...}``, strip ``module.``-style prefixes and
    convert a Hugging Face transformers ``SamModel`` layout to the official one."""
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in _WRAPPER_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                log.info("%s: using the state_dict under %r", source, key)
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{source}: no state_dict found (expected tensors, or one under 'model' or 'state_dict'; found {keys})"
        )
    state = dict(obj)
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(_PARTS) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                log.info("%s: stripped the %r prefix from every key", source, prefix)
                changed = True
    from .hf_convert import hf_to_sam_state_dict, is_hf_layout

    if is_hf_layout(state):
        try:
            state = hf_to_sam_state_dict(state)
        except ValueError as exc:
            raise CheckpointError(
                f"{source}: looks like a Hugging Face transformers SamModel file, but {exc}"
            ) from None
        log.info("%s: converted the Hugging Face transformers SamModel layout to the official SAM layout", source)
    return state


def _examples(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, model_name: str) -> None:
    """Load ``state`` into ``model``; on any mismatch raise a :class:`CheckpointError` that lists
    the missing keys, the unexpected keys and the shape mismatches in plain words."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    wrong_shape = sorted(
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = [f"{source} does not fit the {model_name} model."]
        if missing:
            parts.append(f"{len(missing)} weights the model needs are missing from the file: {_examples(missing)}.")
        if unexpected:
            parts.append(f"{len(unexpected)} entries in the file are not used by the model: {_examples(unexpected)}.")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} weights have the wrong shape: {_examples(wrong_shape, 3)}.")
        from .detect import detect_architecture

        guess = detect_architecture(state)
        if guess is not None:
            from .registry import MODELS

            names = [s.name for s in MODELS.values() if s.key_layout == guess and s.adapter_of is None]
            choice = f" ({' or '.join(names)})" if names else ""
            parts.append(f"The file looks like a {guess} checkpoint; pick the matching --model{choice}.")
        raise CheckpointError(" ".join(parts))
    model.load_state_dict(state, strict=True)


def save_checkpoint(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save the model's weights in the official layout, atomically: a raw state_dict for the
    SAM family (as ``sam_vit_b_01ec64.pth``), ``{"model": state_dict}`` for SAM2 (as
    ``sam2.1_hiera_tiny.pt``, which the official ``build_sam2`` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # a DDP or torch.compile wrapper prefixes every key ("module.", "_orig_mod."): drop it
        state = normalise_state_dict(state, source=str(path))
        if any(k.startswith(_SAM2_PARTS) for k in state):
            state = {"model": state}
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
