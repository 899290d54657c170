"""Reading and writing 3D volumes: NIfTI, MetaImage, NRRD and DICOM series folders.

Like nnU-Net's image readers, :func:`read_volume` returns the voxel array and its properties (a
:class:`~medsamkit.io.geometry.Geometry`), and :func:`write_volume` takes them back, so spacing,
origin and direction reach every output. The format is chosen by the file ending
(:data:`VOLUME_SUFFIXES`); a folder is read as a DICOM series. SimpleITK does all the work.

Conventions (see :mod:`medsamkit.io.geometry`): arrays are ``[z, y, x]`` as
``SimpleITK.GetArrayFromImage`` returns them; spacing in mm in the same order; origin and
direction in ITK's LPS patient coordinates (NIfTI's RAS is converted by SimpleITK on reading and
back on writing, so a NIfTI written here has the same affine as the one it came from).

Values are returned as stored: the on-disk dtype is kept (int16 CT stays int16) unless a rescale
makes values fractional (NIfTI ``scl_slope``/``scl_inter``, DICOM RescaleSlope/Intercept); DICOM
CT comes back in Hounsfield units. A 2D file becomes a ``(1, y, x)`` volume; 4D files and files
with several components per voxel are refused. Every problem a user can cause raises
:class:`~medsamkit.errors.InputError` naming the file or folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medsamkit.errors import InputError
from medsamkit.io._itk import itk_problem
from medsamkit.io.dicom_series import narrow_rescaled, read_dicom_series
from medsamkit.io.geometry import Geometry
from medsamkit.io.nifti_values import count_nonfinite
from medsamkit.io.writers import atomic_output, check_not_input

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: File endings read and written as volumes (lower case), with the ITK reader used for each.
#: A folder is read as a DICOM series (reading only).
_IMAGE_IO: dict[str, str] = {
    ".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO",
    ".mha": "MetaImageIO", ".mhd": "MetaImageIO",
    ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
}
VOLUME_SUFFIXES: tuple[str, ...] = tuple(_IMAGE_IO)

#: Array dtypes that can be written (others raise ValueError; convert first).
_WRITABLE_DTYPES = frozenset(np.dtype(t) for t in (
    np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
    np.float32, np.float64))


def volume_suffix(path: PathLike) -> str | None:
    """The volume file ending of ``path`` (lower case, e.g. ``".nii.gz"``), or None."""
    name = os.fspath(path).lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def is_volume_path(path: PathLike) -> bool:
    """True when :func:`read_volume` handles ``path``: a volume file ending or a folder."""
    return volume_suffix(path) is not None or Path(path).is_dir()


def read_volume(path: PathLike, *, series: str | int | None = None
                ) -> tuple[np.ndarray, Geometry]:
    """Read a volume file or a DICOM series folder into a ``[z, y, x]`` array and its geometry.

    Args:
        path: a ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd`` (with its data file), ``.nrrd`` or
            ``.nhdr`` file, or a folder holding a DICOM series.
        series: DICOM folders only: which series to read, by SeriesInstanceUID or by index in
            the listing that the error for a folder with several series shows.

    Returns:
        ``(array, geometry)``; the array keeps the stored dtype (see the module docstring),
        spacing is in mm in array order (z, y, x).

    Raises:
        InputError: naming ``path`` when it is missing, empty, of an unsupported kind, corrupt,
            4D or multi-component, or (folders) holds no series or several without ``series``.
    """
    import SimpleITK as sitk

    source = os.fspath(path)
    p = Path(source)
    if not p.exists():
        raise InputError(source, "file or folder not found")
    if p.is_dir():
        image = read_dicom_series(p, series)
    else:
        if series is not None:
            raise InputError(source, "series= only applies to DICOM folders, not to a file")
        reader = _file_reader(sitk, p, source)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise InputError(source, f"cannot read the volume (corrupt or truncated?): "
                                     f"{itk_problem(exc)}") from exc
    shape, geometry = _shape_and_geometry(image, source)
    array = sitk.GetArrayFromImage(image).reshape(shape)
    if p.is_dir():
        array = narrow_rescaled(array)
    _refuse_nonfinite(array, p, source)
    if geometry.is_identity_affine():
        logger.warning("%s: no spacing stored (identity affine); distances in voxels", source)
    logger.debug("read %s: %s %s spacing(z,y,x)=%s", source, array.shape, array.dtype,
                 geometry.spacing)
    return array, geometry


def _refuse_nonfinite(array: np.ndarray, path: Path, source: str) -> None:
    """Raise :class:`InputError` naming the file when it stores NaN or infinite values, with their
    count (as 2D images are refused). ITK's NIfTI reader reads them as 0, so NIfTI files are
    scanned as stored (:func:`~medsamkit.io.nifti_values.count_nonfinite`)."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    if volume_suffix(path) in (".nii", ".nii.gz"):
        bad = count_nonfinite(path)
    else:
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InputError(source, f"the volume contains {bad} NaN or infinite values")


