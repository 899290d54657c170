"""`medsamkit evaluate` on synthetic 2D and 3D folders: report contents, failures, errors."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.cli.main import main
from medsamkit.data.splits import write_split_file
from medsamkit.evaluation.metrics import label_scores
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume


def make_2d(root: Path, n: int = 5) -> tuple[Path, Path, Path]:
    """Kvasir-like folders: RGB JPEG ground truth with grey edges, 0/255 PNG predictions
    (case 0 empty, the last one missing), RGB images."""
    gt, pred, images = root / "gt", root / "pred", root / "images"
    for d in (gt, pred, images):
        d.mkdir(parents=True)
    for i in range(n):
        g = np.zeros((60, 80), np.uint8)
        cv2.ellipse(g, (35 + i, 30), (18, 12 + i), 0, 0, 360, 255, -1)
        g = cv2.GaussianBlur(g, (5, 5), 0)
        cv2.imwrite(str(gt / f"img{i}.jpg"), np.dstack([g] * 3))
        cv2.imwrite(str(images / f"img{i}.jpg"), np.dstack([g // 3 + 50] * 3))
        p = np.zeros((60, 80), np.uint8)
        if i > 0:
            cv2.ellipse(p, (36 + 2 * i, 31), (17, 12), 0, 0, 360, 255, -1)
        if i < n - 1:
            cv2.imwrite(str(pred / f"img{i}.png"), p)
    return pred, gt, images


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_2d_report_matches_direct_metrics(tmp_path, capsys):
    pred, gt, images = make_2d(tmp_path)
    out = tmp_path / "report"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--tolerance", "2",
               "--images", str(images), "--workers", "2"])
    assert rc == 0
    assert "report in" in capsys.readouterr().out
    rows = {r["case"]: r for r in read_csv(out / "per_case.csv")}
    assert sorted(rows) == [f"img{i}" for i in range(5)]
    for i in range(1, 4):
        g = cv2.imread(str(gt / f"img{i}.jpg"))[:, :, 0] > 127
        p = cv2.imread(str(pred / f"img{i}.png"), cv2.IMREAD_GRAYSCALE) > 0
        want = label_scores(p, g, tolerance=2.0)[1]
        assert float(rows[f"img{i}"]["dsc"]) == pytest.approx(want.dsc)
        assert float(rows[f"img{i}"]["nsd"]) == pytest.approx(want.nsd)
        assert float(rows[f"img{i}"]["hd95"]) == pytest.approx(want.hd95)
    assert rows["img0"]["dsc"] == "0.0" and rows["img0"]["status"] == "ok"  # empty prediction
    assert rows["img4"]["status"] == "missing" and rows["img4"]["hd95"] == "inf"
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_failed"] == 1 and summary["missing_predictions"] == ["img4"]
    assert summary["images_dir"] == str(images.resolve())
    dsc = [float(rows[c]["dsc"]) for c in sorted(rows)]
    assert summary["overall"]["dsc"]["mean"] == pytest.approx(np.mean(dsc))
    assert summary["overall"]["dsc"]["median"] == pytest.approx(np.median(dsc))
    assert f"{np.mean(dsc):.4f}" in (out / "summary.md").read_text(encoding="utf-8")


def test_cases_from_a_split_file_and_labels(tmp_path):
    pred, gt, _ = make_2d(tmp_path)
    split = write_split_file(tmp_path / "split.json", ["img0", "img1", "img4"], ["img2", "img3"])
    out = tmp_path / "r"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out),
                 "--cases", f"{split}:val", "--labels", "1,2"]) == 0
    rows = read_csv(out / "per_case.csv")
    assert sorted({r["case"] for r in rows}) == ["img2", "img3"]
    assert [r["dsc"] for r in rows if r["label"] == "2"] == ["nan", "nan"]  # label 2 nowhere
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["per_label"]["2"]["dsc"]["n_nan"] == 2 and summary["n_failed"] == 0


def test_3d_report_uses_the_volume_spacing(tmp_path):
    gt, pred = tmp_path / "labelsTr", tmp_path / "pred"
    geo = Geometry((4.0, 1.0, 1.0), origin=(-5.0, 3.0, 1.0))
    g = np.zeros((6, 24, 24), np.uint8)
    g[1:5, 4:12, 4:12], g[2:5, 14:22, 12:20] = 1, 2
    p = np.roll(g, 1, axis=0)
    write_volume(gt / "case_01.nii.gz", g, geo)
    write_volume(pred / "case_01.nii.gz", p, geo)
    out = tmp_path / "r"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--tolerance", "3"]) == 0
    rows = read_csv(out / "per_case.csv")
    assert [r["label"] for r in rows] == ["1", "2"]
    want = label_scores(p, g, spacing=(4.0, 1.0, 1.0), tolerance=3.0)
    for r in rows:
        assert float(r["hd95"]) == pytest.approx(want[int(r["label"])].hd95, rel=1e-6)
        assert float(r["nsd"]) == pytest.approx(want[int(r["label"])].nsd, rel=1e-6)
    assert math.isclose(float(rows[0]["hd95"]), 4.0, rel_tol=1e-6)  # one slice of 4 mm


def one_line_error(capsys) -> str:
    """The one error line (last on stderr, after any warnings and progress bars); no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("medsamkit: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and not any("Traceback" in line for line in err), err
    return errors[0]


def test_shape_mismatch_is_an_error_naming_both_files(tmp_path, capsys):
    pred, gt, _ = make_2d(tmp_path)
    cv2.imwrite(str(pred / "img2.png"), np.zeros((30, 30), np.uint8))
    out = tmp_path / "r"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)]) == 2
    line = one_line_error(capsys)
    assert "img2.png" in line and "img2.jpg" in line and "differs" in line
    assert not out.exists()


