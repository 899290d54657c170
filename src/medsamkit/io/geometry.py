"""Where a volume's voxels lie in the patient: spacing, origin and direction.

The one array convention of medsamkit
-------------------------------------
A volume is a numpy array indexed ``[z, y, x]`` = ``[slice, row, column]``, exactly as
``SimpleITK.GetArrayFromImage`` returns it (so ``array.shape == image.GetSize()[::-1]``). A 2D
image is ``[y, x]`` (``[row, column]``), with an optional trailing RGB axis ``[y, x, 3]``.

:class:`Geometry` describes such an array in millimetres:

* ``spacing`` is given in the ARRAY's axis order (z, y, x), so ``spacing[i]`` is the step along
  ``array`` axis ``i``; :attr:`Geometry.itk_spacing` is the same numbers in ITK order (x, y, z).
* ``origin`` is the physical position (x, y, z) in mm of the centre of voxel ``[0, 0, 0]``, in
  ITK's patient coordinate system LPS (+x towards the patient's left, +y posterior, +z superior).
  NIfTI files store RAS; SimpleITK converts on reading and writing, so NIfTI origins read here
  have x and y negated compared with ``nibabel``'s affine.
* ``direction`` is ITK's 3 x 3 direction-cosine matrix, row-major, 9 numbers. Column ``j`` is the
  unit vector, in LPS, of ITK index axis ``j`` -- index axes are ordered x, y, z, so column 0 is
  the direction of increasing ``array[..., x]``, column 2 that of increasing slice number.

Mapping an array index ``(z, y, x)`` to a physical point (see :meth:`Geometry.index_to_physical`)::

    point_xyz = origin + direction @ (itk_spacing * (x, y, z))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Axis orders a :class:`Geometry` can describe (only one, kept explicit in every object).
AXIS_ORDERS: tuple[str, ...] = ("zyx",)

_IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Geometry:
    """Voxel spacing, origin and orientation of a ``[z, y, x]`` array (see the module docstring).

    Attributes:
        spacing: voxel size in mm along the array axes, in array order (z, y, x).
        origin: physical position in mm (x, y, z, LPS) of the centre of voxel ``[0, 0, 0]``.
        direction: 9 numbers, ITK row-major direction cosines; column ``j`` is the LPS unit
            vector of index axis ``j`` in ITK order x, y, z.
        axis_order: the array's axis order; always ``"zyx"``.

    Values are stored as Python floats; invalid values (wrong lengths, non-positive or
    non-finite spacing, a singular direction matrix) raise ValueError.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = _IDENTITY_DIRECTION
    axis_order: str = "zyx"

    def __post_init__(self) -> None:
        spacing = _floats(self.spacing, 3, "spacing")
        origin = _floats(self.origin, 3, "origin")
        direction = _floats(self.direction, 9, "direction")
        if not all(s > 0 for s in spacing):
            raise ValueError(f"spacing must be positive, got {spacing}")
        if abs(np.linalg.det(np.reshape(direction, (3, 3)))) < 1e-6:
            raise ValueError(f"direction matrix is singular: {direction}")
        if self.axis_order not in AXIS_ORDERS:
            raise ValueError(f"axis_order must be one of {AXIS_ORDERS}, got {self.axis_order!r}")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def identity(cls, shape: Sequence[int] | None = None) -> Geometry:
        """Spacing 1 mm, origin 0, no rotation: the geometry of an array with no metadata.

        ``shape`` (optional) is the shape of the array it will describe; it is only checked to
        be 2D ``(y, x)`` or 3D ``(z, y, x)``, since a 2D image is treated as one slice.
        """
        if shape is not None and len(shape) not in (2, 3):
            raise ValueError(f"a geometry describes 2D (y, x) or 3D (z, y, x) arrays, "
                             f"got shape {tuple(shape)}")
        return cls(spacing=(1.0, 1.0, 1.0))

    @classmethod
    def from_itk(cls, spacing_xyz: Sequence[float], origin_xyz: Sequence[float],
                 direction: Sequence[float]) -> Geometry:
        """Build from values in ITK order: ``image.GetSpacing()`` (x, y, z), ``GetOrigin()``,
        ``GetDirection()`` (9 numbers, row-major)."""
        sx, sy, sz = _floats(spacing_xyz, 3, "spacing")
        return cls(spacing=(sz, sy, sx), origin=tuple(origin_xyz), direction=tuple(direction))

    # ------------------------------------------------------------------ views

    @property
    def itk_spacing(self) -> tuple[float, float, float]:
        """Spacing in ITK order (x, y, z), as ``SimpleITK.Image.SetSpacing`` expects."""
        z, y, x = self.spacing
        return (x, y, z)

    @property
    def direction_matrix(self) -> np.ndarray:
        """The direction cosines as a 3 x 3 float64 array (column j = index axis j, x-y-z order)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    # ------------------------------------------------------------------ queries

    def is_identity_affine(self, tol: float = 1e-6) -> bool:
        """True when the file most likely stored no geometry at all.

        That is: spacing 1 mm on every axis, origin 0, and axes not rotated (a diagonal direction
        matrix of +-1: the NIfTI identity affine reads as diag(-1, -1, 1) in LPS). Distances in
        such a volume are in voxels, not millimetres.
        """
        d = self.direction_matrix
        return (all(abs(s - 1.0) <= tol for s in self.spacing)
                and all(abs(o) <= tol for o in self.origin)
                and bool(np.allclose(np.abs(d), np.eye(3), atol=tol, rtol=0)))

    def index_to_physical(self, index_zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Physical LPS position(s) in mm (x, y, z) of array index(es) ``(z, y, x)``.

        ``index_zyx`` may be one index (3 numbers, fractional allowed) or an array of shape
        ``(..., 3)``; the result has the same shape, last axis ordered x, y, z.
        """
        idx = np.asarray(index_zyx, dtype=np.float64)
        if idx.shape[-1:] != (3,):
            raise ValueError(f"an index needs 3 values (z, y, x), got shape {idx.shape}")
        steps_xyz = idx[..., ::-1] * np.asarray(self.itk_spacing)
        return np.asarray(self.origin) + steps_xyz @ self.direction_matrix.T

    def same_as(self, other: Geometry, tol: float = 1e-5) -> bool:
        """True when both describe the same voxel grid within ``tol``.

        Each number is compared with a relative tolerance: ``|a - b| <= tol * max(1, |a|, |b|)``
        (NIfTI stores geometry as float32, so an origin of ~100 mm comes back off by ~1e-6 mm).
        """
        if self.axis_order != other.axis_order:
            return False
        pairs = zip(self.spacing + self.origin + self.direction,
                    other.spacing + other.origin + other.direction)
        return all(abs(a - b) <= tol * max(1.0, abs(a), abs(b)) for a, b in pairs)


def _floats(values: Sequence[float], n: int, name: str) -> tuple[float, ...]:
    """``values`` as a tuple of ``n`` finite Python floats; ValueError otherwise."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {n} numbers, got {values!r}") from exc
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be {n} finite numbers, got {out}")
    return out
