"""Reading, normalising, strictly loading and saving checkpoints; recognising architectures.

Every layout MedSAM users meet (raw state_dict, {"model": ...} training checkpoints with extra
pickled objects, {"state_dict": ...}, "module." / "model." prefixes) must come back as the same
raw state_dict, which then loads strictly into the model.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re

import pytest
import torch

from medsamkit.errors import CheckpointError
from medsamkit.models import checkpoint as ckpt
from medsamkit.models.checkpoint import (
    load_state_dict_strict,
    normalise_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from medsamkit.models.detect import detect_architecture
from medsamkit.models.registry import ARCHITECTURES

PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


@pytest.fixture(scope="module")
def tiny_model():
    """A randomly initialised LiteMedSAM (TinyViT) model, built once (building costs ~1.5 s)."""
    torch.manual_seed(0)
    return ARCHITECTURES["tinyvit"]().eval()


@pytest.fixture(scope="module")
def tiny_state(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


@pytest.fixture(scope="module")
def meta_states():
    """Key sets and shapes of the ViT-B/L/H models without allocating their weights."""
    states = {}
    for arch in ("vit-b", "vit-l", "vit-h"):
        with torch.device("meta"):
            states[arch] = ARCHITECTURES[arch]().state_dict()
    return states


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- layouts ------------------------------------------------------------------------------


def _layouts(sd: dict[str, torch.Tensor]) -> dict[str, object]:
    return {
        "raw": dict(sd),
        "medsam-training": {"model": dict(sd), "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 3},
        "lightning": {"state_dict": dict(sd), "epoch": 7, "global_step": 100},
        "ddp": {f"module.{k}": v for k, v in sd.items()},
        "lightning-attr": {f"model.{k}": v for k, v in sd.items()},
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "training+ddp": {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        "ddp+attr": {f"module.model.{k}": v for k, v in sd.items()},
    }


@pytest.mark.parametrize("layout", list(_layouts({"a": torch.zeros(1)})))
def test_normalise_state_dict_unwraps_every_layout(layout, tiny_state):
    obj = _layouts(tiny_state)[layout]
    state = normalise_state_dict(obj, source="x.pth")
    assert _same(state, tiny_state)
    assert all(k.startswith(PARTS) for k in state)


def test_normalise_keeps_official_keys_that_look_like_prefixes():
    # "model." is only stripped when *every* key has it and none is already an official key
    sd = {"image_encoder.w": torch.zeros(1), "mask_decoder.model.w": torch.ones(1)}
    assert normalise_state_dict(sd).keys() == sd.keys()
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert normalise_state_dict(mixed).keys() == mixed.keys()


@pytest.mark.parametrize(
    "obj, found",
    [
        ({"epoch": 3, "optimizer": {}}, "epoch"),
        ({"model": {"epoch": 3}}, "model"),
        ([torch.zeros(1)], "list"),
        ({}, "[]"),
    ],
)
def test_normalise_without_tensors_is_a_checkpoint_error(obj, found):
    with pytest.raises(CheckpointError) as info:
        normalise_state_dict(obj, source="weird.pth")
    msg = str(info.value)
    assert msg.startswith("weird.pth: no state_dict found")
    assert found in msg


SMALL = {
    "image_encoder.neck.0.weight": torch.arange(12.0).reshape(3, 4, 1, 1),
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.randn(2, 8),
    "mask_decoder.iou_token.weight": torch.ones(1, 8, dtype=torch.float16),
    "image_encoder.patch_embed.seq.0.bn.num_batches_tracked": torch.tensor(5),
}


@pytest.mark.parametrize("layout", list(_layouts(SMALL)))
def test_read_checkpoint_of_each_layout(layout, tmp_path, caplog):
    path = tmp_path / f"{layout}.pth"
    torch.save(_layouts(SMALL)[layout], path)
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        state = read_checkpoint(path)
    assert _same(state, SMALL)
    assert state["mask_decoder.iou_token.weight"].dtype == torch.float16
    # plain tensors (and ints, dicts of lr...) need no full unpickling: no warning about trusting the file
    assert "full unpickling" not in caplog.text


def test_medsam_training_checkpoint_with_pickled_objects_uses_the_fallback(tmp_path, caplog):
    # MedSAM's train_one_gpu.py saves {"model", "optimizer", "epoch"}; users often add their args,
    # which weights_only loading refuses: the file is then read with full unpickling, with a warning
    path = tmp_path / "medsam_model_best.pth"
    # an AdamW state_dict (built by hand: creating a torch optimizer costs seconds of imports)
    opt_state = {
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2)}},
        "param_groups": [{"lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.999), "params": [0]}],
    }
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in SMALL.items()},
            "optimizer": opt_state,
            "epoch": 3,
            "args": argparse.Namespace(lr=1e-4, batch_size=2, task_name="MedSAM-ViT-B"),
        },
        path,
    )
    with pytest.raises(pickle.UnpicklingError):  # the precondition: the safe loader refuses this file
        torch.load(path, map_location="cpu", weights_only=True)
    with caplog.at_level(logging.WARNING, logger=ckpt.__name__):
        state = read_checkpoint(path)
    assert _same(state, SMALL)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "full unpickling" in warnings[0] and str(path) in warnings[0]


def test_full_training_checkpoint_loads_strictly(tiny_model, tiny_state):
    # the real key set through the MedSAM training + DDP layout, straight into the model
    obj = {"model": {f"module.{k}": v for k, v in tiny_state.items()}, "optimizer": {}, "epoch": 3}
    state = normalise_state_dict(obj, source="medsam_model_best.pth")
    load_state_dict_strict(tiny_model, state, source="medsam_model_best.pth", model_name="litemedsam")
    assert _same(tiny_model.state_dict(), tiny_state)


# --- unreadable files ---------------------------------------------------------------------


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "medsam_vit_b.pth"
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*not found"):
        read_checkpoint(path)


def test_folder_instead_of_file_is_not_found(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path)


def test_truncated_file_names_the_file(tmp_path):
    full = tmp_path / "full.pth"
    torch.save({"image_encoder.w": torch.randn(64, 64), "mask_decoder.b": torch.randn(64)}, full)
    data = full.read_bytes()
    cut = tmp_path / "lite_medsam.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(cut)
    msg = str(info.value)
    assert msg.startswith(f"{cut}: cannot be read as a PyTorch checkpoint")


def test_garbage_file_names_the_file(tmp_path):
    bad = tmp_path / "sam_vit_b_01ec64.pth"
    bad.write_bytes(b"<html>Google Drive: virus scan warning</html>\n" * 20)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(bad)
    assert str(info.value).startswith(f"{bad}: cannot be read as a PyTorch checkpoint")


def test_empty_file_names_the_file(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=re.escape(str(empty))):
        read_checkpoint(empty)


# --- strict loading -----------------------------------------------------------------------


def test_strict_load_lists_missing_unexpected_and_wrong_shapes(tiny_model, tiny_state):
    state = dict(tiny_state)
    missing = sorted(k for k in state if k.startswith("mask_decoder.output_hypernetworks_mlps."))
    for k in missing:
        del state[k]
    state["mask_decoder.extra_head.weight"] = torch.zeros(3)
    state["optimizer_step"] = torch.zeros(1)
    wrong = "prompt_encoder.not_a_point_embed.weight"
    state[wrong] = torch.zeros(1, 128)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}

    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(tiny_model, state, source="/data/my.pth", model_name="litemedsam")
    msg = str(info.value)
    assert msg.startswith("/data/my.pth does not fit the litemedsam model.")
    assert f"{len(missing)} weights the model needs are missing from the file: " in msg
    assert missing[0] in msg
    assert len(missing) == 24 and f", ... (18 more)." in msg  # long lists are shortened, with a count
    assert missing[6] not in msg
    assert "2 entries in the file are not used by the model: mask_decoder.extra_head.weight, optimizer_step." in msg
    assert f"1 weights have the wrong shape: {wrong} (file (1, 128), model (1, 256))." in msg
    assert "looks like a tinyvit checkpoint" in msg  # the patch-embedding key is still there
    # nothing was loaded
    assert _same(tiny_model.state_dict(), before)


def test_strict_load_of_another_architecture_suggests_it(tiny_model, meta_states):
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(tiny_model, meta_states["vit-b"], source="medsam_vit_b.pth", model_name="litemedsam")
    msg = str(info.value)
    assert "weights the model needs are missing from the file" in msg
    assert "entries in the file are not used by the model" in msg
    # the one key both encoders share is the neck's first convolution: 768 vs 320 input channels
    assert (
        "1 weights have the wrong shape: image_encoder.neck.0.weight (file (256, 768, 1, 1), model (256, 320, 1, 1))."
        in msg
    )
    assert "looks like a vit-b checkpoint; pick the matching --model" in msg


def test_strict_load_with_only_shape_mismatches(tiny_model, tiny_state):
    state = dict(tiny_state)
    state["image_encoder.neck.0.weight"] = torch.zeros(256, 320, 1, 2)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(tiny_model, state, source="x.pth", model_name="litemedsam")
    msg = str(info.value)
    assert "missing" not in msg and "not used" not in msg
    assert "image_encoder.neck.0.weight (file (256, 320, 1, 2), model (256, 320, 1, 1))" in msg


# --- saving -------------------------------------------------------------------------------


def test_save_checkpoint_writes_the_official_raw_layout(tiny_model, tiny_state, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "out" / "finetuned.pth")
    assert path == tmp_path / "out" / "finetuned.pth" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["finetuned.pth"]  # no temporary file left
    raw = torch.load(path, map_location="cpu", weights_only=True)  # what the original tools do
    assert isinstance(raw, dict) and all(isinstance(v, torch.Tensor) for v in raw.values())
    assert all(k.startswith(PARTS) for k in raw)
    assert {k.split(".")[0] for k in raw} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    assert len(raw) == 435
    assert _same(raw, tiny_state)

    # reload strictly into the model after changing its weights
    with torch.no_grad():
        tiny_model.mask_decoder.iou_token.weight.add_(1.0)
    try:
        load_state_dict_strict(tiny_model, read_checkpoint(path), source=str(path), model_name="litemedsam")
        assert _same(tiny_model.state_dict(), tiny_state)
    finally:
        tiny_model.load_state_dict(tiny_state)


def test_save_checkpoint_is_atomic(tiny_model, tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"previous good weights")

    def failing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_model, path)
    assert path.read_bytes() == b"previous good weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


@pytest.mark.parametrize("attr", ["module", "_orig_mod"])
def test_save_checkpoint_of_a_wrapped_model_writes_the_official_layout(attr, tmp_path, tiny_model, tiny_state):
    # DDP (".module") and torch.compile ("._orig_mod") wrappers prefix every key; the file must not
    wrapper = torch.nn.Module()
    setattr(wrapper, attr, tiny_model)
    assert all(k.startswith(attr + ".") for k in wrapper.state_dict())
    path = save_checkpoint(wrapper, tmp_path / "wrapped.pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith(PARTS) for k in raw)
    assert _same(raw, tiny_state)


# --- architecture detection ---------------------------------------------------------------


def test_detect_tinyvit(tiny_state):
    assert detect_architecture(tiny_state) == "tinyvit"


@pytest.mark.parametrize("arch", ["vit-b", "vit-l", "vit-h"])
def test_detect_vit_sizes(arch, meta_states):
    state = meta_states[arch]
    assert detect_architecture(state) == arch
    width = {"vit-b": 768, "vit-l": 1024, "vit-h": 1280}[arch]
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, width)


def test_detect_vit_depth_and_width_must_agree(meta_states):
    state = dict(meta_states["vit-b"])
    state["image_encoder.pos_embed"] = torch.empty(1, 64, 64, 1024, device="meta")  # vit-b depth, vit-l width
    assert detect_architecture(state) is None
    vit_l_cut = {k: v for k, v in meta_states["vit-l"].items() if not k.startswith("image_encoder.blocks.23.")}
    assert detect_architecture(vit_l_cut) is None  # 23 blocks: no SAM size


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)},
        {
            "image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1),
            "sam_mask_decoder.iou_token.weight": torch.zeros(1),
        },
    ],
    ids=["empty", "resnet", "sam2"],
)
def test_detect_unknown(state):
    assert detect_architecture(state) is None
