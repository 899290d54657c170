"""Clicks: points on an image or a volume that say "this is the object" (1) or "this is not" (0).

A click is given in the same coordinates as a box: pixels of the original image (x right, y
down), and on a volume voxel indices of its own array (x column, y row, z slice, 0-based; x and y
may be fractional, z is a whole slice number). Text forms (``--point``, prompts files):
``X,Y,LABEL`` on a 2D image and ``X,Y,Z,LABEL`` on a volume, LABEL 1 (foreground) or 0
(background). Clicks are kept in the order they were given: an interactive session replays them
in that order (:mod:`medsamkit.inference.session`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InputError


@dataclass(frozen=True)
class Click:
    """One click: ``Click(x, y, label)`` on a 2D image, ``Click(x, y, label, z=slice)`` on a volume
    (``z`` is keyword-only so that the order of the text form ``X,Y,Z,LABEL`` cannot be confused).

    Attributes:
        x, y: original pixels (voxel indices on a volume), x right and y down.
        label: 1 foreground ("add this"), 0 background ("remove this").
        z: slice index (volumes only).
    """

    x: float
    y: float
    label: int
    z: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"a click's label is 1 (foreground) or 0 (background), got {self.label!r}")

    @property
    def positive(self) -> bool:
        return self.label == 1

    def as_list(self) -> list[float | int]:
        """``[x, y, label]`` or ``[x, y, z, label]``: the prompts-file form."""
        if self.z is None:
            return [self.x, self.y, self.label]
        return [self.x, self.y, self.z, self.label]

    def describe(self) -> str:
        return ",".join(f"{v:g}" for v in self.as_list())


def _numbers(values: object) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None


def click_from_values(values: object, dims: int, fail) -> Click:
    """``(x, y, label)`` (``dims`` 2) or ``(x, y, z, label)`` (``dims`` 3) -> a :class:`Click`.

    ``fail(problem)`` makes the :class:`InputError` to raise (it names the file or option).
    Wrong arity, a non-number, a label other than 0/1, a z on a 2D image, a missing z on a
    volume and a fractional z all raise.
    """
    numbers = _numbers(values)
    if numbers is None or isinstance(values, (str, bytes)):
        raise fail(f"a point must be numbers {'X,Y,LABEL' if dims == 2 else 'X,Y,Z,LABEL'}, got {values!r}")
    n = len(numbers)
    if dims == 2 and n == 4:
        raise fail("a point on a 2D image is X,Y,LABEL: it has no z")
    if dims == 3 and n == 3:
        raise fail("a point on a volume is X,Y,Z,LABEL: its slice z is missing")
    if n != dims + 1:
        form = "X,Y,LABEL" if dims == 2 else "X,Y,Z,LABEL"
        raise fail(f"a point is {dims + 1} numbers {form}, got {n}")
    if not all(math.isfinite(v) for v in numbers):
        raise fail(f"point {_text(numbers)} has a non-finite coordinate")
    label = numbers[-1]
    if label not in (0.0, 1.0):
        raise fail(f"point {_text(numbers)}: its label must be 1 (foreground) or 0 (background), got {label:g}")
    z = None
    if dims == 3:
        if numbers[2] != int(numbers[2]):
            raise fail(f"point {_text(numbers)}: z {numbers[2]:g} is not a whole slice number")
        z = int(numbers[2])
    return Click(numbers[0], numbers[1], int(label), z=z)


def _text(numbers: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in numbers)


def parse_point(text: str, dims: int, option: str = "--point") -> Click:
    """A ``--point`` value: ``"X,Y,LABEL"`` (``dims`` 2) or ``"X,Y,Z,LABEL"`` (``dims`` 3)."""
    parts = [p for p in str(text).replace(" ", "").split(",") if p != ""]

    def fail(problem: str) -> InputError:
        return InputError(None, f"{option} {text!r}: {problem}")

    numbers = _numbers(parts)
    if numbers is None:
        form = "X,Y,LABEL" if dims == 2 else "X,Y,Z,LABEL"
        raise fail(f"is not numbers {form}")
    return click_from_values(numbers, dims, fail)


def clicks_from_json(values: object, dims: int, source: str, where: str) -> tuple[Click, ...]:
    """A prompts file's ``"points"`` value: a list of ``[x, y, label]`` (or ``[x, y, z, label]``)."""
    def fail(problem: str) -> InputError:
        return InputError(source, f"{where}: {problem}")

    if not isinstance(values, list):
        raise fail(f"'points' must be a list of points [{'x, y, label' if dims == 2 else 'x, y, z, label'}], "
                   f"got {values!r}")
    out = []
    for i, item in enumerate(values):
        def fail_i(problem: str, i: int = i) -> InputError:
            return InputError(source, f"{where} point {i + 1}: {problem}")

        if not isinstance(item, (list, tuple)):
            raise fail_i(f"a point is a list [{'x, y, label' if dims == 2 else 'x, y, z, label'}], got {item!r}")
        out.append(click_from_values(item, dims, fail_i))
    return tuple(out)


def check_clicks_2d(clicks: Sequence[Click], size: tuple[int, int], source: str | os.PathLike | None = None,
                    where: str = "") -> None:
    """Raise :class:`InputError` for a click outside an (H, W) image (x in 0..W, y in 0..H, exclusive)."""
    h, w = size
    for c in clicks:
        if c.z is not None:
            raise InputError(source, f"{where}point {c.describe()} has a z but the image is 2D")
        if not (0 <= c.x < w and 0 <= c.y < h):
            raise InputError(source, f"{where}point {c.describe()} lies outside the {w}x{h} image "
                                     f"(x 0..{w - 1}, y 0..{h - 1})")


def check_clicks_3d(clicks: Sequence[Click], shape: Sequence[int], source: str | os.PathLike | None = None,
                    where: str = "") -> None:
    """Raise :class:`InputError` for a click outside a ``(z, y, x)`` volume or without its slice."""
    nz, h, w = (int(s) for s in shape)
    for c in clicks:
        if c.z is None:
            raise InputError(source, f"{where}point {c.describe()} has no slice z (a volume's point is X,Y,Z,LABEL)")
        if not (0 <= c.x < w and 0 <= c.y < h and 0 <= c.z < nz):
            raise InputError(source, f"{where}point {c.describe()} lies outside the volume "
                                     f"(x 0..{w - 1}, y 0..{h - 1}, z 0..{nz - 1})")


def prompt_record(box: Sequence[float] | None, clicks: Sequence[Click], label: int | None,
                  **extra: object) -> dict[str, object]:
    """One prompts-file entry (JSON-ready): ``{"box": [...], "label": L, "points": [[...]], ...}``."""
    record: dict[str, object] = {}
    if box is not None:
        record["box"] = [float(v) for v in box]
    record.update({k: v for k, v in extra.items() if v is not None})
    if label is not None:
        record["label"] = int(label)
    if clicks:
        record["points"] = [c.as_list() for c in clicks]
    return record


def write_prompts_file(path: str | os.PathLike, records: Sequence[dict[str, object]]) -> None:
    """Write prompts-file entries as JSON (atomically): ``medsamkit segment --boxes-file`` replays them."""
    import json

    from ..io.writers import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(list(records), indent=1) + "\n", encoding="utf-8")