@pytest.mark.parametrize("extra,expect", [
    (["--labels", "1,x"], "--labels"),
    (["--labels", "0"], "positive"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--workers", "0"], "--workers"),
    (["--spacing", "1,2,3,4"], "--spacing"),
    (["--gt-threshold", "half"], "threshold"),
    (["--cases", "nope.json:val"], "split file not found"),
])
def test_bad_options(tmp_path, capsys, extra, expect):
    pred, gt, _ = make_2d(tmp_path)
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "r"), *extra]) == 2
    assert expect in one_line_error(capsys)


def test_missing_folder(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path / "none"), "--gt", str(tmp_path), "-o", str(tmp_path / "r")]) == 2
    assert "prediction folder not found" in one_line_error(capsys)


def test_ascii_terminal_gets_the_table_not_a_crash(tmp_path):
    """Under an ASCII locale (PYTHONUTF8=0, LC_ALL=C) the table's '±' is escaped on stdout, the
    report files stay UTF-8, and the command succeeds."""
    pred, gt, _ = make_2d(tmp_path)
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "PYTHONIOENCODING": ""}
    code = "import sys; from medsamkit.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "evaluate", "--pred", str(pred), "--gt", str(gt),
                           "-o", str(out)], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode("ascii", "replace")
    assert b"\\xb1" in proc.stdout  # '±' escaped for the ASCII terminal
    assert "±" in (out / "summary.md").read_text(encoding="utf-8")


def test_most_cases_missing_warns_and_only_predicted_scores_the_subset(tmp_path, capsys):
    pred, gt, _ = make_2d(tmp_path)
    for i in (0, 2, 3):
        (pred / f"img{i}.png").unlink()  # predictions for img1 only: 4 of 5 cases missing
    out = tmp_path / "all"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "4 of 5 cases (most) have no prediction and count as failures (DSC 0)" in err
    assert "use --only-predicted" in err
    rows = {r["case"]: r for r in read_csv(out / "per_case.csv")}
    assert len(rows) == 5 and sum(r["status"] == "missing" for r in rows.values()) == 4  # the honest default

    out = tmp_path / "subset"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out), "--only-predicted"]) == 0
    err = capsys.readouterr().err
    assert "scoring the 1 predicted case(s) only; 4 case(s) without a prediction are left out" in err
    rows = {r["case"]: r for r in read_csv(out / "per_case.csv")}
    assert list(rows) == ["img1"] and rows["img1"]["status"] == "ok"
    g = cv2.imread(str(gt / "img1.jpg"))[:, :, 0] > 127
    p = cv2.imread(str(pred / "img1.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert float(rows["img1"]["dsc"]) == pytest.approx(label_scores(p, g)[1].dsc)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_failed"] == 0


def test_only_predicted_with_no_prediction_is_an_error(tmp_path, capsys):
    pred, gt, _ = make_2d(tmp_path)
    for p in pred.iterdir():
        p.unlink()
    (pred / "other.png").write_bytes((gt / "img0.jpg").read_bytes())
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "r"), "--only-predicted"]) == 2
    assert "no prediction matches a ground-truth case: nothing to score" in capsys.readouterr().err
