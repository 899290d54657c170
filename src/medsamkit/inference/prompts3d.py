"""Prompts for 3D volumes: a 2D box on a key slice plus the z range to propagate over.

Coordinates are voxel indices of the volume's own array (0-based): x = column, y = row,
z = slice number (the array is ``[z, y, x]``). Boxes are inclusive indices, like the boxes
:func:`~medsamkit.preprocessing.labels.box3d_from_mask` makes; x and y may be fractional.

The forms a user can give (each becomes one :class:`VolumePrompt`):

- **3D box** ``X0,Y0,Z0,X1,Y1,Z1``: the 2D box ``X0,Y0,X1,Y1`` on the key slice
  ``int((Z1 - Z0) / 2 + Z0)`` (LiteMedSAM's middle slice), propagated over ``Z0..Z1``.
- **2D box on a slice** ``X0,Y0,X1,Y1`` with a key slice ``Z`` and optionally a range
  ``Z0,Z1``. Without a range the object is taken to be about as deep as it is wide: the key
  slice plus/minus half the box's longest side, converted to slices with the spacing
  (:func:`default_z_range`); SAM2-family models (MedSAM2) propagate through the whole volume
  instead, as MedSAM2 does (``VolumePrompt.z_range_given``).
- **RECIST line** ``X0,Y0,X1,Y1,Z``: the two end points of a lesion's longest diameter on slice
  ``Z``. The box is a square centred on the line's midpoint whose side is the line's length
  times :data:`RECIST_BOX_SCALE` (in mm, so it stays square in the patient when the pixels are
  not), clipped to the slice; the z range, unless given, is the key slice plus/minus half the
  line's length in slices (the lesion taken as a sphere of that diameter).
- **Boxes from a label volume** (evaluation): one prompt per label; the key slice is the slice
  where the label has its largest area, the 2D box that slice's bounding box and the z range the
  label's extent (:func:`prompts_from_labels`).

Any of the first three forms may carry **clicks** ``(x, y, z, 1|0)`` (voxel indices, 1 foreground,
0 background; :mod:`medsamkit.inference.clicks`), applied in order after the box; clicks with no
box make a **point-only** object (key slice: its first foreground click's slice; z range: the
whole volume unless given, the propagation stopping where the mask ends).

Files (``--boxes-file``) hold any of the first three forms:

- JSON: a list whose items are ``[x0, y0, z0, x1, y1, z1]`` or objects with ``"box"``
  (6 numbers, or 4 with ``"slice"``) or ``"recist"`` (5 numbers), and optionally ``"label"``,
  ``"slice"`` (key slice), ``"z_range"`` ``[z0, z1]`` and ``"points"`` ``[[x, y, z, 1], ...]``
  (an object with ``"points"`` and no box is point-only).
- CSV with a header: columns ``x0,y0,z0,x1,y1,z1`` and optionally ``label`` and ``slice`` (boxes only).

Parsing gives :class:`PromptSpec` objects (numbers and where they came from); they are checked
and turned into :class:`VolumePrompt` against the volume by :meth:`PromptSpec.resolve`, so every
error names the volume and the prompt.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.geometry import Geometry
from ..preprocessing.labels import box3d_from_mask, box_from_mask, split_labels
from .clicks import Click, check_clicks_3d, clicks_from_json
from .prompts import _label as parse_label
from .prompts import parse_box

log = logging.getLogger(__name__)

#: The RECIST box's side is the line's length times this (a little room around the lesion).
RECIST_BOX_SCALE = 1.1

_KINDS = {"box3d": 6, "box2d": 4, "recist": 5, "points": 0}


@dataclass(frozen=True)
class VolumePrompt:
    """One object to segment in a volume.

    Attributes:
        box: ``(x0, y0, x1, y1)`` on the key slice, voxel indices; None for a point-only object.
        key_slice: the slice segmented first, from ``box`` (point-only: the first foreground
            click's slice).
        z_range: ``(z0, z1)`` inclusive: propagation goes from the key slice up to z1 and down
            to z0.
        label: the value written for this object (None: its 1-based position).
        points: clicks ``(x, y, z, 1|0)`` applied in this order after the box.
        z_range_given: False when ``z_range`` is a default (a 2D box or RECIST line without a
            range); a strategy may then choose its own (SAM2 memory propagation: the whole volume).
        bounded: ``box`` bounds the object in x and y on every slice (a 3D box): boxes
            propagated from slice to slice are clipped to it
            (:attr:`~medsamkit.inference.propagate.PropagationConfig.clip_to_box`).
    """

    box: tuple[float, float, float, float] | None
    key_slice: int
    z_range: tuple[int, int]
    label: int | None = None
    points: tuple[Click, ...] = ()
    z_range_given: bool = True
    bounded: bool = False

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise ValueError("a volume prompt needs a box or at least one point")

    @classmethod
    def from_box3d(cls, box: Sequence[float], label: int | None = None,
                   key_slice: int | None = None) -> VolumePrompt:
        """From ``(x0, y0, z0, x1, y1, z1)``; the key slice defaults to the middle slice."""
        x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
        key = int((z1 - z0) / 2 + z0) if key_slice is None else int(key_slice)
        return cls((x0, y0, x1, y1), key, (int(z0), int(z1)), label, bounded=True)

    def describe(self) -> str:
        """The prompt in the ``--box`` 3D form with its key slice, for messages."""
        z0, z1 = self.z_range
        clicks = f", {len(self.points)} point{'s' if len(self.points) != 1 else ''}" if self.points else ""
        if self.box is None:
            return f"points on slices {z0}..{z1} (key slice {self.key_slice}{clicks})"
        x0, y0, x1, y1 = self.box
        return f"{x0:g},{y0:g},{z0},{x1:g},{y1:g},{z1} (key slice {self.key_slice}{clicks})"


@dataclass(frozen=True)
class PromptSpec:
    """A prompt as the user gave it, before it is checked against a volume.

    Attributes:
        kind: ``"box3d"`` (6 numbers), ``"box2d"`` (4 numbers, needs ``key_slice``),
            ``"recist"`` (5 numbers ``x0, y0, x1, y1, z``) or ``"points"`` (no numbers: a
            point-only object).
        values: the numbers.
        label: label id or None.
        key_slice: key slice (box2d: required; box3d: overrides the middle slice).
        z_range: ``(z0, z1)`` (box2d, recist, points: overrides the default depth).
        origin: where it came from, for messages (``--box 1,2,3,4,5,6``, ``boxes.json entry 2``).
        points: clicks, in order.
    """

    kind: str
    values: tuple[float, ...]
    label: int | None = None
    key_slice: float | None = None
    z_range: tuple[float, float] | None = None
    origin: str = ""
    points: tuple[Click, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown prompt kind {self.kind!r}; expected one of {', '.join(_KINDS)}")
        if len(self.values) != _KINDS[self.kind]:
            raise ValueError(f"a {self.kind} prompt has {_KINDS[self.kind]} numbers, got {len(self.values)}")
        if self.kind == "points" and not self.points:
            raise ValueError("a points prompt needs at least one point")

    def resolve(self, shape: Sequence[int], geometry: Geometry | None = None,
                source: str | os.PathLike | None = None) -> VolumePrompt:
        """Check against a ``(z, y, x)`` volume and return the prompt to segment.

        Raises :class:`InputError` naming ``source`` (the volume) and this prompt when a number
        is not finite, a box is inverted or empty, or anything lies outside the volume.
        """
        geometry = geometry or Geometry.identity()
        where = f"{self.origin}: " if self.origin else ""
        nz, h, w = (int(s) for s in shape)

        def fail(problem: str) -> InputError:
            return InputError(source, where + problem)

        if not all(math.isfinite(v) for v in self.values):
            raise fail("has a non-finite coordinate")
        check_clicks_3d(self.points, shape, source, where)
        key = _slice_index(self.key_slice, "key slice", nz, fail)
        z_range = None
        given = self.z_range is not None or self.kind == "box3d"
        warn = f"{source}: {where}" if source else where
        if self.z_range is not None:
            if self.kind == "points":
                z_range = tuple(_slice_index(z, "z", nz, fail) for z in self.z_range)
            else:
                z_range = _clip_z_range(self.z_range, nz, fail, warn)
        if self.kind == "points":
            return self._resolve_points(key, z_range, nz, fail)
        if self.kind == "box3d":
            x0, y0, z0, x1, y1, z1 = self.values
            if z1 < z0:
                raise fail(f"is inverted in z (z0 {z0:g} > z1 {z1:g})")
            z_range = _clip_z_range((z0, z1), nz, fail, warn)
            box = (x0, y0, x1, y1)
            if key is None:
                key = int((z_range[1] - z_range[0]) / 2 + z_range[0])
        elif self.kind == "box2d":
            if key is None:
                raise fail("a 2D box on a volume needs its key slice (--slice Z)")
            box = tuple(self.values)
        else:
            box, key, depth_mm = _recist_box(self.values, geometry, (h, w), fail, nz)
            if z_range is None:
                z_range = _range_around(key, depth_mm, geometry.spacing[0], nz)
        box = _clip_box(box, (h, w), fail, warn)
        if z_range is None:
            z_range = default_z_range(box, key, geometry, nz)
        z0, z1 = z_range
        if z1 < z0:
            raise fail(f"z range {z0},{z1} is inverted")
        if not z0 <= key <= z1:
            raise fail(f"key slice {key} is outside its z range {z0}..{z1}")
        return VolumePrompt(tuple(float(v) for v in box), key, (z0, z1), self.label,  # type: ignore[arg-type]
                            self.points, z_range_given=given, bounded=self.kind == "box3d")

    def _resolve_points(self, key: int | None, z_range: tuple[int, int] | None, nz: int, fail) -> VolumePrompt:
        """A point-only object: key slice = the first foreground click's slice (or the one given)."""
        if key is None:
            first = next((c for c in self.points if c.positive), None)
            if first is None:
                raise fail("a point-only object needs a foreground point (label 1) to start from")
            key = int(first.z)  # type: ignore[arg-type]
        z0, z1 = z_range if z_range is not None else (0, nz - 1)
        if z1 < z0:
            raise fail(f"z range {z0},{z1} is inverted")
        if not z0 <= key <= z1:
            raise fail(f"key slice {key} is outside its z range {z0}..{z1}")
        return VolumePrompt(None, key, (z0, z1), self.label, self.points)  # the default range is already the volume


def _slice_index(value: float | None, name: str, nz: int, fail) -> int | None:
    """A whole slice number in 0..nz-1 (None passes through)."""
    if value is None:
        return None
    if not math.isfinite(value) or value != int(value):
        raise fail(f"{name} {value:g} is not a whole slice number")
    if not 0 <= value < nz:
        raise fail(f"{name} {int(value)} is outside the volume's slices 0..{nz - 1}")
    return int(value)


def _clip_z_range(z_range: Sequence[float], nz: int, fail, warn: str) -> tuple[int, int]:
    """Whole slice numbers ``z0 <= z1``, clipped to ``0..nz-1`` with a warning; no overlap raises."""
    z0, z1 = z_range
    for name, z in (("z0", z0), ("z1", z1)):
        if not math.isfinite(z) or z != int(z):
            raise fail(f"{name} {z:g} is not a whole slice number")
    if z1 < z0:
        raise fail(f"z range {z0:g},{z1:g} is inverted")
    if z1 < 0 or z0 > nz - 1:
        raise fail(f"z range {z0:g}..{z1:g} lies outside the volume's slices 0..{nz - 1}: "
                   "it does not overlap the volume")
    clipped = (max(int(z0), 0), min(int(z1), nz - 1))
    if clipped != (z0, z1):
        log.warning("%sz range %g..%g reaches past the volume's slices 0..%d; clipped to %d..%d",
                    warn, z0, z1, nz - 1, *clipped)
    return clipped


def _clip_box(box: Sequence[float], size: tuple[int, int], fail, warn: str) -> tuple[float, ...]:
    """A user's in-plane box clipped to the ``W x H`` slices with a warning, as 2D boxes are.

    A box that reaches past the slices (as read off a viewer, or with a negative corner) is
    clipped; only a box with no overlap with them is refused (as are non-finite, inverted and
    empty boxes).
    """
    h, w = size
    x0, y0, x1, y1 = (float(v) for v in box)
    _check_box(box, (h, w), fail, outside_ok=True)
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h)))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        text = ",".join(f"{v:g}" for v in box)
        raise fail(f"box {text} lies outside the {w}x{h} slices (x 0..{w}, y 0..{h}): "
                   "it does not overlap them")
    if clipped != (x0, y0, x1, y1):
        log.warning("%sbox %s reaches past the %dx%d slices; clipped to %s", warn,
                    ",".join(f"{v:g}" for v in box), w, h, ",".join(f"{v:g}" for v in clipped))
    return clipped


