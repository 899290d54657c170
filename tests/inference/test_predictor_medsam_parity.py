"""MedSAM ViT-B parity with the official ``MedSAM_Inference.py`` (../shared/data/parity/medsam-vit-b_2d.npz,
made on stand-in weights; ../shared/docs/parity.md), through the public paths a user takes: the
weights saved as the official raw state_dict file, ``medsamkit.load(checkpoint=...)`` with
``medsamkit.segment``, and ``medsamkit segment`` on the command line.

The ViT-B encoder takes about a minute per image on a busy CPU, so each image is encoded once:
the encoder is memoised on its input tensor. The CLI reads and preprocesses the image itself, so
its model input must be bit-identical to the API's to hit the memo (if it were not, the real
encoder would run and the masks would still be compared).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medsamkit
from medsamkit.cli.main import main
from medsamkit.models.registry import get_spec
from medsamkit.models.standin import standin_state_dict

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TARGET = SHARED / "parity" / "medsam-vit-b_2d.npz"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(not TARGET.is_file(), reason=f"{TARGET} absent (the shared parity data)"),
]


def _image_path(ref: dict, i: int) -> Path:
    return SHARED / "kvasir-seg" / "images" / str(ref["img0_name"]) if i == 0 else SHARED / "parity" / "brats2021_slice.png"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _key(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().numpy().tobytes()).hexdigest()


class MemoEncoder:
    """The model's encoder, run once per distinct input tensor."""

    def __init__(self, encode):
        self.encode, self.cache, self.seen = encode, {}, []

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _key(tensor)
        self.seen.append(key)
        if key not in self.cache:
            self.cache[key] = self.encode(tensor)
        return self.cache[key]


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    ref = dict(np.load(TARGET))
    model = get_spec("medsam-vit-b").build()
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    checkpoint = tmp_path_factory.mktemp("medsam") / "medsam_vit_b.pth"
    torch.save(standin_state_dict(layout), checkpoint)  # raw state_dict, as the official file
    predictor = medsamkit.load(checkpoint=checkpoint, device="cpu")
    memo = MemoEncoder(predictor.encoder)
    predictor.encoder = memo
    return ref, predictor, memo, checkpoint


@pytest.mark.parametrize("i", [0, 1])
def test_preprocessing_is_the_reference_image_and_box(parity, i):
    ref, predictor, *_ = parity
    image = np.asarray(Image.open(_image_path(ref, i)).convert("RGB"))
    resized, frame = predictor.geometry.resize_image(image)
    # skimage's order-3 resize with anti-aliasing, truncated to uint8: bit for bit
    np.testing.assert_array_equal(resized, ref[f"img{i}_img_1024"])
    box = predictor.geometry.boxes_to_model(ref[f"img{i}_box"][None].astype(np.float64), frame)[0].numpy()
    np.testing.assert_allclose(box, ref[f"img{i}_box_1024"], rtol=1e-6)


@pytest.mark.parametrize("i", [0, 1])
def test_python_api_gives_the_reference_logits_and_mask(parity, i):
    ref, predictor, *_ = parity
    image = np.asarray(Image.open(_image_path(ref, i)).convert("RGB"))
    predictor.set_image(image)
    prediction = predictor.predict(boxes=ref[f"img{i}_box"][None])
    low_res = prediction.low_res_logits[0, 0].numpy()
    assert np.abs(low_res - ref[f"img{i}_low_res_logits"]).max() <= 1e-3
    target = ref[f"img{i}_seg"] > 0
    assert target.any() and not target.all()
    assert _dice(prediction.masks[0, 0], target) >= 0.999
    # the short API from the file path: reads the image itself, same label map
    labels = medsamkit.segment(_image_path(ref, i), boxes=[ref[f"img{i}_box"].tolist()], model=predictor)
    assert _dice(labels == 1, target) >= 0.999


@pytest.mark.parametrize("i", [0, 1])
def test_cli_gives_the_reference_mask(parity, i, tmp_path, capsys, monkeypatch):
    ref, predictor, memo, checkpoint = parity
    loaded_model = predictor.model
    cli_memo = MemoEncoder(loaded_model.encode)
    cli_memo.cache = memo.cache
    # the CLI loads the checkpoint itself; its model's encoder shares the memo of the API's
    from medsamkit.models import loader

    real_load = loader.load_model

    def load_with_memo(name, ckpt, device):
        loaded = real_load(name, ckpt, device)
        loaded.model.encode = cli_memo
        return loaded

    monkeypatch.setattr(loader, "load_model", load_with_memo)
    out = tmp_path / "mask.png"
    box = ",".join(str(int(v)) for v in ref[f"img{i}_box"])
    code = main(["-q", "segment", str(_image_path(ref, i)), "--model", "medsam-vit-b", "--checkpoint",
                 str(checkpoint), "--device", "cpu", "--box", box, "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    mask = np.asarray(Image.open(out)) == 255
    assert _dice(mask, ref[f"img{i}_seg"] > 0) >= 0.999
    # the CLI read and preprocessed the file into the reference pipeline's model input, bit for bit
    image = np.asarray(Image.open(_image_path(ref, i)).convert("RGB"))
    assert cli_memo.seen == [_key(predictor.geometry.prepare_image(image)[0])]
