"""The one place that makes predictors: picks the predictor for a loaded model by its family and
the engine its image encoder runs on (:mod:`medsamkit.inference.engines`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..models.loader import LoadedModel
from ..preprocessing.geometry import geometry_for

log = logging.getLogger(__name__)


def make_predictor(loaded: LoadedModel, encoder: Callable[[torch.Tensor], object] | None = None, *,
                   backend: str = "torch", precision: str | None = None, threads: int | None = None,
                   calibration: Sequence[np.ndarray] = (), mode: str = "latency"):
    """A :class:`~medsamkit.inference.predictor.Predictor` for the SAM family (SAM, MedSAM,
    LiteMedSAM) or a :class:`~medsamkit.inference.sam2_predictor.SAM2Predictor` for SAM2,
    SAM2.1 and MedSAM2; both have the same ``embed``/``set_image``/``predict`` contract.

    ``encoder`` replaces the model's image encoder (an inference engine); for SAM2 it returns
    the three feature maps of :meth:`medsamkit.models.sam2.base.SAM2Base.encode`. Without it,
    ``backend`` (``auto``, ``torch``, ``onnx``, ``openvino``) and ``precision`` choose an engine;
    the predictor's ``engine`` attribute says which one runs. ``mode="throughput"`` (folders)
    lets an OpenVINO encoder take several images at once (:meth:`Predictor.embed_async`).
    """
    from .engines import EngineChoice, build_decoder, build_first, choose_engines, exact_encoder
    from .predictor import Predictor  # looked up at call time (tests substitute it)

    choice = EngineChoice("custom" if encoder is not None else "torch", "fp32")
    if encoder is None and (backend != "torch" or precision not in (None, "fp32")):
        choice, encoder = build_first(choose_engines(backend, precision, loaded), loaded, threads,
                                      calibration=calibration, mode=mode)
    log.info("image encoder engine: %s", choice)
    decoder = build_decoder(choice, loaded, threads, spin=mode == "latency") if loaded.spec.family != "sam2" else None
    geometry = geometry_for(loaded.spec.preprocessing)
    if loaded.spec.family == "sam2":
        from .sam2_predictor import SAM2Predictor

        predictor = SAM2Predictor(loaded.model, geometry, encoder)  # type: ignore[arg-type]
    else:
        predictor = Predictor(loaded.model, geometry, encoder)  # type: ignore[arg-type]
        predictor.box_decoder = decoder
        # auto's bf16 keeps the masks: those too close to call are decoded from fp32; a precision
        # asked for by name is run as asked
        predictor.exact_encoder = exact_encoder(choice, loaded, threads) if precision is None else None
    predictor.engine = choice
    predictor.grow_px = loaded.spec.grow_px
    predictor.keep_topology = loaded.spec.keep_topology
    return predictor