def _check_box(box: Sequence[float], size: tuple[int, int], fail, allow_empty: bool = False,
               outside_ok: bool = False) -> None:
    """Inverted, empty (unless ``allow_empty``) or outside boxes raise (``x`` in ``0..W``, ``y`` in ``0..H``)."""
    h, w = size
    x0, y0, x1, y1 = box
    text = ",".join(f"{v:g}" for v in box)
    if not all(math.isfinite(v) for v in box):
        raise fail(f"box {text} has a non-finite coordinate")
    if x1 < x0 or y1 < y0:
        raise fail(f"box {text} is inverted (need x0 <= x1 and y0 <= y1)")
    if not allow_empty and (x1 == x0 or y1 == y0):
        raise fail(f"box {text} has zero width or height")
    if not outside_ok and (x0 < 0 or y0 < 0 or x1 > w or y1 > h):
        raise fail(f"box {text} lies outside the {w}x{h} slices (x 0..{w}, y 0..{h})")


def check_prompt(prompt: VolumePrompt, shape: Sequence[int], source: str | os.PathLike | None = None,
                 where: str = "") -> None:
    """Raise :class:`InputError` naming ``source`` when ``prompt`` does not fit a ``(z, y, x)`` volume.

    A box of zero width (an object one voxel wide, as boxes from labels can be) is accepted here;
    user input is held to non-empty boxes by :meth:`PromptSpec.resolve`.
    """
    nz, h, w = (int(s) for s in shape)

    def fail(problem: str) -> InputError:
        return InputError(source, f"{where}: {problem}" if where else problem)

    if prompt.box is not None:
        _check_box(prompt.box, (h, w), fail, allow_empty=True)
    check_clicks_3d(prompt.points, shape, source, f"{where}: " if where else "")
    z0, z1 = prompt.z_range
    for name, z in (("z0", z0), ("z1", z1), ("key slice", prompt.key_slice)):
        _slice_index(z, name, nz, fail)
    if z1 < z0:
        raise fail(f"z range {z0},{z1} is inverted")
    if not z0 <= prompt.key_slice <= z1:
        raise fail(f"key slice {prompt.key_slice} is outside its z range {z0}..{z1}")


