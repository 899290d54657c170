"""Shared by the tests of benchmarks/: importing a benchmark script and the stub predictor of
tests/inference, and a synthetic ACDC-like volumes folder the scripts read instead of the shared data."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

import medsamkit
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume

ROOT = Path(__file__).resolve().parents[2]
CASE = "patient999_frame01"


def import_benchmark(name: str):
    """(the module benchmarks/<name>.py, the StubPredictor class)."""
    sys.path.insert(0, str(ROOT / "tests" / "inference"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        module = importlib.import_module(name)
        from stub_predictor import StubPredictor
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
        sys.path.remove(str(ROOT / "tests" / "inference"))
    return module, StubPredictor


def fake_volumes(monkeypatch, bench, folder: Path, image: np.ndarray, truth: np.ndarray,
                 geometry: Geometry | None = None, stub=None) -> Path:
    """Write one ACDC case under ``folder/acdc-mr`` and point ``bench`` (benchmarks/interactive.py)
    at it; with ``stub`` (a predictor class) ``medsamkit.load`` returns a new one of it."""
    geometry = geometry or Geometry.identity()
    root = folder / "acdc-mr"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    write_volume(root / "imagesTr" / f"{CASE}_0000.nii.gz", image.astype(np.float32), geometry)
    write_volume(root / "labelsTr" / f"{CASE}.nii.gz", truth, geometry, mask=True)
    monkeypatch.setattr(bench, "VOLUMES", folder)
    if stub is not None:
        monkeypatch.setattr(medsamkit, "load", lambda *a, **k: stub())
    return folder
