"""Safe output writing: atomic replacement and never overwriting an input.

A file written through :func:`atomic_output` appears under its final name only once it is
complete: a crash or an exception half-way leaves any previous file untouched and no partial
file behind. Array layouts accepted by :func:`write_png`: ``H x W`` uint8 or uint16 (grey),
``H x W x 3`` uint8 in RGB order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from medsamkit.errors import InputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary name starts with ``"."`` (hidden) and ends with the suffix of ``path`` so that
    writers choosing the format by suffix work. Missing parent folders are created. If the
    block raises, the temporary file is removed, ``path`` is left as it was and the exception
    propagates. The final move uses :func:`os.replace` (atomic on one file system).
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(target, "is a folder; an output file path is needed")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(target, f"cannot create the output folder: {exc.strerror or exc}") from exc
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {target}")
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    logger.debug("wrote %s", target)


def _fsync(path: Path) -> None:
    """Flush a finished file to disk before it replaces the old one (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_not_input(output: PathLike, inputs: PathLike | Iterable[PathLike | None]) -> None:
    """Raise :class:`InputError` if ``output`` is the same file as any of ``inputs``.

    Paths are compared after resolving symbolic links and ``..``; existing files are also
    compared with :func:`os.path.samefile` (catches hard links). ``inputs`` may be one path or
    an iterable of paths (None entries are ignored).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(output)
    out_resolved = out.resolve()
    for inp in inputs:
        if inp is None:
            continue
        same = Path(inp).resolve() == out_resolved
        if not same and out.exists() and Path(inp).exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, inp)
        if same:
            raise InputError(output, f"refusing to overwrite the input file {os.fspath(inp)}")


def write_png(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as a PNG atomically.

    Accepts ``H x W`` uint8, ``H x W`` uint16 (16-bit grey PNG) or ``H x W x 3`` uint8 in RGB
    order. Raises ValueError for other arrays (convert masks to uint8 first) and
    :class:`InputError` when the file cannot be written.
    """
    import cv2

    arr = np.asarray(array)
    grey_ok = arr.ndim == 2 and arr.dtype in (np.uint8, np.uint16)
    rgb_ok = arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
    if not (grey_ok or rgb_ok) or arr.size == 0:
        raise ValueError(f"write_png needs a non-empty H x W uint8/uint16 or H x W x 3 uint8 "
                         f"array, got {arr.dtype} with shape {arr.shape}")
    if rgb_ok:
        arr = arr[:, :, ::-1]  # cv2 expects BGR
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise InputError(path, "PNG encoding failed")
    _write_bytes(path, encoded.tobytes())


#: lossless formats a mask or label map can be written in (suffix -> OpenCV encoder)
MASK_FORMATS = {".png": ".png", ".tif": ".tiff", ".tiff": ".tiff", ".bmp": ".bmp"}
#: lossy formats: fine for an overlay picture, refused for masks (they would change the labels)
LOSSY_FORMATS = {".jpg": ".jpg", ".jpeg": ".jpg", ".jpe": ".jpg", ".webp": ".webp"}


def image_format(path: PathLike, kind: str = "mask") -> str:
    """The OpenCV encoder for ``path``'s suffix; ``kind`` "mask" (lossless only) or "picture".

    Raises InputError for a lossy format named for a mask and for unknown suffixes, so an
    output is never written in a format other than the one its name says.
    """
    suffix = Path(path).suffix.lower()
    if suffix in MASK_FORMATS:
        return MASK_FORMATS[suffix]
    if suffix in LOSSY_FORMATS:
        if kind == "picture":
            return LOSSY_FORMATS[suffix]
        raise InputError(path, f"{suffix[1:].upper()} is lossy and would change the mask's label values; "
                               "name the mask .png (or .tif)")
    known = sorted(MASK_FORMATS) + (sorted(LOSSY_FORMATS) if kind == "picture" else [])
    raise InputError(path, f"unknown image format {suffix or '(no suffix)'!r}: name the file {', '.join(known)}")


def write_image(path: PathLike, array: np.ndarray, kind: str = "mask") -> None:
    """Write ``array`` atomically in the format its suffix names (see :func:`image_format`):
    a mask or label map (``H x W`` uint8/uint16, lossless formats only) or an RGB picture."""
    import cv2

    ext = image_format(path, kind)
    arr = np.asarray(array)
    if ext == ".png":
        write_png(path, arr)
        return
    if ext in (".bmp", ".jpg", ".webp") and arr.dtype != np.uint8:
        raise InputError(path, f"{Path(path).suffix} holds 8-bit values; labels above 255 need .png or .tif")
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]  # cv2 expects BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else []
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(arr), params)
    if not ok:
        raise InputError(path, f"{ext[1:].upper()} encoding failed")
    _write_bytes(path, encoded.tobytes())


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` to a ``.npy`` file atomically (no pickling; any shape and numeric dtype)."""
    arr = np.asarray(array)
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    except OSError as exc:
        raise InputError(path, f"cannot write the file: {exc.strerror or exc}") from exc


def _write_bytes(path: PathLike, data: bytes) -> None:
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise InputError(path, f"cannot write the file: {exc.strerror or exc}") from exc