def _range_around(key: int, depth_mm: float, z_spacing: float, nz: int) -> tuple[int, int]:
    half = int(math.ceil(depth_mm / 2.0 / z_spacing))
    return max(key - half, 0), min(key + half, nz - 1)


def default_z_range(box: Sequence[float], key_slice: int, geometry: Geometry,
                    n_slices: int) -> tuple[int, int]:
    """Key slice +- half the box's longest in-plane side (mm), in slices, clipped to the volume.

    The object is taken to be about as deep as it is wide. Without stored spacing (identity
    affine) every axis counts 1 mm, so the range may be too deep for thick slices: give the
    range, or use ``stop_when_empty``.
    """
    x0, y0, x1, y1 = box
    _, sy, sx = geometry.spacing
    longest = max((x1 - x0) * sx, (y1 - y0) * sy)
    return _range_around(key_slice, longest, geometry.spacing[0], n_slices)


def _recist_box(values: Sequence[float], geometry: Geometry, size: tuple[int, int], fail, nz: int
                ) -> tuple[tuple[float, float, float, float], int, float]:
    """(box, key slice, line length in mm) for a RECIST line ``x0, y0, x1, y1, z``."""
    x0, y0, x1, y1, z = values
    key = _slice_index(z, "slice", nz, fail)
    h, w = size
    for x, y in ((x0, y0), (x1, y1)):
        if not (0 <= x <= w and 0 <= y <= h):
            raise fail(f"line end point {x:g},{y:g} lies outside the {w}x{h} slices")
    _, sy, sx = geometry.spacing
    length = math.hypot((x1 - x0) * sx, (y1 - y0) * sy)
    if length == 0:
        raise fail("the RECIST line has zero length (both end points are the same)")
    half = length * RECIST_BOX_SCALE / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    box = (max(cx - half / sx, 0.0), max(cy - half / sy, 0.0),
           min(cx + half / sx, float(w - 1)), min(cy + half / sy, float(h - 1)))
    return box, key, length  # type: ignore[return-value]


