"""Cases and datasets as found on disk (file paths only; nothing is read here).

A :class:`Case` names the image file(s) and the label file of one sample; a :class:`Dataset`
is the list of cases of one folder plus what its layout tells about it (``meta``). The layouts
that build them live in :mod:`medsamkit.data.layouts`; this module also holds the file-name
helpers they share (double endings such as ``.nii.gz``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsamkit.errors import InputError
from medsamkit.io.image2d import SUPPORTED_2D_SUFFIXES

logger = logging.getLogger(__name__)

#: Volume file endings recognised when listing folders (reading is medsamkit.io.volume's job;
#: these are the endings it reads, kept here so listing files never needs SimpleITK).
VOLUME_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
#: Every ending a layout lists as an image or label file, longest first (".nii.gz" before ".gz").
SUPPORTED_ENDINGS: tuple[str, ...] = tuple(
    sorted(set(VOLUME_ENDINGS) | set(SUPPORTED_2D_SUFFIXES), key=len, reverse=True))


class FrozenDict(dict):
    """A read-only dict (for :attr:`Case.extra`) that still pickles and copies."""

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("Case.extra is read-only; use dataclasses.replace(case, extra=...)")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (type(self), (dict(self),))


@dataclass(frozen=True)
class Case:
    """One sample of a dataset: its image file(s) and label file.

    Attributes:
        case_id: unique name inside the dataset (file stem, folder name or relative path).
        images: image files; several for multi-channel cases (in channel order, e.g. nnU-Net
            ``_0000``, ``_0001``) or for frame folders (in frame order); one otherwise.
        label: the label file (or folder of label frames), None when the case has no label.
        split: ``"train"``, ``"val"``, ``"test"`` or None (not said by the layout).
        extra: read-only layout-specific details (frame files, rater masks, slice index, ...).
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    split: str | None = None
    extra: Mapping[str, Any] = field(default_factory=FrozenDict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        if self.label is not None:
            object.__setattr__(self, "label", Path(self.label))
        if not isinstance(self.extra, FrozenDict):
            object.__setattr__(self, "extra", FrozenDict(self.extra))


@dataclass
class Dataset:
    """The cases found in one folder.

    Attributes:
        root: the dataset folder.
        layout: the layout name (a key of :data:`medsamkit.data.layouts.LAYOUTS`).
        cases: the cases, sorted by split then id where the layout has no order of its own.
        meta: what the layout says about the data, e.g. nnU-Net's ``channel_names``, ``labels``
            (name -> value), ``file_ending`` and the raw ``dataset_json``.
    """

    root: Path
    layout: str
    cases: list[Case]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def case_ids(self) -> list[str]:
        """The ids of all cases, in order."""
        return [c.case_id for c in self.cases]

    def labelled(self) -> list[Case]:
        """The cases that have a label."""
        return [c for c in self.cases if c.label is not None]

    def by_split(self, split: str | None) -> list[Case]:
        """The cases of one split (``None`` gives the cases without a split)."""
        return [c for c in self.cases if c.split == split]

    def get(self, case_id: str) -> Case:
        """The case with this id; :class:`InputError` when there is none."""
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise InputError(self.root, f"no case {case_id!r} in this {self.layout} dataset")

    def with_split(self, train: Iterable[str], val: Iterable[str]) -> Dataset:
        """A copy whose cases in ``train``/``val`` get that split (others keep theirs).

        Raises :class:`InputError` when an id names no case (use
        :func:`medsamkit.data.splits.read_split_file` to read the lists from a file).
        """
        wanted = {**{i: "train" for i in train}, **{i: "val" for i in val}}
        unknown = sorted(set(wanted) - set(self.case_ids))
        if unknown:
            raise InputError(self.root, f"{len(unknown)} split ids name no case, "
                                        f"e.g. {', '.join(unknown[:5])}")
        cases = [dataclasses.replace(c, split=wanted.get(c.case_id, c.split)) for c in self.cases]
        return Dataset(self.root, self.layout, cases, dict(self.meta))


def split_ending(path: str | Path) -> tuple[str, str]:
    """``(stem, ending)`` of a file name, knowing double endings (``a.nii.gz``: ``.nii.gz``).

    The ending is returned in lower case; unknown endings fall back to the last suffix.
    """
    name = Path(path).name
    lower = name.lower()
    for ending in SUPPORTED_ENDINGS:
        if lower.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)], ending
    suffix = Path(name).suffix
    return (name[: -len(suffix)], suffix.lower()) if suffix else (name, "")


def list_files(folder: Path, endings: Iterable[str] = SUPPORTED_ENDINGS) -> list[Path]:
    """Plain, non-hidden files of ``folder`` with one of ``endings``, sorted by name.

    Hidden files (``.name``, e.g. macOS ``._case.nii.gz`` copies in MSD archives) are skipped.
    """
    wanted = {e.lower() for e in endings}
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and split_ending(p)[1] in wanted)


def index_by_stem(files: Iterable[Path], layout: str) -> dict[str, Path]:
    """``{stem: file}``; two files with one stem (``a.png`` and ``a.jpg``) raise InputError."""
    out: dict[str, Path] = {}
    for path in files:
        stem = split_ending(path)[0]
        if stem in out:
            raise InputError(path.parent, f"{layout}: {out[stem].name} and {path.name} have the "
                                          "same name; keep one file per case")
        out[stem] = path
    return out


def warn_unmatched(layout: str, what: str, names: Iterable[str]) -> None:
    """Log one warning with the count and a few examples of unmatched files or cases."""
    names = sorted(names)
    if names:
        more = f", ... ({len(names) - 5} more)" if len(names) > 5 else ""
        logger.warning("%s: %d %s: %s%s", layout, len(names), what, ", ".join(names[:5]), more)


def read_json(path: Path) -> Any:
    """Parse a JSON side file; :class:`InputError` naming it when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the JSON file: {exc}") from exc


def read_id_list(path: Path) -> list[str]:
    """Ids of a ``train.txt``-style file: one per line, blank lines skipped, endings dropped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the id list: {exc}") from exc
    return [split_ending(line.strip())[0] for line in lines if line.strip()]
