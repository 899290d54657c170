"""Export a tuned model: weights in the official layout plus a JSON sidecar of what it is.

``export_net(net, "model.pth", info)`` writes ``model.pth`` (a raw state_dict: for the SAM
family the official ``image_encoder.``/``prompt_encoder.``/``mask_decoder.`` keys, LoRA merged;
loadable by ``load_model(checkpoint=...)`` and ``--checkpoint`` in every command, and by the
original tools) and ``model.pth.json`` (the sidecar: model name, preprocessing family, mode,
whether it was trained for automatic, prompt-free use, and the validation Dice). The official
layout has no room for metadata, hence the sidecar; a missing sidecar just means "an ordinary
box-prompted checkpoint".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import InputError
from ..io.writers import atomic_output
from ..models.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from .export_metadata import FORMAT, VERSION, is_automatic, metadata_path, read_export_metadata  # noqa: F401

def export_net(net: nn.Module, path: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``net.export_model()``'s weights to ``path`` and ``info`` to its sidecar, atomically."""
    path = save_checkpoint(net.export_model(), path)
    meta = {"format": FORMAT, "version": VERSION, **info}
    with atomic_output(metadata_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def load_baseline(checkpoint: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """A baseline network exported by ``medsamkit fit`` (strict load), in eval mode, and its metadata."""
    from ..models.baselines import BASELINES, build_baseline

    meta = read_export_metadata(checkpoint)
    if meta is None or meta.get("model") not in BASELINES:
        raise InputError(checkpoint, f"not an exported baseline (needs its {metadata_path(checkpoint).name} "
                                     f"naming one of {', '.join(BASELINES)})")
    net = build_baseline(meta["model"], int(meta.get("width", 32)))
    load_state_dict_strict(net, read_checkpoint(checkpoint), source=str(checkpoint), model_name=meta["model"])
    return net.eval(), meta
