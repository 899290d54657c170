"""Short real runs of the from-scratch baselines through the same fit as the SAM family: the
training loss goes down and the exported network reloads strictly and predicts the same."""

from __future__ import annotations

import csv

import pytest
import torch
from training_fixtures import TinyGeometry, batch_of, make_samples, quick_config

from medsamkit.models.baselines import build_baseline
from medsamkit.training.datamodule import DataSources
from medsamkit.training.export import load_baseline
from medsamkit.training.fit import fit
from medsamkit.training.nets import BaselineNet


@pytest.fixture(scope="module")
def data():
    return DataSources(make_samples(4), make_samples(2, seed=1))


@pytest.mark.parametrize("name", ["unet", "prompted-resnet"])
def test_baselines_train_and_export(tmp_path, data, name):
    torch.manual_seed(0)
    network = build_baseline(name, width=4)
    no_augment = ["--data.augment.hflip", "0", "--data.augment.rotate_deg", "0", "--data.augment.scale", "0",
                  "--data.augment.intensity", "0", "--data.box_jitter", "0"]
    result = fit(quick_config(tmp_path, "--model.name", name, "--model.width", "4", "--optim.lr", "1e-2",
                              "--trainer.max_epochs", "5", *no_augment), data, model=network, geometry=TinyGeometry())
    # BatchNorm: eval-mode outputs lag behind after 5 steps, so read the logged training loss
    rows = list(csv.DictReader(open(next((tmp_path / "csv").glob("version_*/metrics.csv")), encoding="utf-8")))
    losses = [float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")]
    assert len(losses) == 5 and losses[-1] < losses[0]
    loaded, meta = load_baseline(result.export_path)
    assert meta["model"] == name and meta["width"] == 4 and meta["automatic"] == (name == "unet")
    # the export holds the best checkpoint's weights (compared with that file, not with the
    # object the weights were trained in)
    best = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    exported = loaded.state_dict()
    assert {k.removeprefix("net.net.") for k in best} == set(exported)
    for key, value in best.items():
        assert torch.equal(exported[key.removeprefix("net.net.")], value), key
    # and the reloaded network predicts what the best checkpoint's weights predict
    reference = build_baseline(name, width=4)
    reference.load_state_dict({k.removeprefix("net.net."): v for k, v in best.items()})
    batch = batch_of(data.val)
    with torch.no_grad():
        assert torch.allclose(BaselineNet(loaded.eval())(batch)[0], BaselineNet(reference.eval())(batch)[0], atol=1e-5)
