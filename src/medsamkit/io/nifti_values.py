"""Count the NaN and infinite values stored in a NIfTI file.

ITK's NIfTI reader (and so SimpleITK's, which :func:`medsamkit.io.volume.read_volume` uses)
turns NaN and infinite voxels into 0 without a word, so a volume full of NaN reads as a valid
all-zero volume. This module reads the stored values itself -- the NIfTI-1 or NIfTI-2 header
fields it needs (datatype, dim, vox_offset), then the voxels in 16 MiB blocks, gzip or not -- and
counts the non-finite ones, in bounded memory. Only float32 and float64 data are scanned (the
other NIfTI types cannot hold NaN).
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

_FLOAT_CODES = {16: "f4", 64: "f8"}  # NIFTI_TYPE_FLOAT32, NIFTI_TYPE_FLOAT64
_BLOCK = 1 << 24


def _layout(head: bytes) -> tuple[str, np.dtype, int, int] | None:
    """(byte order, float dtype, voxel count, data offset) from a header; None when the header
    is not NIfTI or the data are not float."""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0]
        if size == 348 and len(head) >= 348:  # NIfTI-1
            code = struct.unpack(order + "h", head[70:72])[0]
            dims = struct.unpack(order + "8h", head[40:56])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            break
        if size == 540 and len(head) >= 540:  # NIfTI-2
            code = struct.unpack(order + "h", head[12:14])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        return None
    kind = _FLOAT_CODES.get(code)
    if kind is None or not 1 <= dims[0] <= 7:
        return None
    count = math.prod(max(int(d), 1) for d in dims[1:dims[0] + 1])
    return order, np.dtype(order + kind), count, max(offset, size)


def count_nonfinite(path: str | Path) -> int:
    """NaN and +-inf voxels stored in a ``.nii``/``.nii.gz`` file (0 for non-float data or a
    header this reader does not know; ITK then decides)."""
    p = Path(path)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as f:
        layout = _layout(f.read(540))
        if layout is None:
            return 0
        _, dtype, remaining, offset = layout
        f.seek(offset)
        bad, carry = 0, b""
        while remaining > 0:
            chunk = f.read(min(_BLOCK, remaining * dtype.itemsize))
            if not chunk:
                break
            data = carry + chunk
            usable = len(data) // dtype.itemsize * dtype.itemsize
            values = np.frombuffer(data[:usable], dtype)[:remaining]
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            remaining -= values.size
            carry = data[usable:]
    return bad
