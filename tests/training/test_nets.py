"""Fine-tuning modes: what trains, what stays frozen (and in eval mode), and the forward paths."""

from __future__ import annotations

import pytest
import torch
from training_fixtures import tiny_sam

from medsamkit.models.baselines import UNet
from medsamkit.training.config import LoraConfig
from medsamkit.training.nets import BaselineNet, SamNet

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
TRAINED = {"decoder": {"mask_decoder"}, "encoder-decoder": {"image_encoder", "mask_decoder"},
           "full": set(PARTS), "lora": {"mask_decoder"}}


def _batch(n: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"image": torch.randn(n, 3, 64, 64), "box": torch.tensor([[4.0, 6.0, 40.0, 30.0]] * n),
            "mask": torch.zeros(n, 1, 64, 64), "valid": torch.tensor([[64, 64]] * n)}


@pytest.mark.parametrize("mode", list(TRAINED))
def test_modes_freeze_and_train_the_right_parts(mode):
    net = SamNet(tiny_sam(), mode, lora=LoraConfig(rank=2, alpha=4.0))
    for part in PARTS:
        params = dict(getattr(net.model, part).named_parameters())
        trained = {n for n, p in params.items() if p.requires_grad}
        if part in TRAINED[mode]:
            assert trained == set(params), part
        elif mode == "lora" and part == "image_encoder":
            assert trained and all("lora_" in n for n in trained)
            assert {n for n in params if "lora_" in n} == trained
        else:
            assert not trained, part
    net.train()
    assert net.model.mask_decoder.training
    assert net.model.image_encoder.training == (mode in ("encoder-decoder", "full"))
    assert net.model.prompt_encoder.training == (mode == "full")
    keys = [k for k in net.state_dict() if net.is_trained_key(k)]
    assert all(k.startswith(tuple(f"model.{p}." for p in TRAINED[mode])) or "lora_" in k for k in keys)


@pytest.mark.parametrize("mode", ["decoder", "encoder-decoder"])
def test_gradients_reach_only_trained_parts(mode):
    net = SamNet(tiny_sam(), mode).train()
    low_res, iou = net(_batch())
    assert low_res.shape == (3, 1, 64, 64) and iou.shape == (3, 1)
    low_res.mean().backward()
    encoder_grads = [p.grad for p in net.model.image_encoder.parameters()]
    assert all(g is None for g in encoder_grads) == (mode == "decoder")
    assert all(p.grad is None for p in net.model.prompt_encoder.parameters())
    assert any(p.grad is not None for p in net.model.mask_decoder.parameters())


def test_cached_embedding_path_equals_the_image_path():
    net = SamNet(tiny_sam(), "decoder").eval()
    batch = _batch()
    with torch.no_grad():
        from_images = net(batch)[0]
        embedded = {**batch, "embedding": net.model.encode(batch["image"])}
        del embedded["image"]
        assert torch.allclose(net(embedded)[0], from_images, atol=1e-5)


def test_automatic_ignores_the_box():
    net = SamNet(tiny_sam(), "decoder", automatic=True).eval()
    batch = _batch()
    with torch.no_grad():
        a = net(batch)[0]
        b = net({**batch, "box": torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)})[0]
        boxed = SamNet(net.model, "decoder").eval()(batch)[0]
    assert a.shape == (3, 1, 64, 64) and torch.equal(a, b) and not torch.allclose(a, boxed)


def test_baseline_net():
    net = BaselineNet(UNet(width=4, levels=3))
    logits, iou = net(_batch(2))
    assert logits.shape == (2, 1, 64, 64) and iou is None and net.is_trained_key("anything")


def test_the_box_step_runs_the_rearranged_decoder_with_the_decoder_gradients():
    from medsamkit.inference.box_decoder_graph import BoxDecoderGraph

    torch.manual_seed(0)
    net = SamNet(tiny_sam(), "decoder").train()
    with torch.no_grad():  # non-zero biases, so the reassociated bias terms count
        for name, p in net.model.mask_decoder.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)
    batch = _batch()
    with torch.no_grad():
        batch["embedding"] = net.model.encode(batch.pop("image"))  # as the cached embeddings come
    target = (torch.rand(3, 1, 64, 64) > 0.5).float()
    runs = []
    for decode in (net, lambda b: net.model.decode(b["embedding"], boxes=b["box"])):
        net.zero_grad(set_to_none=True)
        logits, iou = decode(batch)
        (torch.nn.functional.binary_cross_entropy_with_logits(logits, target) + iou.square().mean()).backward()
        runs.append((logits.detach(), iou.detach(), {n: p.grad for n, p in net.named_parameters() if p.requires_grad}))
    assert isinstance(net.__dict__["_box_decode"][1], BoxDecoderGraph)
    (logits, iou, grads), (ref_logits, ref_iou, ref_grads) = runs
    assert torch.allclose(logits, ref_logits, atol=1e-4) and torch.allclose(iou, ref_iou, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    assert all(g is not None for g in grads.values())  # every parameter takes part, as in decode (DDP)
    for name, ref in ref_grads.items():
        assert torch.allclose(grads[name], ref, atol=1e-5, rtol=1e-3), name
    assert sum(g.abs().sum() for g in grads.values()) > 0

    class Wrapped(torch.nn.Linear):  # e.g. an unmerged LoRA layer: reading its weight would miss its delta
        pass

    attn = net.model.mask_decoder.transformer.layers[0].cross_attn_token_to_image
    attn.k_proj = Wrapped(attn.k_proj.in_features, attn.k_proj.out_features)
    assert net._box_decoder() == net.model.decode  # wrapped after the first step: the plain decode again


def test_compiled_decoder_step_matches_eager_and_keeps_the_model_layout():
    import copy
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    torch.manual_seed(0)
    eager = SamNet(tiny_sam(), "decoder").train()
    compiled = SamNet(copy.deepcopy(eager.model), "decoder", compile=True).train()
    batch = {**_batch(), "mask": (torch.rand(3, 1, 64, 64) > 0.5).float()}
    outs = []
    for net in (eager, compiled):
        logits, iou = net(batch)
        (logits.sigmoid().mean() + iou.mean()).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        outs.append((logits.detach(), iou.detach(), grads))
    assert "_box_decode" in compiled.__dict__  # the compiled path ran
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-4) and torch.allclose(outs[0][1], outs[1][1], atol=1e-4)
    assert outs[0][2].keys() == outs[1][2].keys() and outs[0][2]  # the same parameters train
    assert all(torch.allclose(outs[0][2][k], outs[1][2][k], atol=1e-4, rtol=1e-3) for k in outs[0][2])
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # official keys, no _orig_mod
    clone = copy.deepcopy(compiled)  # checkpoints/DDP copy the net: the compiled function is remade
    assert "_box_decode" not in clone.__dict__ and clone.compile


def test_compile_works_under_an_ascii_locale():
    """torch's inductor reads its kernel templates with the locale's encoding; under LANG=C that
    fails unless medsamkit imports it under a UTF-8 character locale first."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    code = ("import locale; assert locale.getpreferredencoding(False) != 'UTF-8'\n"
            "from medsamkit.training.nets import _import_inductor\n"
            "_import_inductor()\n"
            "import torch._inductor.compile_fx\n"
            "assert locale.getpreferredencoding(False) != 'UTF-8'  # the locale is restored\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
