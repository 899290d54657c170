"""Build a registry model and load its weights: the one entry point every command uses."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .checkpoint import load_state_dict_strict, read_checkpoint
from .detect import detect_architecture
from .registry import DEFAULT_MODEL, MODELS, ModelSpec, get_spec
from .sam import Sam

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model in eval mode on its device, with the spec and the weights file it came from."""

    model: Sam | nn.Module  # Sam, or medsamkit.models.sam2.base.SAM2Base when spec.family is "sam2"
    spec: ModelSpec
    weights_path: Path
    device: torch.device


def spec_for_checkpoint(state: dict[str, torch.Tensor], path: Path, name: str | None) -> ModelSpec:
    """The registry entry for a checkpoint: ``name`` when given, else recognised from the keys.

    A ViT-B file may be SAM or MedSAM, and a SAM2.1 Hiera-T file SAM2.1-tiny or MedSAM2 (same
    keys and shapes, different configuration): the file name decides ("medsam" in it -> MedSAM
    or MedSAM2) and a warning says how to choose explicitly.
    """
    if name is not None:
        return get_spec(name)
    arch = detect_architecture(state)
    if arch is None:
        raise CheckpointError(
            f"{path}: not a recognised SAM-family checkpoint (no TinyViT, ViT-B/L/H or SAM2 Hiera image encoder "
            f"keys); name the model with --model ({', '.join(MODELS)})"
        )
    candidates = [s for s in MODELS.values() if s.key_layout == arch and s.adapter_of is None]
    if len(candidates) == 1:
        return candidates[0]
    medsam_file = "medsam" in path.name.lower()
    spec = next((s for s in candidates if s.name.startswith("medsam") == medsam_file), candidates[0])
    log.warning(
        "%s is a %s checkpoint, used by %s; assuming %s from the file name (pass --model to choose)",
        path, arch, ", ".join(s.name for s in candidates), spec.name,
    )
    return spec


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _check_available(dev: torch.device) -> None:
    """Raise InputError for a device this PyTorch cannot use (instead of a traceback on .to())."""
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count())
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        ok = mps is not None and mps.is_available()
    else:
        ok = True
    if not ok:
        raise InputError(None, f"device {str(dev)!r} is not available to this PyTorch on this machine; "
                               "use --device cpu or auto")


def load_model(
    name: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = "auto",
    allow_download: bool = True,
) -> LoadedModel:
    """Build the named model (default LiteMedSAM) and load its weights strictly.

    With ``checkpoint`` the file is used as given and the architecture is recognised from its
    keys unless ``name`` is given; otherwise the registry's weights are located (packaged file
    or cache) or downloaded. A registry model whose weights are an adapter (``adapter_of``, e.g.
    ``litemedsam-clicks``) is its base model's weights with the adapter merged in.
    """
    from .zoo import ensure_weights

    dev = resolve_device(device)
    _check_available(dev)
    if checkpoint is not None:
        path = Path(checkpoint)
        adapter = _adapter(path)
        if adapter is not None:
            return _load_with_adapter(adapter, path, name, dev, allow_download)
        state = read_checkpoint(path)
        spec = spec_for_checkpoint(state, path, name)
    else:
        spec = get_spec(name or DEFAULT_MODEL)
        path = Path(ensure_weights(spec.weights, allow_download=allow_download))
        if spec.adapter_of is not None:
            adapter = _adapter(path)
            if adapter is None:
                raise CheckpointError(f"{path}: the weights of {spec.name} must be an adapter file of "
                                      f"{spec.adapter_of} (medsamkit fit, model.mode decoder-lora)")
            if adapter.get("base") != spec.adapter_of:
                raise CheckpointError(f"{path}: an adapter of {adapter.get('base')!r}, but {spec.name} "
                                      f"adapts {spec.adapter_of!r}")
            return _load_with_adapter(adapter, path, spec.adapter_of, dev, allow_download, spec)
        state = read_checkpoint(path)
    model = spec.build()
    load_state_dict_strict(model, state, source=str(path), model_name=spec.name)
    model.to(dev).eval()
    log.debug("model %s on %s, weights %s", spec.name, dev, path)
    return LoadedModel(model=model, spec=spec, weights_path=path, device=dev)


#: adapter files are small; larger files are ordinary checkpoints and are not read twice
_ADAPTER_MAX_BYTES = 16 * 2**20


def _adapter(path: Path) -> dict | None:
    from .adapters import read_adapter

    if not path.is_file() or path.stat().st_size > _ADAPTER_MAX_BYTES:
        return None
    return read_adapter(path)


def _load_with_adapter(adapter: dict, path: Path, name: str | None, dev: torch.device,
                       allow_download: bool, spec: ModelSpec | None = None) -> LoadedModel:
    """A registry model's official weights with an adapter file (:mod:`.adapters`) merged in;
    ``spec`` names the result (default: the base model's)."""
    from .adapters import apply_adapter

    base = load_model(name or adapter.get("base"), None, device="cpu", allow_download=allow_download)
    model = apply_adapter(base.model, adapter, source=str(path))
    model.to(dev).eval()
    log.debug("model %s with adapter %s on %s", base.spec.name, path, dev)
    return LoadedModel(model=model, spec=spec or base.spec, weights_path=path, device=dev)
