"""Reading 2D images (PNG, JPEG, BMP, TIFF, NPY, NPZ, single-slice DICOM) into :class:`Image2D`.

Every reader returns pixel values exactly as stored (after the DICOM modality rescale), with
their dtype kept: 16-bit PNG and TIFF stay ``uint16``, CT slices come back in Hounsfield units.
Intensity scaling to 0..255 is *not* done here; see :mod:`medsamkit.preprocessing.intensity`.

Array layout: ``H x W`` for grey images, ``H x W x 3`` (RGB order, never BGR) for colour.
Alpha channels are dropped (RGBA -> RGB, grey+alpha -> grey). Every problem a user can cause
(missing, corrupt or unsupported file, unusable array) raises
:class:`~medsamkit.errors.InputError` naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from medsamkit.errors import InputError

logger = logging.getLogger(__name__)

#: Allowed values of :attr:`Image2D.kind`.
KINDS: tuple[str, ...] = ("rgb8", "grey8", "grey16", "ct", "float")

#: File suffixes :func:`read_image_2d` understands (lower case). Files without a suffix, or
#: with an unknown one but a DICOM preamble, are read as DICOM.
SUPPORTED_2D_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy", ".npz", ".dcm", ".dicom",
)

#: Keys tried, in this order, to find the image inside an ``.npz`` archive.
NPZ_IMAGE_KEYS: tuple[str, ...] = ("img", "image", "imgs")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_GREY_ALPHA = 4  # IHDR colour type of grey + alpha PNGs


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing arrays field-wise is meaningless
class Image2D:
    """A 2D image as stored on disk.

    Attributes:
        pixels: ``H x W`` (grey) or ``H x W x 3`` (RGB) array; values as stored after the DICOM
            rescale (CT in Hounsfield units); dtype preserved (uint8, uint16, int16, float32 ...).
        source: the file path as given by the caller (for messages), or None for arrays.
        kind: one of :data:`KINDS`: ``"rgb8"`` (uint8 RGB), ``"grey8"`` (uint8 grey),
            ``"grey16"`` (any other integer data, including 16-bit colour), ``"ct"`` (CT in HU)
            or ``"float"`` (floating-point data).
        spacing: (row, col) pixel size in mm; from DICOM PixelSpacing when present, else 1.0.
        window: DICOM (WindowCenter, WindowWidth), first values, when the file has them.
    """

    pixels: np.ndarray
    source: str | None
    kind: str
    spacing: tuple[float, float] = (1.0, 1.0)
    window: tuple[float, float] | None = None


def validate_image_2d(img: Image2D) -> None:
    """Check that ``img`` can be segmented; raise :class:`InputError` (naming its source) if not.

    Checks: numeric non-empty array, ``H x W`` or ``H x W x 3`` layout, a known ``kind`` that fits
    the dtype, positive finite spacing, no NaN or inf, and not constant (all pixels equal).
    """
    src, px = img.source, img.pixels
    if not isinstance(px, np.ndarray):
        raise InputError(src, f"pixels must be a numpy array, got {type(px).__name__}")
    _check_dtype(px, src)
    if px.size == 0:
        raise InputError(src, f"the image is empty (shape {px.shape})")
    if px.ndim == 3 and px.shape[2] != 3:
        raise InputError(src, f"the image has {px.shape[2]} channels (shape {px.shape}); "
                              "an Image2D holds H x W grey or H x W x 3 RGB pixels")
    if px.ndim not in (2, 3):
        raise InputError(src, f"the image has {px.ndim} dimensions (shape {px.shape}); "
                              "expected H x W or H x W x 3")
    if img.kind not in KINDS:
        raise InputError(src, f"unknown image kind {img.kind!r}; "
                              f"expected one of {', '.join(KINDS)}")
    if img.kind in ("rgb8", "grey8"):
        want_ndim = 3 if img.kind == "rgb8" else 2
        if px.dtype != np.uint8 or px.ndim != want_ndim:
            raise InputError(src, f"kind {img.kind!r} needs uint8 pixels with {want_ndim} "
                                  f"dimensions, got {px.dtype} with shape {px.shape}")
    if len(img.spacing) != 2 or not all(np.isfinite(s) and s > 0 for s in img.spacing):
        raise InputError(src, f"pixel spacing must be two positive numbers, got {img.spacing}")
    check_pixel_values(px, src, rgb=px.ndim == 3)


def check_pixel_values(px: np.ndarray, source: str | os.PathLike | None, noun: str = "image",
                       unit: str = "pixel", rgb: bool = False) -> None:
    """Raise :class:`InputError` naming ``source`` when ``px`` holds NaN or infinite values
    (saying how many) or is constant (nothing to segment). ``rgb``: the last axis is colour, a
    constant image has one colour. Used for 2D images and for volumes (noun "volume", unit "voxel")."""
    if np.issubdtype(px.dtype, np.floating) and not np.isfinite(px).all():
        n_bad = int(px.size - np.count_nonzero(np.isfinite(px)))
        raise InputError(source, f"the {noun} contains {n_bad} NaN or infinite values")
    first = px.reshape(-1, 3)[0] if rgb else px.flat[0]
    if np.all(px == first):
        raise InputError(source, f"the {noun} is constant (every {unit} equals {first.tolist()}); "
                                 "there is nothing to segment")


def image_2d_from_array(
    array: Any,
    source: str | os.PathLike | None = None,
    *,
    kind: str | None = None,
    spacing: tuple[float, float] = (1.0, 1.0),
    window: tuple[float, float] | None = None,
) -> Image2D:
    """Build and validate an :class:`Image2D` from an array.

    Accepted layouts: ``H x W``, ``H x W x 1``, ``1 x H x W`` (grey), ``H x W x 3`` (RGB) and
    ``H x W x 4`` (RGBA, alpha dropped). ``kind`` is inferred when not given: uint8 RGB ->
    ``"rgb8"``, uint8 grey -> ``"grey8"``, other integers -> ``"grey16"``, floats -> ``"float"``.
    Raises :class:`InputError` naming ``source`` for anything that is not a usable 2D image.
    """
    src = None if source is None else os.fspath(source)
    pixels = _normalise_layout(np.asarray(array), src)
    if kind is None:
        kind = _infer_kind(pixels)
    spacing = tuple(float(s) for s in spacing)  # validated (2 positive values) below
    img = Image2D(pixels=pixels, source=src, kind=kind, spacing=spacing, window=window)
    validate_image_2d(img)
    return img


def read_image_2d(path: str | os.PathLike) -> Image2D:
    """Read one 2D image file; the format is chosen by suffix (see :data:`SUPPORTED_2D_SUFFIXES`).

    Returns pixels as stored (dtype kept, RGB order, alpha dropped, DICOM rescale applied).
    Raises :class:`InputError` naming the file when it is missing, a folder, unsupported,
    unreadable, a volume rather than a 2D image, or unusable (see :func:`validate_image_2d`).
    """
    source = os.fspath(path)
    p = Path(source)
    if not p.exists():
        raise InputError(source, "file not found")
    if p.is_dir():
        raise InputError(source, "is a folder, not an image file")
    if p.stat().st_size == 0:
        raise InputError(source, "the file is empty (0 bytes)")
    suffix = p.suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        head = _read_bytes(p, source, 132)
        if suffix == "":
            reader = _sniff_reader(head) or _read_dicom
        elif head[128:132] == b"DICM":
            reader = _read_dicom
        else:
            raise InputError(source, f"unsupported file type {suffix!r}; supported: "
                                     f"{', '.join(SUPPORTED_2D_SUFFIXES)} "
                                     "(or DICOM without suffix)")
    img = reader(p, source)
    logger.debug("read %s: %s %s kind=%s spacing=%s", source, img.pixels.shape,
                 img.pixels.dtype, img.kind, img.spacing)
    return img


# ----------------------------------------------------------------------------- array helpers

def _check_dtype(arr: np.ndarray, src: str | None) -> None:
    if arr.dtype == np.bool_:
        raise InputError(src, "the array is boolean (a mask?), not an image")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(src, f"unsupported pixel data type {arr.dtype}; "
                              "expected integer or floating-point values")


def _normalise_layout(arr: np.ndarray, src: str | None) -> np.ndarray:
    """Bring ``arr`` to ``H x W`` or ``H x W x 3``; raise InputError for anything else."""
    _check_dtype(arr, src)
    if arr.size == 0:
        raise InputError(src, f"the image is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[0] == 1 and arr.shape[2] not in (3, 4):
        arr = arr[0]
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        hint = " (a 3D volume or a stack?)" if arr.ndim > 3 else ""
        raise InputError(src, f"the array has {arr.ndim} dimensions (shape {arr.shape}){hint}; "
                              "a 2D image is H x W, H x W x 3 (RGB) or H x W x 4 (RGBA)")
    channels = arr.shape[2]
    if channels == 3:
        return arr
    if channels == 4:
        return np.ascontiguousarray(arr[:, :, :3])
    if arr.shape[0] in (3, 4) or channels > 16:
        hint = ("looks channel-first (C x H x W); save it as H x W x C"
                if arr.shape[0] in (3, 4) else "looks like a 3D volume, not a 2D image")
        raise InputError(src, f"the array has shape {arr.shape}: it {hint}")
    raise InputError(src, f"the image has {channels} channels (shape {arr.shape}); "
                          "expected 1 (grey), 3 (RGB) or 4 (RGBA)")


def _infer_kind(pixels: np.ndarray) -> str:
    if np.issubdtype(pixels.dtype, np.floating):
        return "float"
    if pixels.dtype == np.uint8:
        return "rgb8" if pixels.ndim == 3 else "grey8"
    return "grey16"


def _bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Reorder cv2's BGR / BGRA channels to RGB / RGBA."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        return np.ascontiguousarray(arr[:, :, ::-1])
    if arr.ndim == 3 and arr.shape[2] == 4:
        return np.ascontiguousarray(arr[:, :, [2, 1, 0, 3]])
    return arr


# ----------------------------------------------------------------------------- file readers

def _read_bytes(p: Path, source: str, n: int = -1) -> bytes:
    """The first ``n`` bytes of the file (all when ``n`` is -1)."""
    try:
        with open(p, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise InputError(source, f"cannot read the file: {exc.strerror or exc}") from exc


def _sniff_reader(head: bytes) -> Callable[[Path, str], Image2D] | None:
    """Pick a reader from a file's first bytes (for files without a suffix)."""
    if head.startswith(_PNG_MAGIC):
        return _read_png
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return _read_tiff
    if head.startswith(b"\x93NUMPY"):
        return _read_npy
    if head.startswith(b"PK\x03\x04"):
        return _read_npz
    if head.startswith((b"\xff\xd8\xff", b"BM")):
        return _read_pil
    return None


