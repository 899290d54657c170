"""SAM2 configurations: every official key layout loads strictly, sizes are recognised from keys,
the registry names build the right model, every checkpoint form loads through load_model.

The official layouts (../shared/data/parity/keys/, facebookresearch/sam2 at 2b90b9f) are checked
on the meta device: shapes only, no memory. Tests that need ../shared skip with the reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from medsamkit.errors import CheckpointError
from medsamkit.models.checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from medsamkit.models.detect import detect_architecture
from medsamkit.models.loader import load_model
from medsamkit.models.registry import MODELS
from medsamkit.models.sam2.base import SAM2Base
from medsamkit.models.sam2.config import HIERA_SIZES, SAM2_ARCHITECTURES, SAM2Config, build_sam2
from medsamkit.models.standin import standin_state_dict, standin_tensor
from medsamkit.preprocessing.geometry import geometry_for

KEYS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "parity" / "keys"
_needs_keys_skip = pytest.mark.skipif(not KEYS.is_dir(), reason=f"{KEYS} absent (the shared parity data)")


def needs_keys(test):
    """Marks a test that needs ../shared/data (``realdata``) and skips it when that is absent."""
    return pytest.mark.realdata(_needs_keys_skip(test))


#: parity.md: key files -> (keys, parameters incl. the prompt encoder's 256-value buffer)
LAYOUTS = {
    "sam2_hiera_t": ("sam2-hiera-t", 468, 38_946_242),
    "sam2_hiera_s": ("sam2-hiera-s", 516, 46_044_098),
    "sam2_hiera_bp": ("sam2-hiera-b+", 612, 80_833_922),
    "sam2_hiera_l": ("sam2-hiera-l", 900, 224_430_386),
    "sam2.1_hiera_t": ("sam2.1-hiera-t", 471, 38_962_754),
    "sam2.1_hiera_s": ("sam2.1-hiera-s", 519, 46_060_610),
    "sam2.1_hiera_bp": ("sam2.1-hiera-b+", 615, 80_850_434),
    "sam2.1_hiera_l": ("sam2.1-hiera-l", 903, 224_446_898),
}


def _layout(name: str) -> dict[str, list[int]]:
    return json.loads((KEYS / f"{name}.json").read_text(encoding="utf-8"))


@needs_keys
@pytest.mark.parametrize("file", list(LAYOUTS))
def test_every_official_key_layout_loads_strictly(file):
    arch, n_keys, n_values = LAYOUTS[file]
    layout = _layout(file)
    assert len(layout) == n_keys and sum(math.prod(s) for s in layout.values()) == n_values
    with torch.device("meta"):
        model = build_sam2(SAM2_ARCHITECTURES[arch])
    state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    load_state_dict_strict(model, state, source=file, model_name=arch)  # raises on any mismatch
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert own == layout
    assert detect_architecture(state) == arch


@needs_keys
def test_medsam2_has_sam21_tiny_keys_and_is_told_apart_by_name_only(tmp_path, caplog):
    layout = _layout("sam2.1_hiera_t")
    with torch.device("meta"):
        medsam2 = MODELS["medsam2"].build()
    assert {k: list(v.shape) for k, v in medsam2.state_dict().items()} == layout
    assert medsam2.image_size == 512 and medsam2.sam_prompt_encoder.image_embedding_size == (32, 32)
    assert MODELS["medsam2"].key_layout == MODELS["sam2.1-hiera-tiny"].architecture == "sam2.1-hiera-t"


@needs_keys
def test_a_missing_and_a_wrong_key_are_named_in_plain_words():
    layout = _layout("sam2.1_hiera_t")
    state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    del state["no_obj_embed_spatial"]
    state["sam_mask_decoder.conv_s0.weight"] = torch.empty(1, 2, device="meta")
    state["extra.weight"] = torch.empty(3, device="meta")
    with torch.device("meta"):
        model = build_sam2(SAM2_ARCHITECTURES["sam2.1-hiera-t"])
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, state, source="x.pt", model_name="sam2.1-hiera-tiny")
    msg = str(info.value)
    assert "1 weights the model needs are missing from the file: no_obj_embed_spatial" in msg
    assert "1 entries in the file are not used by the model: extra.weight" in msg
    assert "sam_mask_decoder.conv_s0.weight (file (1, 2), model (32, 256, 1, 1))" in msg


def test_sam2_and_sam21_sizes_are_recognised_from_keys():
    for arch, config in SAM2_ARCHITECTURES.items():
        with torch.device("meta"):
            state = build_sam2(config).state_dict()
        expected = arch.replace("-512", "")  # MedSAM2's keys are SAM2.1-tiny's
        assert detect_architecture(state) == expected


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.family == "sam2"])
def test_every_sam2_registry_name_builds_its_configuration(name):
    spec = MODELS[name]
    with torch.device("meta"):
        model = spec.build()
    assert isinstance(model, SAM2Base)
    geometry = geometry_for(spec.preprocessing)
    assert model.image_size == geometry.input_size == (512 if name == "medsam2" else 1024)
    size = HIERA_SIZES[SAM2_ARCHITECTURES[spec.architecture].hiera]
    assert len(model.image_encoder.trunk.blocks) == sum(size.stages)
    windows = [b.window_size for b in model.image_encoder.trunk.blocks]
    assert [i for i, w in enumerate(windows) if w == 0] == list(size.global_blocks)
    sam21 = ".1" in name or name == "medsam2"
    assert (model.no_obj_embed_spatial is not None) == sam21
    assert isinstance(model.obj_ptr_tpos_proj, torch.nn.Linear) == sam21


def test_config_rejects_unknown_sizes():
    with pytest.raises(ValueError, match="unknown Hiera size"):
        SAM2Config("xl")
    with pytest.raises(ValueError, match="version"):
        SAM2Config("t", "3")


def test_standin_recipe():
    # parity.md: matrices / sqrt(fan-in), 1-D .weight 1 + 0.1 t, anything else 0.1 t; per-key seed
    a = standin_tensor("a.weight", (4, 3, 2))
    assert a.shape == (4, 3, 2) and torch.equal(a, standin_tensor("a.weight", [4, 3, 2]))
    assert not torch.equal(a, standin_tensor("b.weight", (4, 3, 2)))
    g = torch.Generator().manual_seed(__import__("zlib").crc32(b"a.weight"))
    assert torch.allclose(a, torch.randn((4, 3, 2), generator=g) / math.sqrt(6))
    norm = standin_tensor("n.weight", (100,))
    bias = standin_tensor("n.bias", (100,))
    assert abs(norm.mean().item() - 1) < 0.05 and abs(bias.mean().item()) < 0.05 and bias.std() < 0.2
    assert set(standin_state_dict({"x": (2,), "y.weight": (2, 2)})) == {"x", "y.weight"}


# --- checkpoint forms through the public loader (real size: SAM2.1-tiny, stand-in weights) ---


@pytest.fixture(scope="module")
def tiny_state():
    with torch.device("meta"):
        layout = {k: v.shape for k, v in build_sam2(SAM2_ARCHITECTURES["sam2.1-hiera-t"]).state_dict().items()}
    return standin_state_dict(layout)


def test_every_checkpoint_form_loads_and_our_export_is_the_official_form(tiny_state, tmp_path, caplog):
    forms = {
        "sam2.1_hiera_tiny.pt": {"model": tiny_state},
        "raw.pt": tiny_state,
        "ddp.pt": {"model": {f"module.{k}": v for k, v in tiny_state.items()}},
    }
    loaded = None
    for file, obj in forms.items():
        torch.save(obj, tmp_path / file)
        with caplog.at_level("WARNING"):
            loaded = load_model(checkpoint=tmp_path / file, device="cpu")
        assert loaded.spec.name == "sam2.1-hiera-tiny" and not loaded.model.training
        assert torch.equal(loaded.model.no_obj_embed_spatial, tiny_state["no_obj_embed_spatial"])
    assert "used by medsam2, sam2.1-hiera-tiny; assuming sam2.1-hiera-tiny" in caplog.text
    # our export: the official {"model": ...} form, read back by torch.load as the official code does
    out = save_checkpoint(loaded.model, tmp_path / "export.pt")
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert set(raw) == {"model"} and set(raw["model"]) == set(tiny_state)
    assert all(torch.equal(raw["model"][k], tiny_state[k]) for k in tiny_state)
    assert set(read_checkpoint(out)) == set(tiny_state)


def test_medsam2_file_name_or_model_option_picks_medsam2(tiny_state, tmp_path):
    torch.save({"model": tiny_state}, tmp_path / "MedSAM2_latest.pt")
    assert load_model(checkpoint=tmp_path / "MedSAM2_latest.pt", device="cpu").spec.name == "medsam2"
    torch.save({"model": tiny_state}, tmp_path / "weights.pt")
    loaded = load_model("medsam2", checkpoint=tmp_path / "weights.pt", device="cpu")
    assert loaded.spec.name == "medsam2" and loaded.model.image_size == 512
    with pytest.raises(CheckpointError) as info:
        load_model("sam2-hiera-small", checkpoint=tmp_path / "weights.pt", device="cpu")
    assert "looks like a sam2.1-hiera-t checkpoint" in str(info.value)
    assert "pick the matching --model (medsam2 or sam2.1-hiera-tiny)" in str(info.value)


# --- the zoo: official files, downloaded and verified (served from 127.0.0.1 here) ---------------


def test_zoo_names_the_official_files():
    from medsamkit.models import zoo

    for name, spec in MODELS.items():
        if spec.family != "sam2":
            continue
        source = zoo.WEIGHTS[spec.weights]
        assert source.urls and all(u.startswith("https://") and u.endswith(source.filename) for u in source.urls)
        if name == "medsam2":
            assert source.filename == "MedSAM2_latest.pt" and source.sha256 is None
            assert source.urls[0].startswith("https://huggingface.co/wanglab/MedSAM2/")
        else:
            folder = "092824" if name.startswith("sam2.1") else "072824"
            assert f"/segment_anything_2/{folder}/" in source.urls[0] and len(source.sha256) == 64
    assert zoo.WEIGHTS["sam2.1-hiera-base-plus"].filename == "sam2.1_hiera_base_plus.pt"


def test_first_use_downloads_verifies_and_loads_strictly(tiny_state, tmp_path, monkeypatch):
    import functools
    import hashlib
    import http.server
    import threading

    from medsamkit.models import zoo

    www = tmp_path / "www"
    www.mkdir()
    torch.save({"model": tiny_state}, www / "sam2.1_hiera_tiny.pt")
    digest = hashlib.sha256((www / "sam2.1_hiera_tiny.pt").read_bytes()).hexdigest()
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *a: None}), directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/sam2.1_hiera_tiny.pt"
        official = zoo.WEIGHTS["sam2.1-hiera-tiny"]
        monkeypatch.setitem(zoo.WEIGHTS, "sam2.1-hiera-tiny",
                            zoo.WeightsSource(official.filename, (url,), digest))
        monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("MEDSAMKIT_OFFLINE", raising=False)
        loaded = load_model("sam2.1-hiera-tiny", device="cpu")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
    assert loaded.weights_path == tmp_path / "cache" / "sam2.1_hiera_tiny.pt"
    assert torch.equal(loaded.model.maskmem_tpos_enc, tiny_state["maskmem_tpos_enc"])


def test_offline_error_says_which_file_and_where(tmp_path, monkeypatch):
    from medsamkit.errors import WeightsUnavailableError

    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDSAMKIT_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("medsam2", device="cpu")
    msg = str(info.value)
    assert "MedSAM2_latest.pt (no published digest)" in msg
    assert str(tmp_path / "cache" / "MedSAM2_latest.pt") in msg and "--checkpoint" in msg
