"""`medsamkit segment --point`: clicks on 2D images and volumes from the command line and from
prompts files, through the same session as the Python API, and every bad point refused with
exit code 2 and one line naming the option or file and the problem.

The model is the stub of tests/inference/stub_predictor.py (a box takes the bright pixels, a
click floods its region), so the expected masks are exact; the real model's CLI runs are in
test_cli_segment.py and test_cli_segment3d.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.cli import common, segment3d
from medsamkit.cli.main import main
from medsamkit.evaluation.overlay import display_scale
from medsamkit.cli.prompt_args import OrderedAppend, group_points
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import read_volume, write_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from stub_predictor import StubPredictor  # noqa: E402

H, W = 60, 90


@pytest.fixture(autouse=True)
def stub_model(monkeypatch):
    def make(args, mode="latency"):
        return StubPredictor(), None

    monkeypatch.setattr(common, "make_predictor", make)
    monkeypatch.setattr(segment3d, "make_predictor", make)


def ring() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:H, :W]
    r = np.hypot(x - 45, y - 30)
    grey = np.full((H, W), 40, np.uint8)
    grey[r <= 20] = 200
    grey[r <= 13] = 150
    return grey, (r <= 20) & (r > 13)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("points")
    grey, truth = ring()
    cv2.imwrite(str(d / "ring.png"), grey)
    volume = np.repeat(grey[None], 8, axis=0).astype(np.int16)
    write_volume(d / "tube.nii.gz", volume, Geometry(spacing=(4.0, 0.7, 1.3)))
    return d, truth


def run(capsys, *argv):
    code = main(["-q", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def read_png(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_a_background_click_after_the_box_gives_the_ring(files, tmp_path, capsys):
    d, truth = files
    out, overlay = tmp_path / "m.png", tmp_path / "o.png"
    code, stdout, err = run(capsys, "segment", d / "ring.png", "--box", "24,9,66,51", "--point", "45,30,0",
                            "-o", out, "--overlay", overlay)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"wrote {out} (1 object, 1 click, 1 non-empty object)"
    np.testing.assert_array_equal(read_png(out), np.where(truth, 255, 0))
    picture = read_png(overlay)  # BGR on disk: the background click is a red disc
    k = display_scale(truth.shape)  # the overlay enlarges small images: pixel (y, x) -> block (y*k, x*k)
    assert tuple(picture[30 * k + k // 2, 45 * k + k // 2]) == (0, 0, 220)
    code, _, _ = run(capsys, "segment", d / "ring.png", "--box", "24,9,66,51", "-o", tmp_path / "box.png")
    assert (read_png(tmp_path / "box.png") > 0).sum() > truth.sum()  # without the click: the disc


def test_points_belong_to_the_box_before_them_and_leading_points_make_an_object(files, tmp_path, capsys):
    d, truth = files
    out = tmp_path / "m.png"
    code, stdout, err = run(capsys, "segment", d / "ring.png", "--point", "45,12,1", "--box", "0,0,10,10",
                            "--box", "24,9,66,51", "--point", "45,30,0", "--label", "3", "--label", "4",
                            "--label", "5", "-o", out)
    assert code == 0, err
    labels = read_png(out)
    # the point-only object (label 3) floods the ring; the third object (label 5) is the ring too
    assert set(np.unique(labels[truth])) <= {3, 5} and not labels[~truth].any()
    assert "3 objects, 2 clicks" in stdout


def test_prompts_file_points_replay_like_the_options(files, tmp_path, capsys):
    d, truth = files
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"box": [24, 9, 66, 51], "points": [[45, 30, 0]], "label": 7}]), encoding="utf-8")
    code, _, err = run(capsys, "segment", d / "ring.png", "--boxes-file", prompts, "-o", tmp_path / "m.png")
    assert code == 0, err
    np.testing.assert_array_equal(read_png(tmp_path / "m.png"), np.where(truth, 7, 0))


def test_volume_clicks_land_on_their_slice(files, tmp_path, capsys):
    d, truth = files
    out = tmp_path / "seg.nii.gz"
    code, stdout, err = run(capsys, "segment", d / "tube.nii.gz", "--box", "24,9,0,66,51,7", "--point", "45,30,5,0",
                            "--modality", "rgb", "-o", out)
    assert code == 0, err
    labels, geometry = read_volume(out)
    assert geometry.spacing == pytest.approx((4.0, 0.7, 1.3))
    np.testing.assert_array_equal(labels[5].astype(bool), truth)
    assert labels[4].astype(bool).sum() > truth.sum()  # other slices keep the disc
    assert "1 object, 1 click" in stdout


@pytest.mark.parametrize("argv, problem", [
    (["--box", "24,9,66,51", "--point", "45,30,5,0"], "--point '45,30,5,0': a point on a 2D image is X,Y,LABEL: it has no z"),
    (["--box", "24,9,66,51", "--point", "95,30,0"], "point 95,30,0 lies outside the 90x60 image"),
    (["--box", "24,9,66,51", "--point", "45,30,2"], "its label must be 1 (foreground) or 0 (background), got 2"),
    (["--box", "24,9,66,51", "--point", "45,30"], "a point is 3 numbers X,Y,LABEL, got 2"),
    (["--point", "45,30,1", "--box", "1,1,9,9", "--label", "2"], "1 --label values for 1 --box prompts and a point-only"),
])
def test_bad_points_on_an_image(files, tmp_path, capsys, argv, problem):
    d, _ = files
    out = tmp_path / "m.png"
    code, stdout, err = run(capsys, "segment", d / "ring.png", *argv, "-o", out)
    assert code == 2 and problem in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("argv, problem", [
    (["--box", "24,9,0,66,51,7", "--point", "45,30,0"], "its slice z is missing"),
    (["--box", "24,9,0,66,51,7", "--point", "45,30,8,1"], "lies outside the volume (x 0..89, y 0..59, z 0..7)"),
    (["--point", "45,30,3,0"], "a point-only object needs a foreground point"),
])
def test_bad_points_on_a_volume(files, tmp_path, capsys, argv, problem):
    d, _ = files
    code, _, err = run(capsys, "segment", d / "tube.nii.gz", *argv, "-o", tmp_path / "s.nii.gz")
    assert code == 2 and problem in err and len(err.splitlines()) == 1, err


def test_group_points_follows_the_command_line_order():
    p = argparse.ArgumentParser()
    for name in ("--box", "--recist", "--point"):
        p.add_argument(name, action=OrderedAppend, default=[])
    args = p.parse_args(["--point", "a", "--box", "b1", "--point", "c", "--point", "d", "--recist", "r1",
                         "--point", "e", "--box", "b2"])
    groups = group_points(args)
    assert groups.leading == ["a"] and groups.by_box == {0: ["c", "d"]} and groups.by_recist == {0: ["e"]}
    assert args.box == ["b1", "b2"] and args.point == ["a", "c", "d", "e"]


def test_a_session_written_as_a_prompts_file_replays_to_the_same_labels(files, tmp_path, capsys):
    """The web app's and the Python session's prompts file, replayed by the CLI: same label map."""
    from medsamkit.inference.clicks import write_prompts_file
    from medsamkit.inference.prompts3d import VolumePrompt
    from medsamkit.inference.session import Session2D
    from medsamkit.inference.session3d import Session3D

    d, truth = files
    grey = cv2.imread(str(d / "ring.png"), cv2.IMREAD_GRAYSCALE)
    session = Session2D(StubPredictor(), np.repeat(grey[:, :, None], 3, axis=2))
    a = session.add_object((24, 9, 66, 51), label=2)
    session.add_click(a, (45, 30, 0))
    session.add_object(points=[(5, 5, 1)], label=9)
    write_prompts_file(tmp_path / "p2.json", session.prompt_records())
    code, _, err = run(capsys, "segment", d / "ring.png", "--boxes-file", tmp_path / "p2.json", "-o", tmp_path / "m.png")
    assert code == 0, err
    np.testing.assert_array_equal(read_png(tmp_path / "m.png"), session.label_map())

    volume, _ = read_volume(d / "tube.nii.gz")
    session3d = Session3D(StubPredictor(), volume.astype(np.uint8))
    obj = session3d.add_object(VolumePrompt((24, 9, 66, 51), 3, (2, 5), 4))
    session3d.add_click(obj, (45, 30, 4, 0))
    session3d.add_click(obj, (50, 20, 7, 1))  # extends the range to slice 7
    write_prompts_file(tmp_path / "p3.json", session3d.prompt_records())
    out = tmp_path / "s.nii.gz"
    code, _, err = run(capsys, "segment", d / "tube.nii.gz", "--boxes-file", tmp_path / "p3.json", "--modality", "rgb",
                       "-o", out)
    assert code == 0, err
    replayed, _ = read_volume(out)
    np.testing.assert_array_equal(replayed, session3d.label_map())
    assert replayed[7].any() and not replayed[0].any()


def test_local_clicks_reach_the_session_on_images_and_volumes(files, tmp_path, capsys, monkeypatch):
    from stub_predictor import IgnoresClicks

    def make(args, mode="latency"):
        return IgnoresClicks(), None

    monkeypatch.setattr(common, "make_predictor", make)
    monkeypatch.setattr(segment3d, "make_predictor", make)
    d, truth = files
    image = ["segment", d / "ring.png", "--box", "24,9,66,51", "--point", "45,30,0"]
    code, _, err = run(capsys, *image, "-o", tmp_path / "plain.png")
    assert code == 0, err
    assert (read_png(tmp_path / "plain.png") > 0).sum() > truth.sum()  # the model ignored the click
    code, _, err = run(capsys, *image, "--local-clicks", "-o", tmp_path / "local.png")
    assert code == 0, err
    local = read_png(tmp_path / "local.png") > 0
    assert not local[30, 45] and 2 * (local & truth).sum() / (local.sum() + truth.sum()) > 0.9
    volume = ["segment", d / "tube.nii.gz", "--box", "24,9,0,66,51,7", "--point", "45,30,5,0", "--modality", "rgb"]
    code, _, err = run(capsys, *volume, "--local-clicks", "-o", tmp_path / "local.nii.gz")
    assert code == 0, err
    labels = read_volume(tmp_path / "local.nii.gz")[0].astype(bool)
    assert not labels[5, 30, 45] and labels[4, 30, 45]  # the clicked slice only
