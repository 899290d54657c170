"""auto's bf16-or-fp32 choice: timed once per CPU, weights and thread count, then read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medsamkit.inference import precision_probe
from medsamkit.inference.openvino_encoder import cpu_capabilities, openvino_available
from medsamkit.models.loader import LoadedModel
from medsamkit.models.registry import ARCHITECTURES, get_spec

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino/onnx not installed")


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(ARCHITECTURES["tinyvit"]().eval(), get_spec("litemedsam"), Path("random"), torch.device("cpu"))


@needs_openvino
@pytest.mark.parametrize(("seconds", "pays"), [((0.2, 0.4), True), ((0.5, 0.4), False), ((0.38, 0.4), False)])
def test_bf16_is_chosen_when_it_takes_at_most_nine_tenths_of_fp32(loaded, tmp_path, monkeypatch, seconds, pays):
    calls = []

    def timed(loaded, threads, cache):
        calls.append((threads, cache))
        return dict(zip(("bf16", "fp32"), seconds))

    monkeypatch.setattr(precision_probe, "measure", timed)
    assert precision_probe.bf16_pays(loaded, 2, tmp_path) is pays
    assert precision_probe.bf16_pays(loaded, 2, tmp_path) is pays  # read back, not timed again
    assert calls == [(2, tmp_path)]
    saved = json.loads(precision_probe.probe_path(loaded, 2, tmp_path).read_text())
    assert (saved["bf16"], saved["fp32"], saved["threads"]) == (*seconds, 2)
    precision_probe.bf16_pays(loaded, 1, tmp_path)  # another thread count is timed on its own
    assert calls == [(2, tmp_path), (1, tmp_path)]


@needs_openvino
def test_a_damaged_record_is_timed_again(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(precision_probe, "measure", lambda *a: {"bf16": 0.1, "fp32": 0.3})
    path = precision_probe.probe_path(loaded, 2, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"bf16": ')
    assert precision_probe.bf16_pays(loaded, 2, tmp_path) is True
    assert json.loads(path.read_text())["fp32"] == 0.3


@needs_openvino
def test_the_real_timing_runs_both_engines(loaded, tmp_path):
    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no BF16 instructions: auto never considers bf16 here")
    seconds = precision_probe.measure(loaded, 2, tmp_path)
    assert set(seconds) == {"bf16", "fp32"} and all(0 < s < 60 for s in seconds.values())
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1  # one export, compiled in both precisions
