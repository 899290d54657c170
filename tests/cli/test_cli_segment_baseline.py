"""`medsamkit segment --checkpoint` with a baseline exported by `medsamkit fit`: the U-Net segments
without a box (one image, a folder), the prompted ResNet with boxes; the same masks as the
library; wrong prompts and 3D input are one-line errors naming the checkpoint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from medsamkit.cli.main import main
from medsamkit.inference.baseline import load_baseline_predictor
from medsamkit.io.geometry import Geometry
from medsamkit.io.volume import write_volume
from medsamkit.models.baselines import build_baseline
from medsamkit.inference.automatic import predict_automatic
from medsamkit.training.export import export_net
from medsamkit.training.nets import BaselineNet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    torch.manual_seed(0)
    exported = {}
    for name in ("unet", "prompted-resnet"):
        net = build_baseline(name, 8)
        exported[name] = export_net(BaselineNet(net), root / f"{name}.pth",
                                    {"model": name, "family": "litemedsam", "width": 8,
                                     "automatic": not net.uses_box})
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(90, 120), (100, 80)]):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return root, exported


def read_mask(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_unet_one_image_and_a_folder_without_boxes(setup, capsys):
    root, exported = setup
    image_path = root / "images" / "im0.png"
    out = root / "unet.png"
    assert main(["-q", "segment", str(image_path), "--checkpoint", str(exported["unet"]), "-o", str(out)]) == 0
    assert "automatic mode: no prompt" in capsys.readouterr().out
    predictor = load_baseline_predictor(exported["unet"], torch.device("cpu"))
    rgb = cv2.imread(str(image_path))[:, :, ::-1].copy()
    expected = predict_automatic(predictor, rgb).masks[0, 0]
    mask = read_mask(out)
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, expected)

    folder_out = root / "unet-masks"
    assert main(["-q", "segment", str(root / "images"), "--checkpoint", str(exported["unet"]),
                 "-o", str(folder_out)]) == 0
    assert sorted(p.name for p in folder_out.iterdir()) == ["im0.png", "im1.png"]
    assert np.array_equal(read_mask(folder_out / "im0.png"), mask)
    assert read_mask(folder_out / "im1.png").shape == (100, 80)


def test_prompted_resnet_takes_boxes(setup, capsys):
    root, exported = setup
    image_path = root / "images" / "im1.png"
    out = root / "resnet.png"
    assert main(["-q", "segment", str(image_path), "--checkpoint", str(exported["prompted-resnet"]),
                 "--box", "10,20,60,70", "--box", "5,5,30,30", "-o", str(out)]) == 0
    predictor = load_baseline_predictor(exported["prompted-resnet"], torch.device("cpu"))
    predictor.set_image(cv2.imread(str(image_path))[:, :, ::-1].copy())
    prediction = predictor.predict(boxes=np.array([[10, 20, 60, 70], [5, 5, 30, 30]], float))
    logits = prediction.logits[:, 0]
    expected = np.where(logits.max(0) > 0, logits.argmax(0) + 1, 0)
    assert np.array_equal(read_mask(out), expected)


def test_wrong_use_is_a_one_line_error(setup, capsys, tmp_path):
    root, exported = setup
    image_path = str(root / "images" / "im0.png")
    unet, resnet = str(exported["unet"]), str(exported["prompted-resnet"])
    assert main(["segment", image_path, "--checkpoint", unet, "--box", "1,2,30,40", "-o", str(tmp_path / "a.png")]) == 2
    assert f"{unet}: is a baseline that segments without a box" in capsys.readouterr().err
    assert main(["segment", image_path, "--checkpoint", resnet, "-o", str(tmp_path / "b.png")]) == 2
    assert "no box given" in capsys.readouterr().err
    volume = tmp_path / "v.nii.gz"
    write_volume(volume, np.zeros((4, 16, 16), np.int16), Geometry(spacing=(1.0, 1.0, 1.0)))
    assert main(["segment", str(volume), "--checkpoint", resnet, "--box", "1,1,0,10,10,3", "-o", str(tmp_path / "s.nii.gz")]) == 2
    assert f"{resnet}: is a 2D baseline" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]
