"""The one place that picks the predictor for a loaded model by its family."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.loader import LoadedModel
from ..preprocessing.geometry import geometry_for


def make_predictor(loaded: LoadedModel, encoder: Callable[[torch.Tensor], object] | None = None):
    """A :class:`~medsamkit.inference.predictor.Predictor` for the SAM family (SAM, MedSAM,
    LiteMedSAM) or a :class:`~medsamkit.inference.sam2_predictor.SAM2Predictor` for SAM2,
    SAM2.1 and MedSAM2; both have the same ``embed``/``set_image``/``predict`` contract.

    ``encoder`` replaces the model's image encoder (an inference engine); for SAM2 it returns
    the three feature maps of :meth:`medsamkit.models.sam2.base.SAM2Base.encode`.
    """
    from .predictor import Predictor  # looked up at call time (tests substitute it)

    geometry = geometry_for(loaded.spec.preprocessing)
    if loaded.spec.family == "sam2":
        from .sam2_predictor import SAM2Predictor

        return SAM2Predictor(loaded.model, geometry, encoder)  # type: ignore[arg-type]
    return Predictor(loaded.model, geometry, encoder)  # type: ignore[arg-type]
