"""The sidecar of a weights file exported by ``medsamkit fit`` (``model.pth`` -> ``model.pth.json``):
what the CLI reads before it decides how to load a checkpoint. No torch import, so a run that
needs no model (the torch-free fast path, :mod:`medsamkit.inference.fast2d`) can check it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError

FORMAT = "medsamkit-export"
VERSION = 1

#: the names of :data:`medsamkit.models.baselines.BASELINES` (a test keeps them equal)
BASELINE_NAMES: tuple[str, ...] = ("unet", "prompted-resnet")


def metadata_path(checkpoint: str | os.PathLike) -> Path:
    """The sidecar of a weights file: ``model.pth`` -> ``model.pth.json``."""
    path = Path(checkpoint)
    return path.with_name(path.name + ".json")


def read_export_metadata(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``checkpoint`` as a dict, or None when there is none.

    Raises:
        InputError: the sidecar exists but is not a medsamkit export record.
    """
    meta_file = metadata_path(checkpoint)
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(meta_file, f"cannot read the export metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(meta_file, f"not a {FORMAT} metadata file")
    return meta


def is_automatic(checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``checkpoint`` was exported by an automatic-mode (prompt-free) fine-tuning."""
    meta = None if checkpoint is None else read_export_metadata(checkpoint)
    return bool(meta and meta.get("automatic"))


def is_baseline_checkpoint(checkpoint: str | os.PathLike | None) -> bool:
    """Whether ``checkpoint`` is a baseline exported by ``medsamkit fit`` (its sidecar says so)."""
    meta = None if checkpoint is None else read_export_metadata(checkpoint)
    return bool(meta and meta.get("model") in BASELINE_NAMES)
