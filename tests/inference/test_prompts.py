"""Box prompts: --box parsing, JSON/CSV boxes files (every accepted form and every error), matching to images."""

import json
from pathlib import Path

import pytest

from medsamkit.errors import InputError
from medsamkit.inference.prompts import BoxPrompt, parse_box, prompts_for_image, read_boxes_file

# ----------------------------------------------------------------------------- parse_box


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10,20,30,40", (10.0, 20.0, 30.0, 40.0)),
        (" 10, 20 ,30.5 , 40 ", (10.0, 20.0, 30.5, 40.0)),
        ("0,0,1e2,2.5", (0.0, 0.0, 100.0, 2.5)),
        ("10,20,30,40,", (10.0, 20.0, 30.0, 40.0)),
    ],
)
def test_parse_box_good(text, expected):
    box = parse_box(text)
    assert box == expected
    assert all(isinstance(v, float) for v in box)


def test_parse_box_3d_form():
    assert parse_box("1,2,3,4,5,6", dims=3) == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    with pytest.raises(InputError, match="X0,Y0,Z0,X1,Y1,Z1"):
        parse_box("1,2,3,4", dims=3)


@pytest.mark.parametrize("text", ["1,2,3", "1,2,3,4,5", "", "1;2;3;4"])
def test_parse_box_wrong_count(text):
    with pytest.raises(InputError) as info:
        parse_box(text)
    msg = str(info.value)
    assert repr(text) in msg and "4 numbers X0,Y0,X1,Y1" in msg


@pytest.mark.parametrize("text", ["a,b,c,d", "1,2,3,x", "10px,20,30,40"])
def test_parse_box_non_numbers(text):
    with pytest.raises(InputError, match="is not 4 numbers"):
        parse_box(text)


# ----------------------------------------------------------------------------- JSON forms


def write(tmp_path: Path, name: str, content, mode="w") -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    else:
        p.write_text(json.dumps(content), encoding="utf-8")
    return p


def test_json_list_of_boxes(tmp_path):
    p = write(tmp_path, "b.json", [[1, 2, 30, 40], [5.5, 6, 70, 80]])
    assert read_boxes_file(p) == [
        BoxPrompt((1.0, 2.0, 30.0, 40.0)),
        BoxPrompt((5.5, 6.0, 70.0, 80.0)),
    ]


def test_json_image_to_one_box(tmp_path):
    p = write(tmp_path, "b.json", {"a.png": [1, 2, 3, 4], "b": [5, 6, 7, 8]})
    assert read_boxes_file(str(p)) == [
        BoxPrompt((1.0, 2.0, 3.0, 4.0), image="a.png"),
        BoxPrompt((5.0, 6.0, 7.0, 8.0), image="b"),
    ]


def test_json_image_to_several_boxes(tmp_path):
    p = write(tmp_path, "b.json", {"a.png": [[1, 2, 3, 4], [10, 20, 30, 40]], "c.png": [[0, 0, 9, 9]]})
    prompts = read_boxes_file(p)
    assert [(q.image, q.box, q.label) for q in prompts] == [
        ("a.png", (1.0, 2.0, 3.0, 4.0), None),
        ("a.png", (10.0, 20.0, 30.0, 40.0), None),
        ("c.png", (0.0, 0.0, 9.0, 9.0), None),
    ]


def test_json_list_of_records(tmp_path):
    p = write(
        tmp_path,
        "b.json",
        [
            {"image": "a.png", "box": [1, 2, 3, 4], "label": 3},
            {"image": "b.png", "box": [5, 6, 7, 8]},
            {"box": [9, 10, 11, 12], "label": "7"},
            {"image": "c.png", "box": [1, 1, 2, 2], "label": 300.0},
        ],
    )
    assert read_boxes_file(p) == [
        BoxPrompt((1.0, 2.0, 3.0, 4.0), image="a.png", label=3),
        BoxPrompt((5.0, 6.0, 7.0, 8.0), image="b.png", label=None),
        BoxPrompt((9.0, 10.0, 11.0, 12.0), image=None, label=7),
        BoxPrompt((1.0, 1.0, 2.0, 2.0), image="c.png", label=300),
    ]


# ----------------------------------------------------------------------------- CSV forms


