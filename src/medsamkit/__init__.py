"""medsamkit: Segment-Anything-family models for medical image segmentation.

Importing the package has no side effects: no model is built, no file is read, no weights are
fetched and nothing heavy (torch, the models) is imported until a function asks for it. The short
API (:mod:`medsamkit.api`) is loaded on first use:

- ``medsamkit.load(model=None, checkpoint=None)``: a ready predictor (LiteMedSAM by default);
- ``medsamkit.segment(image, boxes=..., points=...)``: a 2D label map;
- ``medsamkit.segment_volume(volume, boxes=..., points=...)``: a 3D label map with its geometry;
- ``medsamkit.Session(image_or_volume)``: an interactive session (objects, clicks, undo).
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("load", "segment", "segment_volume", "Session")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'medsamkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))
