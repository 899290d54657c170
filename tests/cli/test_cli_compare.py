"""`medsamkit compare` on two reports made by `medsamkit evaluate`: table, plots, grid."""

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image
from test_cli_evaluate import make_2d, one_line_error

from medsamkit.cli.main import main
from medsamkit.evaluation.plots import grid_size


@pytest.fixture
def two_reports(tmp_path):
    pred, gt, images = make_2d(tmp_path / "data")
    box = tmp_path / "data" / "box"
    box.mkdir()
    for p in sorted(gt.iterdir()):  # a second "model": the bounding box of the ground truth
        g = cv2.imread(str(p))[:, :, 0] > 127
        ys, xs = np.nonzero(g)
        m = np.zeros(g.shape, np.uint8)
        m[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 255
        cv2.imwrite(str(box / f"{p.stem}.png"), m)
    reports = []
    for name, folder in (("model", pred), ("box", box)):
        out = tmp_path / f"rep_{name}"
        assert main(["evaluate", "--pred", str(folder), "--gt", str(gt), "-o", str(out),
                     "--images", str(images), "--tolerance", "2"]) == 0
        reports.append(out)
    return reports


def test_table_plots_and_grid(two_reports, tmp_path, capsys):
    out = tmp_path / "cmp"
    capsys.readouterr()
    assert main(["compare", *map(str, two_reports), "--names", "seg,box", "-o", str(out), "--panel", "96"]) == 0
    printed = capsys.readouterr().out
    table = (out / "comparison.md").read_text(encoding="utf-8")
    assert table in printed
    for name, rep in (("seg", two_reports[0]), ("box", two_reports[1])):
        summary = json.loads((rep / "summary.json").read_text(encoding="utf-8"))
        dsc = summary["overall"]["dsc"]
        assert f"| {name} | {dsc['mean']:.4f} ± {dsc['std']:.4f} | {dsc['median']:.4f} |" in table
    assert "| seg |" in table and table.count("\n| ") == 3  # header + two models
    for metric in ("dsc", "nsd", "hd95"):
        with Image.open(out / f"boxplot_{metric}.png") as im:
            assert im.size[0] > 200 and np.asarray(im.convert("L")).std() > 10
    with Image.open(out / "grid.png") as im:
        height, width = grid_size(3, 2, 96)
        assert im.size == (width, height)
    assert "(best)" in printed and "(worst)" in printed


def test_chosen_cases_and_moved_predictions(two_reports, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(json.loads((two_reports[0] / "summary.json").read_text(encoding="utf-8"))["pred_dir"], moved)
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, two_reports), "-o", str(out), "--cases", "img1,img2",
                 "--pred-dirs", f"{moved},{tmp_path / 'data' / 'box'}", "--panel", "64"]) == 0
    with Image.open(out / "grid.png") as im:
        height, width = grid_size(2, 2, 64)
        assert im.size == (width, height)


@pytest.mark.parametrize("extra,expect", [
    (["--names", "a"], "one name per report"),
    (["--cases", "nope"], "not in every report"),
    (["--n", "0"], "--n"),
    (["--pred-dirs", "x"], "prediction folders"),
])
def test_errors(two_reports, tmp_path, capsys, extra, expect):
    assert main(["compare", *map(str, two_reports), "-o", str(tmp_path / "c"), *extra]) == 2
    assert expect in one_line_error(capsys)


def test_not_a_report(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "-o", str(tmp_path / "c")]) == 2
    assert "summary.json" in one_line_error(capsys)
