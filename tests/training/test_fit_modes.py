"""Short real runs of the encoder-training modes: the loss goes down, the checkpoints hold only
what trains (LoRA: adapters and decoder), and the export reloads strictly in the official layout
and predicts what the trained model predicts (LoRA merged)."""

from __future__ import annotations

import pytest
import torch
from training_fixtures import Boxed, TinyGeometry, batch_of, eval_loss, make_samples, quick_config, tiny_sam

from medsamkit.models.checkpoint import load_state_dict_strict, read_checkpoint
from medsamkit.training.datamodule import DataSources
from medsamkit.training.export import read_export_metadata
from medsamkit.training.fit import fit


@pytest.fixture(scope="module")
def data():
    return DataSources(make_samples(4), make_samples(2, seed=1))


def _fit(tmp_path, data, net_for_eval, model, *overrides):
    before = eval_loss(net_for_eval, data.train)
    result = fit(quick_config(tmp_path, "--trainer.max_epochs", "2", "--output.csv", "false", *overrides), data,
                 model=model, geometry=TinyGeometry())
    return before, result


@pytest.mark.parametrize("mode", ["encoder-decoder", "full", "lora"])
def test_encoder_modes(tmp_path, data, mode):
    torch.manual_seed(0)
    model = tiny_sam().eval()  # as load_model returns it: fit must switch the trained parts to train mode
    decoder_modes: list[bool] = []
    # a decoder part that every decoding path calls as a module (the box step runs the rearranged graph)
    model.mask_decoder.iou_prediction_head.register_forward_hook(lambda m, args, out: decoder_modes.append(m.training))
    before, result = _fit(tmp_path, data, Boxed(model), model, "--model.mode", mode, "--model.lora.rank", "4")
    trained = Boxed(model)  # LoRA adapters still in place: the model as it was trained
    assert any(decoder_modes) and not all(decoder_modes)  # train steps in train mode, validation in eval
    assert eval_loss(trained, data.train) < before

    keys = set(torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    parts = {k.split(".")[2] for k in keys}
    if mode == "lora":
        assert parts == {"image_encoder", "mask_decoder"}
        assert all("lora_" in k for k in keys if ".image_encoder." in k)
    else:
        assert parts == ({"image_encoder", "mask_decoder"} if mode == "encoder-decoder"
                         else {"image_encoder", "prompt_encoder", "mask_decoder"})

    state = read_checkpoint(result.export_path)
    assert not any("lora" in k or "base_layer" in k for k in state)
    fresh = tiny_sam()
    load_state_dict_strict(fresh, state, source=str(result.export_path), model_name="tiny")
    batch = batch_of(data.val)
    with torch.no_grad():
        expected = trained.eval()(batch)[0]
        got = Boxed(fresh).eval()(batch)[0]
    assert torch.allclose(got, expected, atol=1e-4)
    assert read_export_metadata(result.export_path)["mode"] == mode
