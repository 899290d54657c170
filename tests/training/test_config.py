"""Config layering (later files win key by key), dotted overrides, validation errors that name
the file and the key, and the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsamkit.errors import InputError
from medsamkit.training.config import FitConfig, config_from_dict, load_config, parse_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_files():
    config = load_config()
    assert config == FitConfig()
    assert config.model.mode == "decoder" and config.data.box_jitter == 20 and config.loss.dice == 1.0


def test_later_files_and_overrides_win(tmp_path):
    base = _write(tmp_path / "base.yaml", "model: {name: litemedsam, mode: lora}\n"
                  "optim: {lr: 1.0e-4, weight_decay: 0.01}\ntrainer: {max_epochs: 5}\n")
    more = _write(tmp_path / "more.yaml", "optim: {lr: 5.0e-5}\ntrainer: {max_epochs: 7, devices: 2}\n")
    config = load_config([base, more], ["--trainer.max_epochs", "3", "--model.lora.rank=4",
                                        "--data.embedding_flips", "[hflip, vflip]", "--optim.lr", "2e-5"])
    assert config.model.mode == "lora"            # from base only
    assert config.optim.weight_decay == 0.01      # base key kept when more.yaml sets a sibling
    assert config.optim.lr == 2e-5                # "2e-5" (a string to PyYAML) read as a float
    assert config.trainer.max_epochs == 3         # override beats both files
    assert config.trainer.devices == 2
    assert config.model.lora.rank == 4 and config.model.lora.targets == ["qkv", "proj"]
    assert config.data.embedding_flips == ["hflip", "vflip"]
    assert config_from_dict(config.to_dict()) == config


def test_unknown_key_names_the_file_and_suggests(tmp_path):
    bad = _write(tmp_path / "bad.yaml", "trainer:\n  max_epoch: 3\n")
    with pytest.raises(InputError) as err:
        load_config([bad])
    message = str(err.value)
    assert message.startswith(f"{bad}: unknown key 'trainer.max_epoch'")
    assert "did you mean trainer.max_epochs?" in message


def test_unknown_override_and_section(tmp_path):
    with pytest.raises(InputError, match=r"^--optimizer.lr: unknown key 'optimizer'"):
        load_config([], ["--optimizer.lr", "1"])
    with pytest.raises(InputError, match="unknown key 'model.lora.rnk'"):
        load_config([], ["--model.lora.rnk", "4"])


def test_type_and_choice_errors(tmp_path):
    with pytest.raises(InputError, match=r"^--trainer.max_epochs: trainer.max_epochs must be int, got 'many'"):
        load_config([], ["--trainer.max_epochs", "many"])
    bad = _write(tmp_path / "mode.yaml", "model: {mode: encoder}\n")
    with pytest.raises(InputError, match=r"mode.yaml: model.mode must be one of decoder, encoder-decoder, full, lora"):
        load_config([bad])
    with pytest.raises(InputError, match="data.embedding_flips must be one of hflip, vflip"):
        load_config([], ["--data.embedding_flips", "[rot90]"])
    with pytest.raises(InputError, match="model must be a section"):
        load_config([_write(tmp_path / "flat.yaml", "model: litemedsam\n")])


def test_click_training_neighbour_box_is_a_probability_off_by_default():
    assert load_config().model.clicks.neighbour_box == 0.0
    assert load_config([], ["--model.clicks.neighbour_box", "0.5"]).model.clicks.neighbour_box == 0.5
    with pytest.raises(InputError, match="model.clicks.neighbour_box is a probability"):
        load_config([], ["--model.clicks.neighbour_box", "1.5"])
    with pytest.raises(InputError, match="must be at most 1"):
        load_config([], ["--model.clicks.neighbour_box", "0.6", "--model.clicks.neighbour_mask", "0.6"])


def test_click_training_neighbour_mask_is_a_probability_off_by_default():
    assert load_config().model.clicks.neighbour_mask == 0.0
    assert load_config([], ["--model.clicks.neighbour_mask", "0.5"]).model.clicks.neighbour_mask == 0.5
    with pytest.raises(InputError, match="model.clicks.neighbour_mask is a probability"):
        load_config([], ["--model.clicks.neighbour_mask", "1.5"])


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config([tmp_path / "missing.yaml"])
    with pytest.raises(InputError, match="cannot read the config"):
        load_config([_write(tmp_path / "broken.yaml", "model: [unclosed\n")])
    with pytest.raises(InputError, match="holds a mapping of sections"):
        load_config([_write(tmp_path / "list.yaml", "- a\n- b\n")])


def test_parse_overrides():
    assert parse_overrides(["--a.b", "3", "--c.d=true", "--e.f", "null", "--g.h", "x y"]) == [
        ("a.b", 3), ("c.d", True), ("e.f", None), ("g.h", "x y")]
    with pytest.raises(InputError, match="--a.b needs a value"):
        parse_overrides(["--a.b"])
    with pytest.raises(InputError, match="unexpected argument 'stray'"):
        parse_overrides(["stray"])


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_validate(name):
    config = load_config([CONFIGS / name])
    assert isinstance(config, FitConfig)


def test_shipped_configs_layer():
    config = load_config([CONFIGS / "litemedsam-decoder.yaml", CONFIGS / "litemedsam-automatic.yaml"])
    assert config.model.automatic and config.model.mode == "decoder"
    assert config.data.embedding_flips == ["hflip"]  # kept from the decoder config
    assert config.output.dir == "runs/fit/litemedsam-automatic"


def test_click_training_click_weight_is_off_by_default_and_validated():
    assert load_config().model.clicks.click_weight == 0.0
    loaded = load_config([], ["--model.clicks.click_weight", "30", "--model.clicks.click_radius", "3"])
    assert (loaded.model.clicks.click_weight, loaded.model.clicks.click_radius) == (30.0, 3.0)
    with pytest.raises(InputError, match="model.clicks.click_weight must be >= 0"):
        load_config([], ["--model.clicks.click_weight", "-1"])
    with pytest.raises(InputError, match="model.clicks.click_radius must be > 0"):
        load_config([], ["--model.clicks.click_radius", "0"])


def test_embedding_warps_are_off_by_default_and_validated():
    assert load_config().data.embedding_warps == 0
    assert load_config([], ["--data.embedding_warps", "4"]).data.embedding_warps == 4
    with pytest.raises(InputError, match="data.embedding_warps must be >= 0"):
        load_config([], ["--data.embedding_warps", "-1"])