def _cv2_decode(data: bytes) -> np.ndarray | None:
    """Decode with OpenCV, keeping bit depth and channels (BGR order); None on failure."""
    import cv2

    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None


def _read_png(p: Path, source: str) -> Image2D:
    data = _read_bytes(p, source)
    arr = _cv2_decode(data)
    if arr is None:
        raise InputError(source, "cannot decode the image (corrupt or truncated PNG?)")
    arr = _bgr_to_rgb(arr)
    # cv2 expands grey+alpha to BGRA; the IHDR colour type (byte 25) tells us it was grey.
    if data.startswith(_PNG_MAGIC) and len(data) > 25 and data[25] == _PNG_GREY_ALPHA:
        arr = arr[:, :, 0] if arr.ndim == 3 else arr
    return image_2d_from_array(arr, source)


def _pil_to_array(im: Any) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "RGB", "F") or mode.startswith("I"):
        arr = np.asarray(im)
        return arr.astype(arr.dtype.newbyteorder("=")) if not arr.dtype.isnative else arr
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel(0))
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("RGBA", "RGBa", "RGBX", "PA") or (mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))[:, :, :3]
    return np.asarray(im.convert("RGB"))


def _read_pil(p: Path, source: str) -> Image2D:
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.load()
            arr = _pil_to_array(im)
    except Exception as exc:  # PIL raises many types for corrupt files
        raise InputError(source, f"cannot decode the image (corrupt?): {exc}") from exc
    return image_2d_from_array(arr, source)