# ------------------------------------------------------------------------- command line
def parse_pair(text: str, option: str) -> tuple[float, float]:
    """``"Z0,Z1"`` -> two numbers (for ``--z-range``)."""
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2:
        raise InputError(None, f"{option} {text!r} is not two numbers Z0,Z1")
    return values  # type: ignore[return-value]


def box_spec(text: str, label: int | None = None, key_slice: float | None = None,
             z_range: tuple[float, float] | None = None) -> PromptSpec:
    """A ``--box`` value for a volume: 6 numbers (3D box) or 4 (2D box on ``key_slice``)."""
    n = len([p for p in text.replace(" ", "").split(",") if p])
    dims = 3 if n == 6 else 2
    try:
        values = parse_box(text, dims)
    except InputError:
        raise InputError(None, f"--box {text!r} is not 6 numbers X0,Y0,Z0,X1,Y1,Z1 "
                               "(or 4 numbers X0,Y0,X1,Y1 with --slice Z)") from None
    kind = "box3d" if dims == 3 else "box2d"
    if kind == "box3d" and z_range is not None:
        raise InputError(None, f"--box {text}: a 3D box has its own z range; --z-range is for 2D boxes")
    return PromptSpec(kind, values, label, key_slice, z_range, origin=f"--box {text}")


