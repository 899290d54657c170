"""Clicks: the --point text form, the prompts files' "points", and the checks against an image or a
volume, with an error that names the option or file and the problem for every bad point."""

from __future__ import annotations

import json

import pytest

from medsamkit.errors import InputError
from medsamkit.inference.clicks import Click, check_clicks_2d, check_clicks_3d, clicks_from_json, parse_point
from medsamkit.inference.prompts import BoxPrompt, read_boxes_file
from medsamkit.inference.prompts3d import PromptSpec, VolumePrompt, read_boxes3d_file


@pytest.mark.parametrize("text, dims, expected", [
    ("10,20,1", 2, Click(10, 20, 1)),
    (" 10.5, 20 , 0 ", 2, Click(10.5, 20, 0)),
    ("3,4,7,1", 3, Click(3, 4, 1, z=7)),
    ("3,4,7.0,0", 3, Click(3, 4, 0, z=7)),
])
def test_parse_point_good(text, dims, expected):
    assert parse_point(text, dims) == expected


@pytest.mark.parametrize("text, dims, problem", [
    ("10,20", 2, "a point is 3 numbers X,Y,LABEL, got 2"),
    ("10,20,5,1", 2, "a point on a 2D image is X,Y,LABEL: it has no z"),
    ("10,20,1", 3, "its slice z is missing"),
    ("1,2,3,4,5", 3, "a point is 4 numbers X,Y,Z,LABEL, got 5"),
    ("10,20,2", 2, "its label must be 1 (foreground) or 0 (background), got 2"),
    ("10,20,-1", 2, "got -1"),
    ("a,b,1", 2, "is not numbers X,Y,LABEL"),
    ("1,2,3.5,1", 3, "z 3.5 is not a whole slice number"),
    ("nan,2,1", 2, "non-finite"),
])
def test_parse_point_bad(text, dims, problem):
    with pytest.raises(InputError) as err:
        parse_point(text, dims)
    assert str(err.value).startswith(f"--point {text!r}: ") and problem in str(err.value)


def test_click_order_and_forms():
    c = Click(1.5, 2, 1, z=3)
    assert c.as_list() == [1.5, 2, 3, 1] and c.describe() == "1.5,2,3,1" and c.positive
    assert Click(1, 2, 0).as_list() == [1, 2, 0] and not Click(1, 2, 0).positive
    with pytest.raises(TypeError):
        Click(1, 2, 3, 1)  # z is keyword-only: the text order X,Y,Z,LABEL cannot be mistaken


def test_checks_against_the_image_and_the_volume():
    check_clicks_2d([Click(0, 0, 1), Click(89.5, 59.5, 0)], (60, 90))
    for bad in (Click(90, 5, 1), Click(-1, 5, 1), Click(5, 60, 0)):
        with pytest.raises(InputError, match="lies outside the 90x60 image") as err:
            check_clicks_2d([bad], (60, 90), "img.png")
        assert str(err.value).startswith("img.png: ")
    with pytest.raises(InputError, match="has a z but the image is 2D"):
        check_clicks_2d([Click(1, 1, 1, z=0)], (60, 90))
    check_clicks_3d([Click(63, 39, 1, z=9)], (10, 40, 64))
    with pytest.raises(InputError, match=r"z 0..9\)"):
        check_clicks_3d([Click(5, 5, 1, z=10)], (10, 40, 64), "v.nii.gz")
    with pytest.raises(InputError, match="has no slice z"):
        check_clicks_3d([Click(5, 5, 1)], (10, 40, 64))


def write(tmp_path, content, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_2d_prompts_file_with_points(tmp_path):
    path = write(tmp_path, [{"box": [1, 2, 30, 40], "label": 3, "points": [[5, 6, 1], [7, 8, 0]]},
                            {"image": "b.png", "points": [[9, 9, 1]]}, [0, 0, 4, 4]])
    prompts = read_boxes_file(path)
    assert prompts[0] == BoxPrompt((1, 2, 30, 40), None, 3, (Click(5, 6, 1), Click(7, 8, 0)))
    assert prompts[1] == BoxPrompt(None, "b.png", None, (Click(9, 9, 1),))
    assert prompts[2].points == ()


@pytest.mark.parametrize("entry, problem", [
    ({"box": [1, 2, 3, 4], "points": [[5, 6, 1, 1]]}, "entry 1 point 1: a point on a 2D image is X,Y,LABEL: it has no z"),
    ({"box": [1, 2, 3, 4], "points": [[5, 6, 3]]}, "entry 1 point 1: point 5,6,3: its label must be 1"),
    ({"box": [1, 2, 3, 4], "points": [5, 6, 1]}, "entry 1 point 1: a point is a list"),
    ({"box": [1, 2, 3, 4], "points": "5,6,1"}, "entry 1: 'points' must be a list"),
    ({"points": []}, "entry 1: 'points' is empty and there is no box"),
    ({"label": 2}, "entry 1 has no 'box' or 'points' key"),
])
def test_2d_prompts_file_bad_points(tmp_path, entry, problem):
    path = write(tmp_path, [entry])
    with pytest.raises(InputError) as err:
        read_boxes_file(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)


def test_3d_prompts_file_with_points(tmp_path):
    path = write(tmp_path, [{"box": [1, 2, 3, 30, 40, 9], "points": [[5, 6, 4, 1]]},
                            {"points": [[9, 9, 2, 0], [10, 12, 5, 1]], "label": 4}])
    specs = read_boxes3d_file(path)
    assert specs[0].kind == "box3d" and specs[0].points == (Click(5, 6, 1, z=4),)
    assert specs[1].kind == "points" and specs[1].label == 4
    shape = (10, 50, 60)
    assert specs[0].resolve(shape).points == (Click(5, 6, 1, z=4),)
    # point-only: key slice = the first foreground click's slice; range: the whole volume
    assert specs[1].resolve(shape) == VolumePrompt(None, 5, (0, 9), 4, specs[1].points)


@pytest.mark.parametrize("entry, problem", [
    ({"box": [1, 2, 3, 30, 40, 9], "points": [[5, 6, 1]]}, "its slice z is missing"),
    ({"box": [1, 2, 3, 30, 40, 9], "points": [[5, 6, 4.5, 1]]}, "z 4.5 is not a whole slice number"),
    ({"box": [1, 2, 3, 30, 40, 9], "points": [[5, 6, 12, 1]]}, "lies outside the volume (x 0..59, y 0..49, z 0..9)"),
    ({"points": [[5, 6, 2, 0]]}, "needs a foreground point"),
])
def test_3d_prompts_file_bad_points(tmp_path, entry, problem):
    path = write(tmp_path, [entry])
    with pytest.raises(InputError) as err:
        [s.resolve((10, 50, 60), source="vol.nii.gz") for s in read_boxes3d_file(path)]
    assert problem in str(err.value)


def test_prompt_types_need_something():
    with pytest.raises(ValueError):
        BoxPrompt(None)
    with pytest.raises(ValueError):
        VolumePrompt(None, 1, (0, 2))
    with pytest.raises(ValueError):
        PromptSpec("points", ())
    assert "2 points" in VolumePrompt((1, 2, 3, 4), 1, (0, 2), None, (Click(1, 1, 1, z=1), Click(2, 2, 0, z=1))).describe()
