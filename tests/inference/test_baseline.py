"""medsamkit.inference.baseline: the from-scratch baselines behind the predictor interface. Nets
with known outputs check that masks and boxes stay aligned through resize, pad and crop back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medsamkit.errors import InputError
from medsamkit.inference.baseline import BaselinePredictor, load_baseline_predictor
from medsamkit.training.export_metadata import is_baseline_checkpoint
from medsamkit.models.baselines import box_channel, build_baseline
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.inference.automatic import predict_automatic
from medsamkit.training.export import export_net
from medsamkit.training.nets import BaselineNet


class BrightIsForeground(nn.Module):
    """Logits > 0 where the model input is brighter than mid-grey (no box)."""

    uses_box = False

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        return (images.mean(1, keepdim=True) - 0.5) * 20


class BoxIsForeground(nn.Module):
    """Logits > 0 inside the box channel (what a box-prompted net sees of the box)."""

    uses_box = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return (box_channel(boxes, images.shape[-1]) - 0.5) * self.scale


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def scene(h: int = 120, w: int = 200) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((h, w, 3), 40, np.uint8)
    truth = np.zeros((h, w), bool)
    truth[30:80, 110:170] = True
    image[truth] = 220
    return image, truth


@pytest.mark.parametrize("family", ["litemedsam", "medsam", "sam"])
def test_prompt_free_mask_lands_on_the_object(family):
    image, truth = scene()
    predictor = BaselinePredictor(BrightIsForeground(), geometry_for(family), "bright")
    predictor.set_image(image)
    prediction = predictor.predict()
    assert prediction.masks.shape == (1, 1, 120, 200)
    assert dice(prediction.masks[0, 0], truth) > 0.97
    assert np.isnan(prediction.iou_scores).all()  # baselines have no IoU head
    again = predict_automatic(predictor, image)  # the automatic path takes baselines too
    assert np.array_equal(again.masks, prediction.masks)


def test_each_box_gives_its_own_mask_in_one_batch():
    image, _ = scene()
    predictor = BaselinePredictor(BoxIsForeground(), geometry_for("litemedsam"), "boxes")
    predictor.set_image(image)
    boxes = np.array([[10, 10, 60, 50], [100, 40, 190, 110]], float)
    prediction = predictor.predict(boxes=boxes)
    assert prediction.masks.shape == (2, 1, 120, 200)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        want = np.zeros((120, 200), bool)
        want[y0:y1 + 1, x0:x1 + 1] = True
        assert dice(prediction.masks[k, 0], want) > 0.95


def test_wrong_prompts_are_clear_errors():
    image, _ = scene()
    free = BaselinePredictor(BrightIsForeground(), geometry_for("litemedsam"), "unet")
    with pytest.raises(RuntimeError, match="set_image"):
        free.predict()
    free.set_image(image)
    with pytest.raises(InputError, match="unet baseline segments without a box"):
        free.predict(boxes=np.array([[1, 2, 30, 40]]))
    with pytest.raises(InputError, match="takes no points prompt"):
        free.predict(points=np.array([[3, 4]]))
    boxed = BaselinePredictor(BoxIsForeground(), geometry_for("litemedsam"), "prompted-resnet")
    boxed.set_image(image)
    with pytest.raises(InputError, match="needs a box"):
        boxed.predict()


def test_exported_baseline_loads_strictly_with_its_family(tmp_path):
    net = build_baseline("prompted-resnet", 8)
    path = export_net(BaselineNet(net), tmp_path / "resnet.pth",
                      {"model": "prompted-resnet", "family": "medsam", "width": 8, "automatic": False})
    assert is_baseline_checkpoint(path) and not is_baseline_checkpoint(None)
    predictor = load_baseline_predictor(path, torch.device("cpu"))
    assert predictor.name == "prompted-resnet" and predictor.uses_box
    assert predictor.geometry.family == "medsam"
    for key, value in net.state_dict().items():
        assert torch.equal(predictor.net.state_dict()[key], value)
    assert not predictor.net.training


def test_automatic_inference_lives_in_inference_and_the_old_import_still_works():
    import medsamkit.inference.automatic as moved
    import medsamkit.training.automatic as old

    assert old.AutomaticSegmenter is moved.AutomaticSegmenter
    assert old.automatic_prompts is moved.automatic_prompts and old.predict_automatic is moved.predict_automatic
