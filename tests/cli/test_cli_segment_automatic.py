"""`medsamkit segment` without a box, with a checkpoint exported in automatic mode: one image and
a folder (resumable), the same masks as the library's prompt-free prediction; without the
automatic sidecar a missing box is still an error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from medsamkit.evaluation.overlay import display_scale
from medsamkit.cli.main import main
from medsamkit.inference.predictor import Predictor
from medsamkit.models.checkpoint import save_checkpoint
from medsamkit.models.loader import load_model
from medsamkit.models.registry import ARCHITECTURES
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.inference.automatic import predict_automatic
from medsamkit.training.export import export_net
from medsamkit.training.nets import SamNet


def _image(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    cv2.ellipse(image, (w // 2, h // 2), (w // 5, h // 6), 0, 0, 360, (220, 160, 120), -1)
    return image


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    torch.manual_seed(0)
    model = ARCHITECTURES["tinyvit"]().eval()
    with torch.no_grad():  # random weights; make the no-prompt decoder output foreground somewhere
        model.mask_decoder.output_hypernetworks_mlps[0].layers[-1].bias.add_(0.5)
    checkpoint = export_net(SamNet(model, "decoder", automatic=True), root / "auto.pth",
                            {"model": "litemedsam", "automatic": True})
    plain = save_checkpoint(model, root / "plain.pth")
    (root / "images").mkdir()
    for i, (h, w) in enumerate([(90, 120), (100, 80)]):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), _image(i, h, w)[:, :, ::-1])
    return root, checkpoint, plain


def test_one_image_without_a_box(setup, capsys):
    root, checkpoint, _ = setup
    image_path = root / "images" / "im0.png"
    out = root / "mask.png"
    assert main(["-q", "segment", str(image_path), "--checkpoint", str(checkpoint), "-o", str(out),
                 "--overlay", str(root / "overlay.png")]) == 0
    assert f"wrote {out} (automatic mode: no prompt)" in capsys.readouterr().out
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    loaded = load_model(checkpoint=checkpoint, device="cpu")
    rgb = cv2.imread(str(image_path))[:, :, ::-1].copy()
    expected = predict_automatic(Predictor(loaded.model, geometry_for("litemedsam")), rgb).masks[0, 0]
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, expected) and expected.any()
    overlay = cv2.imread(str(root / "overlay.png"))
    assert overlay.shape[1:] == (120 * display_scale((90, 120)), 3)  # enlarged for display


def test_folder_without_boxes_file(setup, capsys):
    root, checkpoint, _ = setup
    out = root / "masks"
    args = ["-q", "segment", str(root / "images"), "--checkpoint", str(checkpoint), "-o", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["im0.png", "im1.png"]
    assert cv2.imread(str(out / "im1.png"), cv2.IMREAD_UNCHANGED).shape == (100, 80)
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("0 segmented, 2 already done (skipped), 0 failed")


def test_a_plain_checkpoint_still_needs_a_box(setup, capsys):
    root, _, plain = setup
    code = main(["segment", str(root / "images" / "im0.png"), "--checkpoint", str(plain), "-o", str(root / "x.png")])
    _, err = capsys.readouterr()
    assert code == 2 and "no box given" in err and not (root / "x.png").exists()