def test_csv_with_image_and_label(tmp_path):
    p = write(tmp_path, "b.csv", "image,x0,y0,x1,y1,label\na.png,1,2,3,4,2\nb.png,5,6,7,8,\n")
    assert read_boxes_file(p) == [
        BoxPrompt((1.0, 2.0, 3.0, 4.0), image="a.png", label=2),
        BoxPrompt((5.0, 6.0, 7.0, 8.0), image="b.png", label=None),
    ]


def test_csv_without_image_or_label(tmp_path):
    p = write(tmp_path, "b.csv", "x0,y0,x1,y1\n1,2,3,4\n10.5,20,30,40\n")
    assert read_boxes_file(p) == [BoxPrompt((1.0, 2.0, 3.0, 4.0)), BoxPrompt((10.5, 20.0, 30.0, 40.0))]


def test_csv_bom_whitespace_and_column_order(tmp_path):
    text = "\ufeff Label , Y0 ,x0, X1 ,y1, image \n 4 , 2, 1 ,3, 4 , a.png \n\n"
    p = write(tmp_path, "b.csv", text)
    assert read_boxes_file(p) == [BoxPrompt((1.0, 2.0, 3.0, 4.0), image="a.png", label=4)]


def test_tsv_is_tab_separated(tmp_path):
    p = write(tmp_path, "b.tsv", "image\tx0\ty0\tx1\ty1\tlabel\na, b.png\t1\t2\t3\t4\t6\n")
    assert read_boxes_file(p) == [BoxPrompt((1.0, 2.0, 3.0, 4.0), image="a, b.png", label=6)]


def test_csv_quoted_multiline_field_keeps_line_numbers(tmp_path):
    p = write(tmp_path, "b.csv", 'image,x0,y0,x1,y1\n"odd\nname.png",1,2,3,4\nb.png,1,2,3\n')
    assert error_of(p).startswith(f"{p}: line 4: a box must be 4 numbers")


def test_csv_txt_suffix_is_csv(tmp_path):
    p = write(tmp_path, "b.txt", "x0,y0,x1,y1\n1,2,3,4\n")
    assert read_boxes_file(p) == [BoxPrompt((1.0, 2.0, 3.0, 4.0))]


# ----------------------------------------------------------------------------- errors


def error_of(path) -> str:
    with pytest.raises(InputError) as info:
        read_boxes_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    p = tmp_path / "nope.json"
    msg = error_of(p)
    assert str(p) in msg and "not found" in msg


def test_unsupported_suffix(tmp_path):
    p = write(tmp_path, "b.yaml", "- [1, 2, 3, 4]\n")
    msg = error_of(p)
    assert str(p) in msg and ".json or .csv" in msg


@pytest.mark.parametrize("content", ["[[1, 2, 3, 4]", "{'a': 1}", b"\xff\xfe[1]"])
def test_bad_json(tmp_path, content):
    p = write(tmp_path, "b.json", content)
    msg = error_of(p)
    assert msg.startswith(f"{p}: not valid JSON")


def test_json_not_list_or_object(tmp_path):
    msg = error_of(write(tmp_path, "b.json", "42"))
    assert "must be a list or an object" in msg


def test_json_empty(tmp_path):
    p = write(tmp_path, "b.json", [])
    assert error_of(p) == f"{p}: no boxes in the file"


@pytest.mark.parametrize(
    "content, where, problem",
    [
        ([[1, 2, 3, 4], [1, 2, 3]], "entry 2", "got 3"),
        ([[1, 2, 3, 4, 5]], "entry 1", "got 5"),
        ([[1, 2, "x", 4]], "entry 1", "got [1, 2, 'x', 4]"),
        ({"a.png": [1, 2, 3]}, "'a.png' box 1", "got 3"),
        ({"a.png": [[1, 2, 3, 4], [1, 2]]}, "'a.png' box 2", "got 2"),
        ({"a.png": 7}, "'a.png' box 1", "got 7"),
        ([{"image": "a.png", "box": [1, 2, 3, 4]}, {"image": "b.png", "box": [1, 2]}], "entry 2", "got 2"),
    ],
)
def test_json_wrong_box_names_the_entry(tmp_path, content, where, problem):
    p = write(tmp_path, "b.json", content)
    msg = error_of(p)
    assert msg.startswith(f"{p}: {where}: a box must be 4 numbers")
    assert problem in msg