def read_volume_geometry(path: PathLike, *, series: str | int | None = None
                         ) -> tuple[tuple[int, int, int], Geometry]:
    """The ``(z, y, x)`` shape and geometry of a volume, reading only the header of files.

    (A DICOM folder is read completely.) Raises :class:`InputError` like :func:`read_volume`.
    """
    import SimpleITK as sitk

    source = os.fspath(path)
    p = Path(source)
    if p.is_dir() or not p.exists() or series is not None:
        array, geometry = read_volume(p, series=series)
        return tuple(array.shape), geometry  # type: ignore[return-value]
    reader = _file_reader(sitk, p, source)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(source, f"cannot read the volume header (corrupt?): "
                                 f"{itk_problem(exc)}") from exc
    return _shape_and_geometry(reader, source)


def write_volume(path: PathLike, array: np.ndarray, geometry: Geometry | None = None,
                 reference: PathLike | None = None, *, mask: bool = False) -> Path:
    """Write a ``[z, y, x]`` (or ``[y, x]``) array with its geometry, atomically.

    The format follows the ending of ``path`` (:data:`VOLUME_SUFFIXES`; DICOM output is not
    supported); data is compressed where the format allows. The file appears only when complete
    and an existing file is left untouched if writing fails. For ``.mhd``/``.nhdr`` the data
    file (``.zraw``/``.raw.gz``) is moved into place just before the header.

    Args:
        path: output file.
        array: 3D ``[z, y, x]`` array, or 2D ``[y, x]`` written as one slice. bool becomes
            uint8; other dtypes are written as they are.
        geometry: spacing/origin/direction to store; when None it is taken from ``reference``
            (whose shape must then match). A mask written with the geometry its image was read
            with reproduces that image's spacing, origin and direction exactly.
        reference: the input the array was computed from. Writing over it is refused.
        mask: store a label map: values must be non-negative integers and are written as uint8
            (uint16 when a label exceeds 255, uint32 beyond 65535).

    Returns:
        ``Path(path)``.

    Raises:
        InputError: naming ``path`` for an unsupported ending, an output equal to ``reference``,
            a shape differing from ``reference``, or a failed write.
        ValueError: for arrays that are not 2D/3D, empty, of an unsupported dtype, or (with
            ``mask``) not non-negative integer labels; or when neither geometry nor reference
            is given.
    """
    import SimpleITK as sitk

    target = Path(path)
    suffix = volume_suffix(target)
    if suffix is None:
        hint = (" (writing DICOM is not supported)" if target.suffix.lower() in (".dcm", "")
                else "")
        raise InputError(target, f"unsupported volume file ending{hint}; use one of "
                                 f"{', '.join(VOLUME_SUFFIXES)}")
    if reference is not None:
        check_not_input(target, reference)
    arr = _writable_array(array, mask)
    if geometry is None:
        if reference is None:
            raise ValueError("write_volume needs a geometry or a reference to take it from")
        ref_shape, geometry = read_volume_geometry(reference)
        if ref_shape != arr.shape:
            raise InputError(target, f"the array has shape {arr.shape} but the reference "
                                     f"{os.fspath(reference)} has shape {ref_shape} (z, y, x)")
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(geometry.itk_spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    try:
        _write_atomically(sitk, image, target)
    except RuntimeError as exc:
        raise InputError(target, f"cannot write the volume: {itk_problem(exc)}") from exc
    except OSError as exc:
        raise InputError(target, f"cannot write the volume: {exc.strerror or exc}") from exc
    logger.debug("wrote %s: %s %s", target, arr.shape, arr.dtype)
    return target


# ----------------------------------------------------------------------------- reading helpers

def _file_reader(sitk: Any, p: Path, source: str) -> Any:
    """A SimpleITK reader for the volume file ``p``, its ImageIO chosen by the file ending."""
    suffix = volume_suffix(p)
    if suffix is None:
        lower = p.name.lower()
        if lower.endswith((".dcm", ".dicom")):
            problem = ("is a single DICOM file; pass the folder that holds the whole series "
                       "(or read it as a 2D image)")
        elif lower.endswith((".raw", ".zraw", ".raw.gz", ".img", ".hdr")):
            problem = "is a data file without its header; pass the .mhd or .nhdr header file"
        else:
            problem = (f"unsupported volume file ending; supported: {', '.join(VOLUME_SUFFIXES)}"
                       " or a folder holding a DICOM series")
        raise InputError(source, problem)
    if p.stat().st_size == 0:
        raise InputError(source, "the file is empty (0 bytes)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    reader.SetImageIO(_IMAGE_IO[suffix])
    return reader


def _shape_and_geometry(image: Any, source: str) -> tuple[tuple[int, int, int], Geometry]:
    """``(z, y, x)`` shape and geometry of a SimpleITK image or header-read ImageFileReader."""
    dim = image.GetDimension()
    components = (image.GetNumberOfComponentsPerPixel()
                  if hasattr(image, "GetNumberOfComponentsPerPixel")
                  else image.GetNumberOfComponents())
    size = tuple(int(n) for n in image.GetSize())
    if dim >= 4:
        raise InputError(source, f"has {dim} dimensions (time/channels); pass one volume "
                                 f"(ITK size {' x '.join(map(str, size))})")
    if dim < 2:
        raise InputError(source, f"has {dim} dimension(s); a 2D image or 3D volume is needed")
    if components != 1:
        raise InputError(source, f"has {components} values per voxel (vector or colour data); "
                                 "pass one grey-value volume")
    if dim == 3:
        geometry = Geometry.from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
        return (size[2], size[1], size[0]), geometry
    (sx, sy), (ox, oy), d = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
    block = np.array(d, dtype=np.float64).reshape(2, 2)
    if not np.allclose(block.T @ block, np.eye(2), atol=1e-4):
        logger.warning("%s: the 2D direction %s is not a rotation; using the identity",
                       source, tuple(d))
        block = np.eye(2)
    direction = (block[0, 0], block[0, 1], 0.0, block[1, 0], block[1, 1], 0.0, 0.0, 0.0, 1.0)
    return (1, size[1], size[0]), Geometry.from_itk((sx, sy, 1.0), (ox, oy, 0.0), direction)


# ----------------------------------------------------------------------------- writing helpers

def _writable_array(array: Any, mask: bool) -> np.ndarray:
    """``array`` as a 3D array of a dtype SimpleITK writes (label dtype when ``mask``)."""
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(f"write_volume needs a non-empty [z, y, x] or [y, x] array, "
                         f"got shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if mask:
        arr = _label_array(arr)
    if arr.dtype.newbyteorder("=") not in _WRITABLE_DTYPES:
        raise ValueError(f"cannot write {arr.dtype} voxels; convert to one of "
                         f"{', '.join(sorted(str(t) for t in _WRITABLE_DTYPES))}")
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _label_array(arr: np.ndarray) -> np.ndarray:
    """Labels as the smallest unsigned type holding them (uint8, uint16 or uint32)."""
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"a mask must hold integer labels, got {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ValueError("a mask must hold integer labels; the float array has fractions, "
                             "NaN or infinity")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"a mask must hold non-negative labels, found {lo}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return arr.astype(dtype)
    raise ValueError(f"label {hi} is too large for a mask (at most {np.iinfo(np.uint32).max})")


def _write_atomically(sitk: Any, image: Any, target: Path) -> None:
    """Write into a hidden folder beside ``target`` (so the file name, and the format SimpleITK
    derives from it, stays exactly ``target.name``: ``.nii.gz`` included), then move it in."""
    with atomic_output(target) as tmp:  # creates the parent folder, refuses a folder target
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp",
                                     dir=target.parent))
        try:
            written = work / target.name
            sitk.WriteImage(image, str(written), useCompression=True)
            if not written.is_file():
                raise RuntimeError(f"SimpleITK wrote nothing to {written}")
            for extra in sorted(work.iterdir()):  # data files of .mhd / .nhdr headers
                if extra.name != target.name:
                    os.replace(extra, target.parent / extra.name)
            os.replace(written, tmp)
        finally:
            shutil.rmtree(work, ignore_errors=True)
