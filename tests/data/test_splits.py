"""Tests for medsamkit.data.splits: reproducible random splits and the JSON split file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsamkit.data.cases import Case
from medsamkit.data.layouts import read_split_file, split_cases, write_split_file
from medsamkit.errors import InputError


def test_split_is_reproducible_and_order_independent() -> None:
    ids = [f"case{i:04d}" for i in range(1000)]
    train, val = split_cases(ids, 0.88, seed=0)
    assert len(train) == 880 and len(val) == 120 and not set(train) & set(val)
    assert train == sorted(train) and set(train) | set(val) == set(ids)
    assert split_cases(list(reversed(ids)), 0.88, seed=0) == (train, val)
    assert split_cases(ids, 0.88, seed=1) != (train, val)
    cases = [Case(i, ()) for i in ids[:10]]
    assert split_cases(cases) == split_cases(ids[:10])
    assert len(split_cases(cases)[0]) == 8


def test_split_edge_cases() -> None:
    train, val = split_cases(["a", "b"], 0.99)  # round(1.98) = 2, but val keeps one case
    assert len(train) == len(val) == 1
    assert split_cases(["a", "b"], 1.0)[1] == []
    assert split_cases([], 0.8) == ([], [])
    with pytest.raises(InputError, match="fraction"):
        split_cases(["a"], 0.0)
    with pytest.raises(InputError, match="repeated: a"):
        split_cases(["a", "a", "b"])


def test_split_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "split.json"
    train, val = split_cases([f"c{i}" for i in range(10)], seed=3)
    assert write_split_file(path, train, val) == path
    assert json.loads(path.read_text(encoding="utf-8")) == {"train": train, "val": val}
    assert read_split_file(path, known_ids=train + val) == (train, val)
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temporary left


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "cannot read the split file as JSON"),
    ("[1, 2]", "a split file holds a JSON object"),
    ('{"train": ["a"]}', '"val" must be a list'),
    ('{"train": ["a", 3], "val": []}', '"train" must be a list of case id strings'),
    ('{"train": ["a", "a"], "val": []}', "the train list repeats ids: a"),
    ('{"train": ["a", "b"], "val": ["b"]}', "1 ids are in both train and val, e.g. b"),
    ('{"train": ["a", "x"], "val": ["y"]}', "2 ids name no case of the dataset, e.g. x, y"),
])
def test_read_split_file_errors(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=problem) as err:
        read_split_file(path, known_ids=["a", "b"])
    assert str(path) in str(err.value)


def test_split_file_missing_and_bad_write(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="split file not found"):
        read_split_file(tmp_path / "none.json")
    with pytest.raises(InputError, match="in both"):
        write_split_file(tmp_path / "s.json", ["a"], ["a"])
    assert not (tmp_path / "s.json").exists()