def test_json_record_without_box(tmp_path):
    p = write(tmp_path, "b.json", [{"image": "a.png", "box": [1, 2, 3, 4]}, {"image": "b.png", "bbox": [1, 2, 3, 4]}])
    msg = error_of(p)
    assert msg.startswith(f"{p}: entry 2 has no 'box' or 'points' key") and "image, bbox" in msg


@pytest.mark.parametrize(
    "label, problem",
    [("cat", "label 'cat' is not an integer"), (0, "label 0 must be between 1 and 65535"),
     (65536, "label 65536 must be between 1 and 65535"), (-3, "label -3 must be between"),
     ([1], "is not an integer")],
)
def test_json_bad_label(tmp_path, label, problem):
    p = write(tmp_path, "b.json", [{"box": [1, 2, 3, 4], "label": 1}, {"box": [1, 2, 3, 4], "label": label}])
    msg = error_of(p)
    assert msg.startswith(f"{p}: entry 2: ") and problem in msg


def test_json_infinite_label_is_an_input_error(tmp_path):
    # json.loads accepts Infinity; int(inf) raises OverflowError, which must not escape as a traceback
    p = write(tmp_path, "b.json", '[{"box": [1, 2, 3, 4], "label": Infinity}]')
    assert "entry 1: label inf is not an integer" in error_of(p)


def test_csv_missing_columns(tmp_path):
    p = write(tmp_path, "b.csv", "image,x0,y0,x1\na.png,1,2,3\n")
    msg = error_of(p)
    assert msg.startswith(f"{p}: CSV header must have columns x0,y0,x1,y1")
    assert "['image', 'x0', 'y0', 'x1']" in msg


def test_csv_empty_file(tmp_path):
    p = write(tmp_path, "b.csv", "")
    assert "CSV header must have columns" in error_of(p)


def test_csv_header_only(tmp_path):
    p = write(tmp_path, "b.csv", "x0,y0,x1,y1\n")
    assert error_of(p) == f"{p}: no boxes in the file"


@pytest.mark.parametrize(
    "rows, where, problem",
    [
        ("a.png,1,2,3,4,1\nb.png,1,2,x,4,1\n", "line 3", "a box must be 4 numbers"),
        ("a.png,1,2,3\n", "line 2", "a box must be 4 numbers"),  # short row: y1 empty
        ("a.png,1,2,3,4,one\n", "line 2", "label 'one' is not an integer"),
        ("a.png,1,2,3,4,1\n\nb.png,1,2,3,4,0\n", "line 4", "label 0 must be between 1 and 65535"),
        ("a.png,1,2,3,4,inf\n", "line 2", "label 'inf' is not an integer"),
    ],
)
def test_csv_bad_rows_name_the_line(tmp_path, rows, where, problem):
    p = write(tmp_path, "b.csv", "image,x0,y0,x1,y1,label\n" + rows)
    msg = error_of(p)
    assert msg.startswith(f"{p}: {where}: ") and problem in msg


def test_csv_not_utf8_is_an_input_error(tmp_path):
    p = write(tmp_path, "b.csv", "image,x0,y0,x1,y1\nb\u00e9.png,1,2,3,4\n".encode("latin-1"))
    msg = error_of(p)
    assert msg.startswith(f"{p}: not a UTF-8 text file")


# ----------------------------------------------------------------------------- prompts_for_image


def test_prompts_for_image_by_name_stem_and_path(tmp_path):
    image = tmp_path / "scan_01.png"
    prompts = [
        BoxPrompt((0, 0, 1, 1), image="scan_01.png"),  # name
        BoxPrompt((0, 0, 2, 2), image="scan_01"),  # stem
        BoxPrompt((0, 0, 3, 3), image=str(image)),  # full path
        BoxPrompt((0, 0, 4, 4), image="other/scan_01.jpg"),  # same stem elsewhere
        BoxPrompt((0, 0, 5, 5), image="scan_02.png"),
        BoxPrompt((0, 0, 6, 6), image="scan_0"),
        BoxPrompt((0, 0, 7, 7), image=None),  # unnamed boxes are not "for" any image
    ]
    got = prompts_for_image(prompts, image)
    assert [p.box[2] for p in got] == [1, 2, 3, 4]


def test_prompts_for_image_none_match(tmp_path):
    assert prompts_for_image([BoxPrompt((0, 0, 1, 1), image="b.png")], tmp_path / "a.png") == []
    assert prompts_for_image([], tmp_path / "a.png") == []
