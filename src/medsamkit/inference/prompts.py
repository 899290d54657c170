"""Box prompts from the command line and from JSON/CSV files.

Boxes are pixels of the original image: x0, y0, x1, y1 with x right and y down.
Accepted files:

- JSON: ``[[x0, y0, x1, y1], ...]`` (one image); ``{"IMAGE": [x0, y0, x1, y1] or [[...], ...]}``;
  or ``[{"image": "IMAGE", "box": [x0, y0, x1, y1], "label": 3, "points": [[x, y, 1], [x, y, 0]]}, ...]``
  (``"points"``: clicks, 1 foreground and 0 background, in the order they are applied; an entry
  with points and no box is a point-only object).
- CSV with a header: columns ``x0,y0,x1,y1`` and optionally ``image`` and ``label`` (boxes only).

IMAGE is a file name or stem, matched against the images being segmented.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .clicks import Click, clicks_from_json


@dataclass(frozen=True)
class BoxPrompt:
    """One object on a 2D image: a box, clicks, or both.

    Attributes:
        box: ``(x0, y0, x1, y1)`` original pixels; None for a point-only object.
        image: the image the file names (None: the image being segmented).
        label: the value written for the object (None: automatic).
        points: clicks ``(x, y, 1|0)`` in the order they are applied.
    """

    box: tuple[float, float, float, float] | None
    image: str | None = None
    label: int | None = None
    points: tuple[Click, ...] = ()

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise ValueError("a prompt needs a box or at least one point")


def parse_box(text: str, dims: int = 2) -> tuple[float, ...]:
    """"X0,Y0,X1,Y1" (or the 6-number 3D form when ``dims`` is 3) -> a tuple of floats."""
    n = 2 * dims
    parts = [p for p in text.replace(" ", "").split(",") if p != ""]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != n:
        form = "X0,Y0,X1,Y1" if dims == 2 else "X0,Y0,Z0,X1,Y1,Z1"
        raise InputError(None, f"--box {text!r} is not {n} numbers {form}")
    return values


def _box(values: object, source: str, where: str) -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputError(source, f"{where}: a box must be 4 numbers x0, y0, x1, y1, got {values!r}") from None
    if len(box) != 4:
        raise InputError(source, f"{where}: a box must be 4 numbers x0, y0, x1, y1, got {len(box)}")
    return box  # type: ignore[return-value]


def _label(value: object, source: str, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        label = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InputError(source, f"{where}: label {value!r} is not an integer") from None
    if label < 1 or label > 65535:
        raise InputError(source, f"{where}: label {label} must be between 1 and 65535")
    return label


def _from_json(data: object, source: str) -> list[BoxPrompt]:
    prompts: list[BoxPrompt] = []
    if isinstance(data, dict):
        for image, boxes in data.items():
            nested = isinstance(boxes, list) and boxes and isinstance(boxes[0], (list, tuple))
            for i, b in enumerate(boxes if nested else [boxes]):
                prompts.append(BoxPrompt(_box(b, source, f"{image!r} box {i + 1}"), image=str(image)))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            where = f"entry {i + 1}"
            if isinstance(item, dict):
                if "box" not in item and "points" not in item:
                    raise InputError(source, f"{where} has no 'box' or 'points' key (keys: {', '.join(item)})")
                image = item.get("image")
                points = clicks_from_json(item["points"], 2, source, where) if "points" in item else ()
                if "box" not in item and not points:
                    raise InputError(source, f"{where}: 'points' is empty and there is no box")
                prompts.append(
                    BoxPrompt(
                        _box(item["box"], source, where) if "box" in item else None,
                        image=None if image is None else str(image),
                        label=_label(item.get("label"), source, where),
                        points=points,
                    )
                )
            else:
                prompts.append(BoxPrompt(_box(item, source, where)))
    else:
        raise InputError(source, "JSON boxes must be a list or an object")
    return prompts


def _from_csv(path: Path, source: str) -> list[BoxPrompt]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        need = ["x0", "y0", "x1", "y1"]
        if not all(c in fields for c in need):
            raise InputError(source, f"CSV header must have columns x0,y0,x1,y1 (and optionally image,label); found {fields}")
        prompts = []
        for row in reader:
            line = reader.line_num  # the file's line, also past skipped blank lines
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
            where = f"line {line}"
            prompts.append(
                BoxPrompt(
                    _box([row[c] for c in need], source, where),
                    image=row.get("image") or None,
                    label=_label(row.get("label"), source, where),
                )
            )
    return prompts


def read_boxes_file(path: str | os.PathLike) -> list[BoxPrompt]:
    """Read box prompts from a JSON or CSV file (see the module docstring)."""
    p = Path(path)
    source = str(path)
    if not p.is_file():
        raise InputError(source, "boxes file not found")
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(source, f"not valid JSON ({exc})") from None
        prompts = _from_json(data, source)
    elif suffix in (".csv", ".tsv", ".txt"):
        try:
            prompts = _from_csv(p, source)
        except UnicodeDecodeError as exc:
            raise InputError(source, f"not a UTF-8 text file ({exc})") from None
        except csv.Error as exc:
            raise InputError(source, f"not a readable CSV file ({exc})") from None
    else:
        raise InputError(source, "boxes file must end in .json or .csv")
    if not prompts:
        raise InputError(source, "no boxes in the file")
    return prompts


def prompts_for_image(prompts: list[BoxPrompt], image_path: Path) -> list[BoxPrompt]:
    """The prompts whose ``image`` names this file (by name or stem)."""
    names = {image_path.name, image_path.stem, str(image_path)}
    return [p for p in prompts if p.image is not None and (p.image in names or Path(p.image).stem == image_path.stem)]