def recist_spec(text: str, label: int | None = None,
                z_range: tuple[float, float] | None = None) -> PromptSpec:
    """A ``--recist X0,Y0,X1,Y1,Z`` value."""
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 5:
        raise InputError(None, f"--recist {text!r} is not 5 numbers X0,Y0,X1,Y1,Z "
                               "(the line's end points and its slice)")
    return PromptSpec("recist", values, label, None, z_range, origin=f"--recist {text}")


# ---------------------------------------------------------------------------------- files
def _numbers(values: object, n: Sequence[int], what: str, fail) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise fail(f"{what} must be numbers, got {values!r}") from None
    if len(out) not in n:
        raise fail(f"{what} must have {' or '.join(map(str, n))} numbers, got {len(out)}")
    return out


def _spec_from_json(item: object, source: str, where: str) -> PromptSpec:
    def fail(problem: str) -> InputError:
        return InputError(source, f"{where}: {problem}")

    if not isinstance(item, dict):
        return PromptSpec("box3d", _numbers(item, (6,), "a box", fail), origin=f"{source} {where}")
    label = parse_label(item.get("label"), source, where)
    key = item.get("slice", item.get("key_slice"))
    key = None if key is None else _numbers([key], (1,), "slice", fail)[0]
    z_range = item.get("z_range")
    z_range = None if z_range is None else _numbers(z_range, (2,), "z_range", fail)
    origin = f"{source} {where}"
    points = clicks_from_json(item["points"], 3, source, where) if "points" in item else ()
    if "recist" in item:
        return PromptSpec("recist", _numbers(item["recist"], (5,), "recist", fail), label, None, z_range, origin,
                          points)
    if "box" not in item:
        if points:
            return PromptSpec("points", (), label, key, z_range, origin, points)
        raise fail(f"has no 'box', 'recist' or 'points' key (keys: {', '.join(item)})")
    values = _numbers(item["box"], (4, 6), "box", fail)
    if len(values) == 6 and z_range is not None:
        raise fail("a 6-number box has its own z range; z_range is for 4-number boxes")
    return PromptSpec("box3d" if len(values) == 6 else "box2d", values, label, key, z_range, origin, points)


