"""Export slices in MedSAM's ``.npy`` training layout (``imgs/`` and ``gts/``).

MedSAM's pre_CT_MR.py (the npy version) writes, for every slice that holds a label,
``imgs/NAME-ZZZ.npy``: the intensity-scaled slice repeated to 3 channels, resized to
1024 x 1024 (cubic, anti-aliased), min-max scaled to [0, 1], float, shape (1024, 1024, 3); and
``gts/NAME-ZZZ.npy``: the label map resized with nearest neighbour, uint8, (1024, 1024).

Differences, on purpose: ``ZZZ`` is the slice's z index in the volume (MedSAM numbers the
labelled slices 0, 1, 2 ... and loses their position); images are float32 rather than float64
(half the disk, the same values to float32 precision; MedSAM's loader casts to float32 anyway);
2D images are written as ``NAME.npy`` as MedSAM's npz_to_npy.py does for 2D archives; ``/`` in a
case id becomes ``_``. The resize is :class:`~medsamkit.preprocessing.geometry.MedSAMGeometry`'s,
so the export is what ``--model medsam-vit-b`` feeds the encoder. Read it back with the
``medsam-npy`` layout of :mod:`medsamkit.data.layouts`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medsamkit.io.writers import write_npy
from medsamkit.preprocessing.geometry import MedSAMGeometry

logger = logging.getLogger(__name__)


class MedsamNpyExport:
    """Writes slices into ``root/imgs`` and ``root/gts`` (each file atomically)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.geometry = MedSAMGeometry()

    @staticmethod
    def name(case_id: str, slice_index: int | None) -> str:
        """``CASE-ZZZ`` for a slice of a volume, ``CASE`` for a 2D image."""
        flat = case_id.replace("/", "_").replace("\\", "_")
        return flat if slice_index is None else f"{flat}-{slice_index:03d}"

    def write(self, case_id: str, slice_index: int | None, rgb: np.ndarray,
              label_map: np.ndarray) -> str:
        """Write one slice: ``rgb`` (H, W, 3) uint8 after intensity scaling, ``label_map``
        (H, W) integer labels. Returns the file name stem."""
        resized, frame = self.geometry.resize_image(rgb)
        image = resized.astype(np.float32)
        lo, hi = float(image.min()), float(image.max())
        image = (image - lo) / max(hi - lo, 1e-8)
        labels = self.geometry.resize_mask(label_map, frame)
        if labels.dtype != np.uint8:
            if labels.max(initial=0) > 255:
                logger.warning("%s: labels above 255 do not fit MedSAM's uint8 gts; kept as %s",
                               case_id, labels.dtype)
            else:
                labels = labels.astype(np.uint8)
        stem = self.name(case_id, slice_index)
        write_npy(self.root / "imgs" / f"{stem}.npy", image)
        write_npy(self.root / "gts" / f"{stem}.npy", labels)
        return stem
