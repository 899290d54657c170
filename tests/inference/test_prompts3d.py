"""Volume prompts: 3D boxes, 2D boxes on a slice, RECIST lines, files and boxes from labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsamkit.errors import InputError
from medsamkit.inference.prompts3d import (
    RECIST_BOX_SCALE,
    PromptSpec,
    VolumePrompt,
    box_spec,
    check_prompt,
    default_z_range,
    prompts_from_labels,
    read_boxes3d_file,
    recist_spec,
)
from medsamkit.io.geometry import Geometry

SHAPE = (20, 60, 80)  # z, y, x
VOL = "vol.nii.gz"


def test_3d_box_key_slice_is_litemedsams_middle_slice():
    p = box_spec("2,3,10,20,30,15").resolve(SHAPE, source=VOL)
    assert p == VolumePrompt((2.0, 3.0, 20.0, 30.0), 12, (10, 15), None, bounded=True)  # int((15 - 10) / 2 + 10)
    assert VolumePrompt.from_box3d((2, 3, 10, 20, 30, 16)).key_slice == 13
    # a one-slice box is allowed: key = that slice
    assert box_spec("2,3,4,20,30,4").resolve(SHAPE).z_range == (4, 4)


def test_2d_box_on_a_slice_with_and_without_range():
    geometry = Geometry(spacing=(2.5, 0.5, 0.5))
    p = box_spec("10,10,30,20", label=4, key_slice=8, z_range=(6, 12)).resolve(SHAPE, geometry, VOL)
    assert p == VolumePrompt((10.0, 10.0, 30.0, 20.0), 8, (6, 12), 4)
    # no range: +- half the longest side in mm (20 px * 0.5 mm = 10 mm -> 5 mm -> 2 slices of 2.5 mm)
    p = box_spec("10,10,30,20", key_slice=8).resolve(SHAPE, geometry, VOL)
    assert p.z_range == (6, 10)
    assert default_z_range((10, 10, 30, 20), 8, geometry, SHAPE[0]) == (6, 10)
    # clipped to the volume
    assert default_z_range((0, 0, 80, 60), 1, Geometry(spacing=(1.0, 1.0, 1.0)), SHAPE[0]) == (0, 19)


def test_recist_line_gives_a_square_box_in_mm():
    # horizontal line of 20 px at 0.5 mm (x) = 10 mm; rows are 1 mm
    geometry = Geometry(spacing=(2.0, 1.0, 0.5))
    p = recist_spec("30,30,50,30,10", label=7).resolve(SHAPE, geometry, VOL)
    half_mm = 10 * RECIST_BOX_SCALE / 2
    assert p.key_slice == 10 and p.label == 7
    np.testing.assert_allclose(p.box, (40 - half_mm / 0.5, 30 - half_mm, 40 + half_mm / 0.5, 30 + half_mm))
    assert p.z_range == (10 - 3, 10 + 3)  # ceil(5 mm / 2 mm) = 3 slices each way
    # an explicit range wins; the box is clipped to the slice
    p = recist_spec("0,0,10,0,3", z_range=(2, 4)).resolve(SHAPE, Geometry(spacing=(1.0, 1.0, 1.0)), VOL)
    assert p.z_range == (2, 4) and p.box[0] == 0 and p.box[1] == 0


def test_boxes_reaching_past_the_volume_are_clipped_with_a_warning(caplog):
    # as read off a viewer: x1 one past the 80 px width, a negative corner, z1 past the last slice
    with caplog.at_level("WARNING", logger="medsamkit.inference.prompts3d"):
        p = box_spec("-3,6,10,83,30,25").resolve(SHAPE, source=VOL)
    assert p.box == (0.0, 6.0, 80.0, 30.0) and p.z_range == (10, 19)
    assert p.key_slice == 14  # the middle of the clipped range: int((19 - 10) / 2 + 10)
    text = caplog.text
    assert "vol.nii.gz: --box -3,6,10,83,30,25: box -3,6,83,30 reaches past the 80x60 slices; clipped to 0,6,80,30" in text
    assert "z range 10..25 reaches past the volume's slices 0..19; clipped to 10..19" in text
    # a 2D box with a range partly outside: the range is clipped, the key slice must be inside
    p = box_spec("2,3,20,30", key_slice=1, z_range=(-2, 4)).resolve(SHAPE, source=VOL)
    assert p.z_range == (0, 4) and p.key_slice == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="medsamkit.inference.prompts3d"):
        box_spec("2,3,10,20,30,15").resolve(SHAPE, source=VOL)
    assert caplog.text == ""  # a box inside gives no warning


@pytest.mark.parametrize("spec, problem", [
    (box_spec("-30,3,10,-5,30,15"), "box -30,3,-5,30 lies outside the 80x60 slices (x 0..80, y 0..60): "
                                    "it does not overlap them"),
    (box_spec("85,3,10,90,30,15"), "lies outside the 80x60 slices"),
    (box_spec("20,3,10,2,30,15"), "box 20,3,2,30 is inverted"),
    (box_spec("2,3,15,20,30,10"), "is inverted in z (z0 15 > z1 10)"),
    (box_spec("2,3,21,20,30,25"), "z range 21..25 lies outside the volume's slices 0..19: it does not overlap"),
    (box_spec("2,3,20,30", key_slice=3, z_range=(-4, -1)), "z range -4..-1 lies outside the volume's slices"),
    (box_spec("2,3,10.5,20,30,12"), "z0 10.5 is not a whole slice number"),
    (box_spec("2,3,20,30"), "a 2D box on a volume needs its key slice (--slice Z)"),
    (box_spec("2,3,20,30", key_slice=5, z_range=(6, 9)), "key slice 5 is outside its z range 6..9"),
    (box_spec("2,3,2,30", key_slice=5), "has zero width or height"),
    (recist_spec("1,1,1,1,3"), "zero length"),
    (recist_spec("1,1,100,1,3"), "line end point 100,1 lies outside"),
])
def test_bad_prompts_name_the_volume_and_the_prompt(spec, problem):
    with pytest.raises(InputError) as err:
        spec.resolve(SHAPE, source=VOL)
    message = str(err.value)
    assert message.startswith(f"{VOL}: {spec.origin}: ") and problem in message and "\n" not in message


def test_bad_command_line_values():
    with pytest.raises(InputError, match="is not 6 numbers X0,Y0,Z0,X1,Y1,Z1"):
        box_spec("1,2,3")
    with pytest.raises(InputError, match="a 3D box has its own z range"):
        box_spec("1,2,3,4,5,6", z_range=(1, 2))
    with pytest.raises(InputError, match="is not 5 numbers"):
        recist_spec("1,2,3,4")
    with pytest.raises(ValueError):
        PromptSpec("box3d", (1, 2, 3))


def test_check_prompt_accepts_one_voxel_wide_boxes_but_not_outside():
    check_prompt(VolumePrompt((5, 5, 5, 9), 3, (2, 4)), SHAPE, VOL)
    with pytest.raises(InputError, match=r"^vol.nii.gz: box 1: z1 20 is outside"):
        check_prompt(VolumePrompt((5, 5, 6, 9), 3, (2, 20)), SHAPE, VOL, where="box 1")


def test_json_file_all_forms(tmp_path: Path):
    f = tmp_path / "boxes.json"
    f.write_text(json.dumps([
        [2, 3, 10, 20, 30, 15],
        {"box": [2, 3, 10, 20, 30, 15], "label": 3, "slice": 11},
        {"box": [10, 10, 30, 20], "slice": 8, "z_range": [6, 12]},
        {"recist": [30, 30, 50, 30, 10], "label": 9},
    ]), encoding="utf-8")
    specs = read_boxes3d_file(f)
    assert [s.kind for s in specs] == ["box3d", "box3d", "box2d", "recist"]
    prompts = [s.resolve(SHAPE, source=VOL) for s in specs]
    assert prompts[0].key_slice == 12 and prompts[1].key_slice == 11 and prompts[1].label == 3
    assert prompts[2].z_range == (6, 12) and prompts[3].label == 9
    assert specs[2].origin == f"{f} entry 3"


def test_csv_file(tmp_path: Path):
    f = tmp_path / "boxes.csv"
    f.write_text("x0,y0,z0,x1,y1,z1,label,slice\n2,3,10,20,30,15,4,\n5,6,1,40,50,9,,2\n", encoding="utf-8")
    specs = read_boxes3d_file(f)
    assert [(s.values, s.label, s.key_slice) for s in specs] == [
        ((2, 3, 10, 20, 30, 15), 4, None), ((5, 6, 1, 40, 50, 9), None, 2)]


@pytest.mark.parametrize("content, problem", [
    ('{"a": 1}', "must be a list"),
    ("[[1, 2, 3]]", "entry 1: a box must have 6 numbers, got 3"),
    ('[{"box": [1, 2, 3, 4, 5, 6], "z_range": [1, 2]}]', "entry 1: a 6-number box has its own z range"),
    ('[{"label": 2}]', "entry 1: has no 'box', 'recist' or 'points' key"),
    ('[{"box": [1, 2, 3, 4, 5, 6], "label": "x"}]', "entry 1: label 'x' is not an integer"),
    ("[]", "no boxes in the file"),
    ("not json", "not valid JSON"),
])
def test_bad_json_files(tmp_path: Path, content, problem):
    f = tmp_path / "b.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_boxes3d_file(f)
    assert str(err.value).startswith(str(f)) and problem in str(err.value)


def test_bad_csv_and_missing_file(tmp_path: Path):
    f = tmp_path / "b.csv"
    f.write_text("x0,y0,x1,y1\n1,2,3,4\n", encoding="utf-8")
    with pytest.raises(InputError, match="must have columns x0,y0,z0,x1,y1,z1"):
        read_boxes3d_file(f)
    f.write_text("x0,y0,z0,x1,y1,z1\n1,2,a,4,5,6\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2: x0,y0,z0,x1,y1,z1 must be numbers"):
        read_boxes3d_file(f)
    with pytest.raises(InputError, match="boxes file not found"):
        read_boxes3d_file(tmp_path / "none.json")
    (tmp_path / "b.txt.yaml").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="must end in .json or .csv"):
        read_boxes3d_file(tmp_path / "b.txt.yaml")


def test_prompts_from_labels():
    labels = np.zeros(SHAPE, np.float32)  # BraTS stores labels as float32
    labels[4:9, 10:20, 30:36] = 2
    labels[6, 8:22, 28:40] = 2  # slice 6 has the largest area of label 2
    labels[12:14, 40:45, 5:9] = 5
    prompts = prompts_from_labels(labels)
    assert prompts == [
        VolumePrompt((28.0, 8.0, 39.0, 21.0), 6, (4, 8), 2),
        VolumePrompt((5.0, 40.0, 8.0, 44.0), 12, (12, 13), 5),  # tie: the first slice
    ]
    assert prompts_from_labels(labels, [5]) == prompts[1:]
    with pytest.raises(InputError, match=r"^lab.nii.gz: label 3 not found \(labels present: 2,5\)"):
        prompts_from_labels(labels, [2, 3], source="lab.nii.gz")
    with pytest.raises(InputError, match="empty"):
        prompts_from_labels(np.zeros(SHAPE), source="lab.nii.gz")