def _specs_from_csv(path: Path, source: str) -> list[PromptSpec]:
    need = ["x0", "y0", "z0", "x1", "y1", "z1"]
    specs = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        if not all(c in fields for c in need):
            raise InputError(source, f"CSV header must have columns {','.join(need)} (and optionally "
                                     f"label,slice); found {fields}")
        for row in reader:
            where = f"line {reader.line_num}"
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}

            def fail(problem: str, where: str = where) -> InputError:
                return InputError(source, f"{where}: {problem}")

            values = _numbers([row[c] for c in need], (6,), "x0,y0,z0,x1,y1,z1", fail)
            key = _numbers([row["slice"]], (1,), "slice", fail)[0] if row.get("slice") else None
            specs.append(PromptSpec("box3d", values, parse_label(row.get("label"), source, where), key,
                                    origin=f"{source} {where}"))
    return specs


def read_boxes3d_file(path: str | os.PathLike) -> list[PromptSpec]:
    """Read volume prompts from a JSON or CSV file (see the module docstring)."""
    p, source = Path(path), str(path)
    if not p.is_file():
        raise InputError(source, "boxes file not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise InputError(source, f"not valid JSON ({exc})") from None
            if not isinstance(data, list):
                raise InputError(source, "JSON volume prompts must be a list of boxes or objects")
            specs = [_spec_from_json(item, source, f"entry {i + 1}") for i, item in enumerate(data)]
        elif suffix in (".csv", ".tsv", ".txt"):
            specs = _specs_from_csv(p, source)
        else:
            raise InputError(source, "boxes file must end in .json or .csv")
    except UnicodeDecodeError as exc:
        raise InputError(source, f"not a UTF-8 text file ({exc})") from None
    except csv.Error as exc:
        raise InputError(source, f"not a readable CSV file ({exc})") from None
    if not specs:
        raise InputError(source, "no boxes in the file")
    return specs


# ------------------------------------------------------------------------ from label maps
def prompts_from_labels(label_volume: np.ndarray, labels: Sequence[int] | None = None,
                        source: str | os.PathLike | None = None) -> list[VolumePrompt]:
    """One prompt per label id of a ``[z, y, x]`` label map (evaluation with reference boxes).

    Key slice: the slice where the label covers the most voxels (the first such slice on ties);
    2D box: that slice's bounding box of the label (every pixel counts); z range: the label's
    extent. The prompts keep the label ids. ``labels`` default: every id present; a requested
    id that is absent raises :class:`InputError` naming ``source``.
    """
    label_volume = np.asarray(label_volume)
    if label_volume.ndim != 3:
        raise InputError(source, f"a label volume must be 3D, got shape {label_volume.shape}")
    try:
        targets = split_labels(label_volume, labels)
    except InputError as exc:
        raise InputError(source, exc.problem) from None
    present = [lab for lab, mask in targets.items() if mask.any()]
    missing = sorted(set(targets) - set(present))
    if missing:
        ids = ",".join(str(v) for v in sorted(split_labels(label_volume))) or "none"
        raise InputError(source, f"label {','.join(map(str, missing))} not found (labels present: {ids})")
    if not present:
        raise InputError(source, "the label volume is empty (no label > 0)")
    prompts = []
    for lab in present:
        mask = targets[lab]
        x0, y0, z0, x1, y1, z1 = box3d_from_mask(mask)  # type: ignore[misc]
        key = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
        bx0, by0, bx1, by1 = box_from_mask(mask[key], min_component=0)  # type: ignore[misc]
        prompts.append(VolumePrompt((float(bx0), float(by0), float(bx1), float(by1)), key, (z0, z1), lab))
    return prompts
