"""A real decoder-only fine-tuning run on tiny synthetic data: embeddings cached once, the loss
goes down, checkpoints hold only the decoder, an interrupted run resumes without re-encoding,
runs are reproducible, and the export reloads strictly in the official layout."""

from __future__ import annotations

import csv

import pytest
import torch
from training_fixtures import TinyGeometry, eval_loss, make_samples, quick_config, tiny_sam

from medsamkit.errors import CheckpointError
from medsamkit.models.checkpoint import load_state_dict_strict, read_checkpoint
from medsamkit.training.datamodule import DataSources
from medsamkit.training.export import read_export_metadata
from medsamkit.training.fit import fit
from medsamkit.training.nets import SamNet


class EncoderCalls:
    def __init__(self, model) -> None:
        self.images = 0
        model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, module, args, out) -> None:
        self.images += args[0].shape[0]


@pytest.fixture(scope="module")
def data():
    return DataSources(make_samples(8), make_samples(4, seed=1))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("decoder")
    torch.manual_seed(0)
    model = tiny_sam()
    calls = EncoderCalls(model)
    before = eval_loss(SamNet(model, "decoder"), data.train)
    calls.images = 0
    result = fit(quick_config(out), data, model=model, geometry=TinyGeometry())
    return {"out": out, "model": model, "calls": calls, "before": before, "result": result}


def test_loss_goes_down_and_embeddings_are_computed_once(run, data):
    assert run["calls"].images == len(data.train) + len(data.val)  # 3 epochs, each image encoded once
    assert eval_loss(SamNet(run["model"], "decoder"), data.train) < run["before"]
    rows = list(csv.DictReader(open(next((run["out"] / "csv").glob("version_*/metrics.csv")), encoding="utf-8")))
    epoch_losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(epoch_losses) == 3 and epoch_losses[-1] < epoch_losses[0]
    assert len([r for r in rows if r.get("val_dice")]) == 3


def test_checkpoints_hold_only_the_decoder(run):
    result = run["result"]
    assert result.best_checkpoint.is_file() and result.last_checkpoint.name == "last.ckpt"
    assert result.best_val_dice is not None and 0 <= result.best_val_dice <= 1
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["state_dict"] and all(k.startswith("net.model.mask_decoder.") for k in ckpt["state_dict"])
    assert ckpt["hyper_parameters"]["model"]["mode"] == "decoder" and ckpt["epoch"] == 2


def test_export_reloads_strictly_and_matches(run, data):
    path = run["result"].export_path
    assert path.name == "model.pth"
    state = read_checkpoint(path)
    assert all(k.startswith(("image_encoder.", "prompt_encoder.", "mask_decoder.")) for k in state)
    fresh = tiny_sam()
    load_state_dict_strict(fresh, state, source=str(path), model_name="tiny")
    # the export is the best checkpoint's weights: loading that checkpoint's decoder gives the same model
    best = torch.load(run["result"].best_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in best.items():
        assert torch.equal(state[key.removeprefix("net.model.")], value)
    meta = read_export_metadata(path)
    assert meta["mode"] == "decoder" and meta["automatic"] is False and meta["family"] == "litemedsam"
    assert meta["input_size"] == 64 and meta["val_dice"] == pytest.approx(run["result"].best_val_dice)


def test_resume_continues_without_re_encoding(run, data):
    calls = run["calls"]
    calls.images = 0
    result = fit(quick_config(run["out"], "--trainer.max_epochs", "5"), data, model=run["model"],
                 geometry=TinyGeometry())
    assert calls.images == 0  # the embedding cache was reused
    assert result.epochs == 5
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 4 and ckpt["global_step"] == 10  # 2 steps per epoch, continued from step 6


def test_resume_refuses_other_base_weights(run, data):
    torch.manual_seed(123)
    other = tiny_sam()  # other frozen encoder weights
    with pytest.raises(CheckpointError, match="other base weights"):
        fit(quick_config(run["out"], "--trainer.max_epochs", "6"), data, model=other, geometry=TinyGeometry())


def test_same_seed_same_weights(tmp_path, data):
    states = []
    for name in ("a", "b"):
        torch.manual_seed(0)
        model = tiny_sam()
        fit(quick_config(tmp_path / name, "--trainer.max_epochs", "1", "--output.csv", "false"), data,
            model=model, geometry=TinyGeometry())
        states.append(read_checkpoint(tmp_path / name / "model.pth"))
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_bf16_autocast_and_gradient_accumulation(tmp_path, data):
    torch.manual_seed(0)
    result = fit(quick_config(tmp_path, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed",
                              "--data.batch_size", "2", "--trainer.accumulate_grad_batches", "2"),
                 data, model=tiny_sam(), geometry=TinyGeometry())
    ckpt = torch.load(result.last_checkpoint, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # 4 batches of 2, one optimiser step per 2 batches
    rows = list(csv.DictReader(open(next((tmp_path / "csv").glob("version_*/metrics.csv")), encoding="utf-8")))
    assert all(torch.isfinite(torch.tensor(float(r["train_loss_epoch"]))) for r in rows if r.get("train_loss_epoch"))
    state = read_checkpoint(result.export_path)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # weights stay float32


def test_compile_needs_a_cpp_compiler(tmp_path, data, monkeypatch):
    import shutil

    from medsamkit.errors import InputError

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="trainer.compile: true needs a C\\+\\+ compiler"):
        fit(quick_config(tmp_path, "--trainer.compile", "true"), data, model=tiny_sam(), geometry=TinyGeometry())
