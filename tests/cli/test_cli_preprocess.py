"""`medsamkit preprocess` and `medsamkit inspect-cache`: the happy path, the summary, failed
cases, the MedSAM npy export and every bad input as a one-line error with exit code 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.cli.main import main
from medsamkit.data.cache import PreprocessedCache

_SPEC = importlib.util.spec_from_file_location(
    "synthetic_datasets", Path(__file__).resolve().parents[1] / "data" / "synthetic_datasets.py")
synth = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(synth)


def _one_line_error(capsys, code: int, *fragments: str) -> str:
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medsamkit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_preprocess_then_inspect(tmp_path: Path, capsys) -> None:
    source = synth.folder_pairs(tmp_path / "data", n=4)
    cache = tmp_path / "cache"
    assert main(["-q", "preprocess", str(source), "-o", str(cache), "--split", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "4 done, 0 skipped (already done), 0 failed, 0 empty; 5 samples in the cache" in out
    assert "4 cases (train 2, val 2), 5 samples" in out and "layout folder-pairs" in out
    assert main(["-q", "preprocess", str(source), "-o", str(cache), "--split", "0.5"]) == 0
    assert "0 done, 4 skipped (already done)" in capsys.readouterr().out

    pictures = tmp_path / "pictures"
    assert main(["-q", "inspect-cache", str(cache), "-o", str(pictures), "--n", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "model litemedsam (litemedsam geometry, 256 px)" in out and "label 2: 1 samples" in out
    tiles = sorted(p for p in pictures.glob("*.png") if p.name != "sheet.png")
    assert len(tiles) == 3
    for tile in tiles:
        image = cv2.imread(str(tile))
        assert image.shape == (256, 256, 3) and image.std() > 10  # a picture, not a blank
    sheet = cv2.imread(str(pictures / "sheet.png"))
    assert sheet.shape == (256, 3 * 256 + 2 * 2, 3)
    cached = PreprocessedCache(cache)
    index = int(tiles[0].name.split("_")[0])
    box = [int(round(v)) for v in cached[index].box]
    drawn = cv2.imread(str(tiles[0]))[:, :, ::-1]
    assert not np.array_equal(drawn[box[1], box[0]], cached[index].image[box[1], box[0]])  # box corner drawn
    assert main(["-q", "inspect-cache", str(cache), "-o", str(tmp_path / "val"), "--split", "val"]) == 0
    n_val = len(cached.subset("val"))
    assert 0 < n_val < 5 and f"wrote {n_val} sample pictures" in capsys.readouterr().out


def test_failed_case_is_listed_and_exit_code_1(tmp_path: Path, capsys) -> None:
    source = synth.folder_pairs(tmp_path / "data")
    (source / "images/img1.png").write_bytes(b"garbage")
    assert main(["-q", "preprocess", str(source), "-o", str(tmp_path / "cache")]) == 1
    out = capsys.readouterr().out
    assert "2 done, 0 skipped (already done), 1 failed, 0 empty" in out
    assert "  failed img1: " in out and "img1.png" in out


def test_export_medsam_npy_from_the_cli(tmp_path: Path, capsys) -> None:
    source = synth.nnunet(tmp_path / "data", n=1)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["case0"], "val": []}), encoding="utf-8")
    code = main(["-q", "preprocess", str(source), "-o", str(tmp_path / "cache"), "--split-file", str(split),
                 "--export-medsam-npy", str(tmp_path / "npy"), "--workers", "1", "--all-slices"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"MedSAM npy files in {tmp_path / 'npy'}" in out and "8 slices stored" in out
    assert len(list((tmp_path / "npy/gts").glob("case0-*.npy"))) == 6  # labelled slices only
    assert json.loads((tmp_path / "cache/splits.json").read_text(encoding="utf-8")) == {"train": ["case0"], "val": []}


BAD = [
    ("missing dataset", ["preprocess", "{t}/nope", "-o", "{t}/c"], ["{t}/nope: dataset folder not found"]),
    ("split range", ["preprocess", "{d}", "-o", "{t}/c", "--split", "1.5"],
     ["--split 1.5: the train fraction must be in (0, 1]"]),
    ("split and file", ["preprocess", "{d}", "-o", "{t}/c", "--split", "0.5", "--split-file", "x.json"],
     ["argument --split-file: not allowed with argument --split"]),
    ("workers", ["preprocess", "{d}", "-o", "{t}/c", "--workers", "0"], ["--workers 0: give 1 or more"]),
    ("min size", ["preprocess", "{d}", "-o", "{t}/c", "--min-size-2d", "-1"], ["--min-size-2d -1 must be >= 0"]),
    ("model", ["preprocess", "{d}", "-o", "{t}/c", "--model", "unet"], ["argument --model: invalid choice"]),
    ("window", ["preprocess", "{d}", "-o", "{t}/c", "--window", "wide"], ["cannot read CT window 'wide'"]),
    ("layout", ["preprocess", "{d}", "-o", "{t}/c", "--layout", "nnunet"],
     ["{d}: not a nnunet dataset: missing imagesTr/"]),
    ("split file", ["preprocess", "{d}", "-o", "{t}/c", "--split-file", "{t}/nope.json"],
     ["{t}/nope.json: split file not found"]),
    ("changed settings", ["preprocess", "{d}", "-o", "{t}/done", "--min-size-2d", "50"],
     ["{t}/done: this cache was built with other settings (min_size_2d 100 -> 50)", "--overwrite"]),
    ("not a cache", ["inspect-cache", "{d}", "-o", "{t}/p"], ["{d}: not a preprocess cache: no manifest.json"]),
    ("no split", ["inspect-cache", "{t}/done", "-o", "{t}/p", "--split", "test"], ["no 'test' split in this cache"]),
    ("n", ["inspect-cache", "{t}/done", "-o", "{t}/p", "--n", "0"], ["--n 0: draw at least one sample"]),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    source = synth.folder_pairs(root / "data")
    assert main(["-q", "preprocess", str(source), "-o", str(root / "done")]) == 0
    return root, source


@pytest.mark.parametrize("argv, fragments", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line(prepared, capsys, argv, fragments) -> None:
    root, source = prepared
    capsys.readouterr()
    fill = {"t": str(root), "d": str(source)}
    before = (root / "done/manifest.json").read_text(encoding="utf-8")
    try:
        code = main(["-q", *[a.format(**fill) for a in argv]])
    except SystemExit as exc:  # usage errors exit from argparse, also on one line
        code = exc.code
    _one_line_error(capsys, code, *[f.format(**fill) for f in fragments])
    assert (root / "done/manifest.json").read_text(encoding="utf-8") == before  # the cache is untouched
    assert not (root / "c").exists()  # nothing written for a refused run