def _read_tiff(p: Path, source: str) -> Image2D:
    import tifffile

    try:
        with tifffile.TiffFile(p) as tf:
            series, page = tf.series[0], tf.pages[0]
            axes, shape = series.axes, series.shape
            photometric = int(page.photometric)
            n_extra = len(page.extrasamples or ())
            colormap = page.colormap
            try:
                arr, decode_error = series.asarray(), None
            except Exception as exc:  # e.g. LZW/JPEG needing imagecodecs: try OpenCV below
                arr, decode_error = None, exc
    except Exception as exc:
        raise InputError(source, f"cannot read the TIFF file (corrupt?): {exc}") from exc
    extra_axes = [(a, n) for a, n in zip(axes, shape) if a not in "YXS" and n > 1]
    if extra_axes:
        raise InputError(source, f"the TIFF holds a stack of shape {tuple(shape)} (axes {axes}): "
                                 "a 3D volume or multi-page file, not a 2D image")
    if photometric == 5:  # SEPARATED (CMYK)
        raise InputError(source, "CMYK TIFF files are not supported; convert it to RGB")
    grey = photometric in (0, 1)  # MINISWHITE, MINISBLACK
    if arr is None:
        arr = _cv2_decode(_read_bytes(p, source))
        if arr is None:
            raise InputError(source, f"cannot decode the TIFF pixel data: {decode_error}")
        arr = _bgr_to_rgb(arr)
        if grey and arr.ndim == 3:
            arr = arr[:, :, 0]
    else:
        keep = [i for i, (a, n) in enumerate(zip(axes, shape)) if a in "YXS" or n > 1]
        arr = arr.reshape([shape[i] for i in keep])
        kept_axes = "".join(axes[i] for i in keep)
        if "S" in kept_axes:
            arr = np.moveaxis(arr, kept_axes.index("S"), -1)
        if photometric == 3 and colormap is not None and arr.ndim == 2:  # PALETTE
            arr = np.moveaxis(colormap[:, arr], 0, -1)
            arr = (arr // 257).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
        elif grey and arr.ndim == 3 and n_extra and arr.shape[2] == 1 + n_extra:
            arr = arr[:, :, 0]  # grey + alpha
    return image_2d_from_array(np.ascontiguousarray(arr), source)


def _read_npy(p: Path, source: str) -> Image2D:
    if not _read_bytes(p, source, 6).startswith(b"\x93NUMPY"):
        raise InputError(source, "not a NumPy .npy file (no NumPy header)")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputError(source, f"cannot read the .npy file (corrupt, or pickled objects?): "
                                 f"{exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise InputError(source, "is an .npz archive, not a single .npy array; rename it to .npz")
    return image_2d_from_array(arr, source)


def _read_npz(p: Path, source: str) -> Image2D:
    if not _read_bytes(p, source, 4).startswith(b"PK"):
        raise InputError(source, "not a NumPy .npz archive (not a zip file)")
    try:
        with np.load(p, allow_pickle=False) as archive:
            keys = list(archive.files)
            key = next((k for k in NPZ_IMAGE_KEYS if k in keys), None)
            if key is None and len(keys) == 1:
                key = keys[0]
            arr = archive[key] if key is not None else None
    except Exception as exc:
        raise InputError(source, f"cannot read the .npz file (corrupt, or pickled objects?): "
                                 f"{exc}") from exc
    if key is None:
        if not keys:
            raise InputError(source, "the .npz archive contains no arrays")
        raise InputError(source, f"the .npz archive holds several arrays ({', '.join(keys)}) "
                                 f"and none is named {', '.join(NPZ_IMAGE_KEYS)}; "
                                 "cannot tell which is the image")
    return image_2d_from_array(arr, source)


def _read_dicom(p: Path, source: str) -> Image2D:
    import pydicom

    try:
        ds = pydicom.dcmread(p, force=True)
    except Exception as exc:
        raise InputError(source, f"cannot read the file as DICOM (corrupt?): {exc}") from exc
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(source, "not a readable image: no DICOM pixel data found (unsupported "
                                 f"format? supported: {', '.join(SUPPORTED_2D_SUFFIXES)})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(source, f"is a multi-frame DICOM ({frames} frames): a volume, "
                                 "not a 2D image; read it as a 3D volume")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InputError(source, f"cannot decode the DICOM pixel data (transfer syntax "
                                 f"{syntax}): {exc}") from exc
    slope = (_dicom_floats(ds, "RescaleSlope", source) or [1.0])[0] or 1.0
    intercept = (_dicom_floats(ds, "RescaleIntercept", source) or [0.0])[0]
    if (slope, intercept) != (1.0, 0.0):
        arr = _rescale(arr, slope, intercept)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        logger.info("%s: MONOCHROME1 (inverted grey scale); values kept as stored", source)
    spacing, ps = (1.0, 1.0), _dicom_floats(ds, "PixelSpacing", source)
    if len(ps) == 2 and all(np.isfinite(v) and v > 0 for v in ps):
        spacing = (ps[0], ps[1])
    elif ps:
        logger.warning("%s: ignoring invalid DICOM PixelSpacing %s; using 1 mm", source, ps)
    centre, width = (_dicom_floats(ds, n, source) for n in ("WindowCenter", "WindowWidth"))
    window = (centre[0], width[0]) if centre and width else None
    modality = str(ds.get("Modality", "")).upper()
    kind = "ct" if modality == "CT" and arr.ndim == 2 else None
    return image_2d_from_array(arr, source, kind=kind, spacing=spacing, window=window)


def _rescale(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Apply the DICOM modality rescale; keep an integer dtype when the result is integral."""
    values = arr.astype(np.float64) * slope + intercept
    if np.issubdtype(arr.dtype, np.integer) and slope.is_integer() and intercept.is_integer():
        lo, hi = values.min(), values.max()
        for dtype in (arr.dtype, np.dtype(np.int16), np.dtype(np.int32)):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return values.astype(dtype)
    return values.astype(np.float32)


def _dicom_floats(ds: Any, name: str, source: str) -> list[float]:
    """All values of a numeric DICOM attribute as floats ([] when absent or unreadable)."""
    value = ds.get(name)
    if value is None or value == "":
        return []
    items = list(value) if hasattr(value, "__len__") and not isinstance(value, str) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        logger.warning("%s: ignoring unreadable DICOM %s %r", source, name, value)
        return []


_READERS: dict[str, Callable[[Path, str], Image2D]] = {
    ".png": _read_png, ".jpg": _read_pil, ".jpeg": _read_pil, ".bmp": _read_pil,
    ".tif": _read_tiff, ".tiff": _read_tiff, ".npy": _read_npy, ".npz": _read_npz,
    ".dcm": _read_dicom, ".dicom": _read_dicom,
}
