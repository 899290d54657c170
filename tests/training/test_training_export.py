"""Exported models in the official layout: the real LiteMedSAM architecture fine-tuned for a step,
reloaded by ``load_model(checkpoint=...)`` strictly and used by the predictor; automatic mode's
prompt-free prediction; the metadata sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from training_fixtures import make_samples, quick_config, synthetic_image, tiny_sam

from medsamkit.errors import InputError
from medsamkit.inference.predictor import Predictor
from medsamkit.models.loader import load_model
from medsamkit.preprocessing.geometry import geometry_for
from medsamkit.inference.automatic import predict_automatic
from medsamkit.training.datamodule import DataSources
from medsamkit.training.export import is_automatic, load_baseline, metadata_path, read_export_metadata
from medsamkit.training.fit import fit

GEOMETRY = geometry_for("litemedsam")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two one-step decoder runs of the real (randomly initialised) LiteMedSAM: boxed, then automatic;
    both use one embedding folder, so the second run reuses the first one's embeddings."""
    root = tmp_path_factory.mktemp("export")
    data = DataSources(make_samples(2, GEOMETRY), make_samples(1, GEOMETRY, seed=1))
    common = ["--model.name", "litemedsam", "--trainer.max_epochs", "1", "--data.batch_size", "2",
              "--data.embedding_dir", str(root / "embeddings"), "--output.csv", "false"]
    boxed = fit(quick_config(root / "boxed", *common), data)
    auto = fit(quick_config(root / "auto", *common, "--model.automatic", "true"), data)
    return root, boxed, auto


def test_export_loads_strictly_with_load_model_and_predicts(runs):
    _, boxed, _ = runs
    loaded = load_model(checkpoint=boxed.export_path, device="cpu")
    assert loaded.spec.name == "litemedsam" and loaded.weights_path == boxed.export_path
    image, mask = synthetic_image(5, 120, 150)
    predictor = Predictor(loaded.model, GEOMETRY)
    predictor.set_image(image)
    prediction = predictor.predict(boxes=np.array([[20, 20, 120, 100]]))
    assert prediction.masks.shape == (1, 1, 120, 150)
    meta = read_export_metadata(boxed.export_path)
    assert meta["model"] == "litemedsam" and meta["mode"] == "decoder" and not is_automatic(boxed.export_path)


def test_second_run_reused_the_embeddings(runs):
    root, _, _ = runs
    folders = [p for p in (root / "embeddings").iterdir() if p.is_dir()]
    assert len(folders) == 2  # train and val, shared by both runs


def test_automatic_export_segments_without_a_prompt(runs):
    _, boxed, auto = runs
    assert is_automatic(auto.export_path) and read_export_metadata(auto.export_path)["automatic"] is True
    loaded = load_model(checkpoint=auto.export_path, device="cpu")
    image, _ = synthetic_image(6, 100, 140)
    predictor = Predictor(loaded.model, GEOMETRY)
    prediction = predict_automatic(predictor, image)
    assert prediction.masks.shape == (1, 1, 100, 140) and prediction.iou_scores.shape == (1, 1)
    # the same as decoding the no-prompt embeddings by hand
    with torch.no_grad():
        low, _ = loaded.model.decode(predictor.embedding.features)
    expected = GEOMETRY.logits_to_original(low, predictor.embedding.frame).numpy()
    assert np.allclose(prediction.logits, expected, atol=1e-5)
    assert predict_automatic(predictor).masks.shape == (1, 1, 100, 140)  # the current image again


def test_metadata_sidecar_errors(tmp_path):
    weights = tmp_path / "model.pth"
    torch.save(tiny_sam().state_dict(), weights)
    assert metadata_path(weights).name == "model.pth.json"
    assert read_export_metadata(weights) is None and not is_automatic(weights) and not is_automatic(None)
    metadata_path(weights).write_text("{broken", encoding="utf-8")
    with pytest.raises(InputError, match="model.pth.json: cannot read the export metadata"):
        read_export_metadata(weights)
    metadata_path(weights).write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(InputError, match="not a medsamkit-export metadata file"):
        is_automatic(weights)
    metadata_path(weights).write_text(json.dumps({"format": "medsamkit-export", "model": "litemedsam"}), encoding="utf-8")
    with pytest.raises(InputError, match="not an exported baseline"):
        load_baseline(weights)


def test_the_torch_free_baseline_names_are_the_registrys():
    from medsamkit.models.baselines import BASELINES
    from medsamkit.training.export_metadata import BASELINE_NAMES

    assert set(BASELINE_NAMES) == set(BASELINES)
