"""`medsamkit fit`: layered configs and dotted overrides on the command line, one-line errors, and
a real (tiny) run on a preprocess cache that writes checkpoints and an exported model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import pytest
import yaml

from medsamkit.cli.main import main

_SPEC = importlib.util.spec_from_file_location(
    "training_fixtures", Path(__file__).resolve().parents[1] / "training" / "training_fixtures.py")
fixtures = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fixtures)


def _error_line(capsys, code: int) -> str:
    """The one error line of a failed command (exit 2, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("medsamkit: error: "), err
    return err


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fitdata")
    (root / "ds" / "images").mkdir(parents=True)
    (root / "ds" / "masks").mkdir()
    for i in range(6):
        image, mask = fixtures.synthetic_image(i, 80 + 4 * i, 100)
        cv2.imwrite(str(root / "ds" / "images" / f"im{i}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "ds" / "masks" / f"im{i}.png"), mask * 255)
    assert main(["-q", "preprocess", str(root / "ds"), "-o", str(root / "cache"), "--split", "0.67"]) == 0
    return root / "cache"


def test_print_config_layers_files_and_overrides(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("model: {name: unet, width: 16}\ntrainer: {max_epochs: 9}\n", encoding="utf-8")
    more = tmp_path / "more.yaml"
    more.write_text("trainer: {max_epochs: 4, seed: 3}\n", encoding="utf-8")
    code = main(["fit", "--config", str(base), "--config", str(more), "--trainer.max_epochs", "2",
                 "--optim.lr=5e-4", "--print-config"])
    config = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    assert config["model"]["name"] == "unet" and config["model"]["width"] == 16
    assert config["trainer"]["max_epochs"] == 2 and config["trainer"]["seed"] == 3
    assert config["optim"]["lr"] == 5e-4


def test_unknown_key_is_a_one_line_error(tmp_path, capsys):
    line = _error_line(capsys, main(["fit", "--trainer.max_epoch", "3"]))
    assert "--trainer.max_epoch: unknown key 'trainer.max_epoch' (did you mean trainer.max_epochs?)" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  cahce: x\n", encoding="utf-8")
    assert f"{bad}: unknown key 'data.cahce'" in _error_line(capsys, main(["fit", "--config", str(bad)]))
    assert "--model.mode needs a value" in _error_line(capsys, main(["fit", "--model.mode"]))


def test_data_errors(tmp_path, cache, capsys):
    assert "no training data: set data.cache" in _error_line(capsys, main(["fit", "--model.name", "unet"]))
    assert "not a preprocess cache" in _error_line(capsys, main(["fit", "--data.cache", str(tmp_path)]))
    code = main(["fit", "--data.cache", str(cache), "--model.name", "sam-vit-b", "--model.pretrained", "false"])
    line = _error_line(capsys, code)
    assert "this cache was built for litemedsam" in line and "needs sam at 1024 px" in line


def test_fit_a_baseline_on_a_preprocess_cache(tmp_path, cache, capsys):
    out = tmp_path / "run"

    def args(epochs: int) -> list[str]:
        return ["-q", "fit", "--model.name", "unet", "--model.width", "4", "--data.cache", str(cache),
                "--trainer.max_epochs", str(epochs), "--data.batch_size", "4", "--output.dir", str(out),
                "--output.progress_bar", "false", "--output.tensorboard", "false"]

    assert main(args(1)) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(("┏", "┃", "┡", "│", "└"))]
    summary = next(line for line in lines if line.startswith("trained "))
    assert summary.startswith("trained 1 epoch(s) in ") and "best val Dice 0." in summary
    assert lines[-1] == f"exported {out / 'model.pth'} (use it with --checkpoint)"
    meta = json.loads((out / "model.pth.json").read_text(encoding="utf-8"))
    assert meta["model"] == "unet" and meta["data"] == str(cache) and meta["input_size"] == 256
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert list((out / "csv").glob("version_0/metrics.csv"))
    assert main(args(2)) == 0  # resumes from last.ckpt: one more epoch
    assert "trained 2 epoch(s)" in capsys.readouterr().out
    assert list((out / "csv").glob("version_1/metrics.csv"))
