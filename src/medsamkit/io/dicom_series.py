"""Reading a DICOM series (one folder of slice files) as a volume, with SimpleITK + GDCM.

GDCM groups the files of a folder by SeriesInstanceUID and sorts each series' slices along the
slice normal by ImagePositionPatient (file names do not matter). The modality rescale
(RescaleSlope / RescaleIntercept) is applied, so CT comes back in Hounsfield units. The
returned array is ``[z, y, x]`` with z in that sorted order; spacing z is the distance between
slice positions (not SliceThickness). Only reading is supported; writing DICOM is out of scope.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsamkit.errors import InputError
from medsamkit.io._itk import itk_problem, quiet_itk

logger = logging.getLogger(__name__)

_TAG_DESCRIPTION = "0008|103e"
_TAG_MODALITY = "0008|0060"
_TAG_POSITION = "0020|0032"


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder.

    Attributes:
        uid: SeriesInstanceUID.
        description: SeriesDescription ("" when absent).
        modality: Modality, e.g. "CT" or "MR" ("" when absent).
        files: the slice files, sorted by position along the slice normal.
    """

    uid: str
    description: str
    modality: str
    files: tuple[str, ...]

    def summary(self) -> str:
        """One line for messages: UID, description and slice count."""
        desc = f" {self.description!r}" if self.description else ""
        return f"{self.uid}{desc} ({self.modality or 'unknown modality'}, {len(self.files)} slices)"


def list_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series in ``folder`` (not its sub-folders), sorted by UID.

    Raises :class:`InputError` naming the folder when it cannot be listed; returns an empty
    list when it holds no DICOM series.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    with quiet_itk(sitk):
        uids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        found = []
        for uid in uids:
            files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            if files:
                found.append(DicomSeries(uid, *_description_and_modality(sitk, files[0]), files))
    return found


def read_dicom_series(folder: str | Path, series: str | int | None = None) -> Any:
    """Read one series of ``folder`` into a 3D ``SimpleITK.Image`` (geometry included).

    ``series`` picks the series by SeriesInstanceUID or by its index in
    :func:`list_dicom_series`; it may be left out when the folder holds exactly one.
    Raises :class:`InputError` naming the folder when it holds no series, several series and
    no choice, an unknown choice, or slices that cannot be read.
    """
    import SimpleITK as sitk

    source = str(folder)
    available = list_dicom_series(folder)
    if not available:
        raise InputError(source, "no DICOM series found in the folder (DICOM files are read "
                                 "from the folder itself, not its sub-folders)")
    chosen = _choose(available, series, source)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    reader.MetaDataDictionaryArrayUpdateOn()  # per-slice tags, to check the slice positions
    try:
        with quiet_itk(sitk):
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(source, f"cannot read DICOM series {chosen.uid}: "
                                 f"{itk_problem(exc)}") from exc
    _check_positions(reader, len(chosen.files), source)
    logger.debug("%s: read DICOM series %s", source, chosen.summary())
    return image


def narrow_rescaled(array: np.ndarray) -> np.ndarray:
    """Store rescaled integer DICOM values as int16 (or uint16) when they fit.

    GDCM widens int16 CT data to int32 whenever slope/intercept could overflow 16 bits, even when
    the actual values (Hounsfield units) fit; this halves the memory of such volumes.
    """
    if not np.issubdtype(array.dtype, np.integer) or array.dtype.itemsize <= 2 or not array.size:
        return array
    lo, hi = int(array.min()), int(array.max())
    for dtype in (np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype)
    return array


# ----------------------------------------------------------------------------- helpers

def _description_and_modality(sitk: Any, path: str) -> tuple[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return "", ""
    values = [reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
              for tag in (_TAG_DESCRIPTION, _TAG_MODALITY)]
    return values[0], values[1]


def _choose(available: list[DicomSeries], series: str | int | None, source: str) -> DicomSeries:
    listing = "; ".join(f"[{i}] {s.summary()}" for i, s in enumerate(available))
    if series is None:
        if len(available) == 1:
            return available[0]
        raise InputError(source, f"the folder holds {len(available)} DICOM series: {listing}. "
                                 "Choose one by UID or index (series=...)")
    if isinstance(series, (int, np.integer)) and not isinstance(series, bool):
        if 0 <= series < len(available):
            return available[int(series)]
    else:
        for s in available:
            if s.uid == str(series).strip():
                return s
    raise InputError(source, f"no DICOM series {series!r} in the folder; it holds: {listing}")


def _check_positions(reader: Any, n_slices: int, source: str) -> None:
    """Warn when the slices are not evenly spaced (gaps, duplicates): z spacing is then wrong."""
    if n_slices < 3:
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, _TAG_POSITION).split("\\")]
                              for i in range(n_slices)])
    except (RuntimeError, ValueError):
        logger.warning("%s: slice positions (ImagePositionPatient) are missing or unreadable; "
                       "the z spacing may be wrong", source)
        return
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    if steps.min() < 1e-6 or steps.max() - steps.min() > 0.01 * steps.mean():
        logger.warning("%s: slices are unevenly spaced (steps %.4g to %.4g mm); the volume "
                       "uses one z spacing, so distances along z are approximate",
                       source, steps.min(), steps.max())
