"""Options shared by several verbs: model choice, device, threads, intensity scheme.

This module is imported to build the parser (``medsamkit --help``), so it imports nothing heavy
at module level: option choices come from :mod:`medsamkit.choices`; torch, the models and the
predictors are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import BACKENDS, DEFAULT_BACKEND, DEFAULT_MODEL, DEVICES, MODALITIES, MODEL_NAMES, PRECISIONS
from ..errors import InputError, MedsamkitError

if TYPE_CHECKING:
    from ..inference.baseline import BaselinePredictor
    from ..inference.fast2d import EngineRequest
    from ..inference.predictor import Predictor
    from ..models.loader import LoadedModel

log = logging.getLogger("medsamkit.cli")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list(MODEL_NAMES), default=None,
                   help=f"registry model (default {DEFAULT_MODEL}; with --checkpoint: recognised from the file)")
    g.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="weights file to use instead of the registry's (raw, {'model': ...} or 'module.'-prefixed)")
    g.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="auto picks cuda, then mps, then cpu")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    g.add_argument("--backend", choices=list(BACKENDS), default=DEFAULT_BACKEND,
                   help="image encoder runtime: auto (default: on the CPU the fastest installed engine that keeps "
                        "the masks, OpenVINO > ONNX Runtime > torch; torch on a GPU), torch, onnx, openvino. "
                        "Engines come with pip install -e '.[engines]'; exported and compiled once, cached")
    g.add_argument("--precision", choices=[p for p in PRECISIONS if p != "int8"], default=None,
                   help="image encoder precision: fp32, or bf16 (openvino on a CPU with BF16, or torch autocast); "
                        "default: the backend's fastest that keeps the masks")


def add_intensity_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("intensity")
    g.add_argument("--modality", choices=list(MODALITIES), default=None,
                   help="intensity scheme: ct (window), mr/us/... (0.5-99.5 percentile clip), rgb, minmax; "
                        "default: by image kind (DICOM CT -> abdomen window, 16-bit -> percentiles, 8-bit as is)")
    g.add_argument("--window", default=None, metavar="PRESET|L,W",
                   help="CT window preset (abdomen, liver, lung, brain, bone, mediastinum) or level,width")


def check_readable(path: str | os.PathLike, missing: str = "no such file or folder") -> Path:
    """``path`` as a Path, after checking that it exists (else InputError(path, missing)) and can be
    read: run before any model loads, so a wrong path fails at once."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, missing)
    if not os.access(path, os.R_OK):
        raise InputError(path, "cannot be read (permission denied)")
    return path


def check_model_options(args: argparse.Namespace) -> None:
    """Checks of the model options that need no model: run them before anything is loaded."""
    if args.threads is not None and args.threads < 1:
        raise MedsamkitError(f"--threads {args.threads}: give a positive number of CPU threads")
    if args.checkpoint is not None:
        path = check_readable(args.checkpoint, "checkpoint file not found")
        if path.is_dir():
            raise InputError(path, "is a folder; --checkpoint takes a weights file")


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise MedsamkitError(f"--threads {args.threads}: give a positive number of CPU threads")
        torch.set_num_threads(args.threads)


def make_2d_predictor(args: argparse.Namespace, mode: str = "latency") -> Predictor | BaselinePredictor:
    """The predictor for 2D segmentation: a SAM-family model (:func:`make_predictor`), or a
    baseline exported by ``medsamkit fit`` when --checkpoint is one (its sidecar says so).
    ``mode="throughput"``: a folder run (an OpenVINO encoder then takes several images at once)."""
    import torch

    from ..inference.baseline import load_baseline_predictor
    from ..training.export_metadata import is_baseline_checkpoint
    from ..models.loader import resolve_device

    if not is_baseline_checkpoint(args.checkpoint):
        return make_predictor(args, mode)[0]
    if getattr(args, "backend", "auto") not in ("auto", "torch") or getattr(args, "precision", None):
        raise MedsamkitError(f"--backend/--precision are for the SAM-family image encoder; "
                             f"{args.checkpoint} is a baseline: drop them")
    _set_threads(args)
    predictor = load_baseline_predictor(args.checkpoint, resolve_device(args.device))
    log.info("baseline %s on %s (%d threads); weights %s", predictor.name, predictor.device,
             torch.get_num_threads(), args.checkpoint)
    return predictor


def make_predictor(args: argparse.Namespace, mode: str = "latency") -> tuple[Predictor, LoadedModel]:
    import torch

    from ..inference.factory import make_predictor as build_predictor
    from ..models.loader import load_model

    _set_threads(args)
    loaded = load_model(args.model, args.checkpoint, device=args.device)
    log.info("model %s on %s (%d threads); weights %s", loaded.spec.name, loaded.device,
             torch.get_num_threads(), loaded.weights_path)
    predictor = build_predictor(loaded, backend=getattr(args, "backend", DEFAULT_BACKEND),
                                precision=getattr(args, "precision", None), threads=args.threads, mode=mode)
    if loaded.device.type == "cpu":  # engines built: the next run asking the same may skip torch
        from ..inference.fast2d import remember_engines

        remember_engines(engine_request(args), loaded, predictor)
    return predictor, loaded


def engine_request(args: argparse.Namespace) -> EngineRequest:
    """The model options of ``args``, as the torch-free fast path keys its records."""
    from ..inference.fast2d import EngineRequest

    return EngineRequest(args.model, args.checkpoint, args.device, getattr(args, "backend", DEFAULT_BACKEND),
                         getattr(args, "precision", None), args.threads)
