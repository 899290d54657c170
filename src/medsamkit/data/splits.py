"""Train/validation splits: a reproducible random split and a JSON split file.

The split file is ``{"train": [ids...], "val": [ids...]}`` (case ids as given by
:mod:`medsamkit.data.layouts`). MedSAM splits each dataset 80/20 at random; the Kvasir-SEG study
used 880/120. Fix the seed, write the file once, and train every model against the same file.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsamkit.errors import InputError
from medsamkit.io.writers import atomic_output

logger = logging.getLogger(__name__)


def _case_id(item: Any) -> str:
    """The id of a Case-like object (``.case_id``) or of a plain string."""
    return item if isinstance(item, str) else str(item.case_id)


def _repeated(ids: Iterable[str]) -> list[str]:
    """Ids that occur more than once, sorted."""
    return sorted(i for i, n in Counter(ids).items() if n > 1)


def split_cases(cases: Iterable[Any], fraction: float = 0.8,
                seed: int = 0) -> tuple[list[str], list[str]]:
    """Randomly split cases into training and validation ids, reproducibly.

    The ids are sorted before shuffling with ``numpy.random.default_rng(seed)``, so the result
    depends only on the set of ids, the fraction and the seed (not on listing order).

    Args:
        cases: :class:`~medsamkit.data.layouts.Case` objects or case ids.
        fraction: share of cases for training, in (0, 1]; ``round(n * fraction)`` cases go to
            training, at least one to each side when there are two cases or more and
            ``fraction < 1``.
        seed: the random seed.

    Returns:
        ``(train_ids, val_ids)``, each sorted.
    """
    ids = sorted(_case_id(c) for c in cases)
    dupes = _repeated(ids)
    if dupes:
        raise InputError(None, f"case ids must be unique; repeated: {', '.join(dupes[:5])}")
    if not 0.0 < fraction <= 1.0:
        raise InputError(None, f"the training fraction must be in (0, 1], got {fraction}")
    n = len(ids)
    n_train = int(round(n * fraction))
    if n >= 2 and fraction < 1.0:
        n_train = min(max(n_train, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    train = sorted(ids[i] for i in order[:n_train])
    val = sorted(ids[i] for i in order[n_train:])
    logger.info("split %d cases into %d train / %d val (seed %d)", n, len(train), len(val), seed)
    return train, val


def _check_split(train: Sequence[str], val: Sequence[str], source: str | None) -> None:
    """Raise :class:`InputError` for repeated ids or ids in both lists."""
    for name, ids in (("train", train), ("val", val)):
        dupes = _repeated(ids)
        if dupes:
            raise InputError(source, f"the {name} list repeats ids: {', '.join(dupes[:5])}")
    both = sorted(set(train) & set(val))
    if both:
        raise InputError(source, f"{len(both)} ids are in both train and val, "
                                 f"e.g. {', '.join(both[:5])}")


def write_split_file(path: str | os.PathLike, train: Sequence[str], val: Sequence[str]) -> Path:
    """Write ``{"train": [...], "val": [...]}`` to ``path`` atomically; return the path."""
    train, val = [str(i) for i in train], [str(i) for i in val]
    _check_split(train, val, os.fspath(path))
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"train": train, "val": val}, indent=1) + "\n",
                       encoding="utf-8")
    logger.info("wrote split file %s (%d train, %d val)", path, len(train), len(val))
    return Path(path)


def read_split_file(path: str | os.PathLike,
                    known_ids: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """Read and validate a split file written by :func:`write_split_file`.

    Checks: valid JSON object with ``"train"`` and ``"val"`` lists of strings, no repeated ids,
    no id in both, and (when ``known_ids`` is given) every id names a known case. Other keys
    (for example ``"test"``) are ignored. Raises :class:`InputError` naming the file.
    """
    source = os.fspath(path)
    p = Path(source)
    if not p.is_file():
        raise InputError(source, "split file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(source, f"cannot read the split file as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(source, 'a split file holds a JSON object {"train": [...], "val": [...]}')
    lists = []
    for key in ("train", "val"):
        ids = data.get(key)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InputError(source, f'"{key}" must be a list of case id strings')
        lists.append(ids)
    train, val = lists
    _check_split(train, val, source)
    if known_ids is not None:
        known = set(known_ids)
        unknown = sorted(i for i in (*train, *val) if i not in known)
        if unknown:
            raise InputError(source, f"{len(unknown)} ids name no case of the dataset, "
                                     f"e.g. {', '.join(unknown[:5])}")
    return train, val
