"""Folder runs that encode ahead (:mod:`medsamkit.inference.pipeline`): the order of the work, errors
of one image, and an OpenVINO encoder in throughput mode writing the very masks of latency mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medsamkit.errors import InputError
from medsamkit.inference.batch import plan_folder, run_plan
from medsamkit.inference.factory import make_predictor
from medsamkit.inference.openvino_encoder import OpenVinoEncoder, openvino_available
from medsamkit.inference.pipeline import Job, ahead, encoder_slots
from medsamkit.inference.prompts import BoxPrompt
from medsamkit.inference.segment2d import Segmenter2D
from medsamkit.models.loader import LoadedModel
from medsamkit.models.registry import ARCHITECTURES, get_spec

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino/onnx not installed")


class Recorder:
    """A segmenter whose encoder takes ``slots`` images: it logs when each image is read, started and
    collected; reading ``bad.png`` fails."""

    prefetch = True

    def __init__(self, slots: int) -> None:
        self.log: list[str] = []
        self.in_flight = 0
        self.most = 0
        recorder = self

        class Encoder:
            pass

        class Predictor:
            encoder = Encoder()

            def embed_async(self, rgb):
                recorder.in_flight += 1
                recorder.most = max(recorder.most, recorder.in_flight)
                name = str(rgb)
                recorder.log.append(f"start {name}")

                def result():
                    recorder.in_flight -= 1
                    recorder.log.append(f"collect {name}")
                    return f"embedding of {name}"

                return result

        Encoder.slots = slots
        self.predictor = Predictor()

    def load_rgb(self, path, output, overlay):
        if path.name == "bad.png":
            raise InputError(path, "cannot be read")
        return path.stem


def test_ahead_keeps_the_encoder_full_in_order_and_isolates_errors():
    seg = Recorder(2)
    names = ["a.png", "b.png", "bad.png", "c.png", "d.png"]
    jobs = [Job(Path(n), [], Path("out") / n) for n in names]
    assert encoder_slots(seg) == 2
    got = []
    for job in ahead(seg, jobs, 2):
        seg.log.append(f"decode {job.path.stem}")
        got.append((job.path.name, job.embedding, job.error is not None))
    assert got == [("a.png", "embedding of a", False), ("b.png", "embedding of b", False), ("bad.png", None, True),
                   ("c.png", "embedding of c", False), ("d.png", "embedding of d", False)]
    assert seg.most == 2
    # a is collected and c... started before a is decoded: two images encode while one is decoded
    assert seg.log[:5] == ["start a", "start b", "collect a", "decode a", "collect b"]
    assert seg.log.index("start c") < seg.log.index("decode b")


def test_no_read_ahead_without_an_encoder_that_takes_several():
    assert encoder_slots(None) == 1
    assert encoder_slots(Recorder(1)) == 1
    seg = Recorder(2)
    seg.prefetch = False  # e.g. the automatic mode's segmenter
    assert encoder_slots(seg) == 1


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(ARCHITECTURES["tinyvit"]().eval(), get_spec("litemedsam"), Path("random"), torch.device("cpu"))


@needs_openvino
def test_throughput_mode_takes_two_images_and_gives_latency_mode_embeddings(loaded, tmp_path):
    enc = OpenVinoEncoder(loaded.model.image_encoder, 256, tmp_path, "tinyvit", "fp32", threads=2, mode="throughput")
    ref = OpenVinoEncoder(loaded.model.image_encoder, 256, tmp_path, "tinyvit", "fp32", threads=2)
    assert enc.slots >= 2 and ref.slots == 1
    xs = [torch.rand(1, 3, 256, 256) for _ in range(enc.slots)]
    pending = [enc.submit(x) for x in xs]
    with pytest.raises(RuntimeError, match="busy"):
        enc.submit(xs[0])
    for x, p in zip(xs, pending):
        assert torch.allclose(p(), ref(x), atol=1e-5)
    assert enc.slots == len(pending)  # every request is back


@needs_openvino
def test_folder_run_in_throughput_mode_writes_the_latency_mode_masks(loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        picture = rng.integers(0, 60, (90, 120, 3), dtype=np.uint8)
        picture[20 + i:70, 30:90 - i] += 150
        Image.fromarray(picture).save(folder / f"im{i}.png")
    (folder / "im2.png").write_bytes(b"not a png")
    prompts = [BoxPrompt((25.0, 15.0, 95.0, 75.0), image=f"im{i}.png") for i in range(5)]
    outputs = {}
    for mode in ("latency", "throughput"):
        predictor = make_predictor(loaded, backend="openvino", precision="fp32", threads=2, mode=mode)
        seg = Segmenter2D(predictor)
        if predictor.box_decoder is not None:  # a folder run's decoder threads sleep when idle
            assert predictor.box_decoder.spin == (mode == "latency")
        assert encoder_slots(seg) == (1 if mode == "latency" else predictor.encoder.slots) and \
            (mode == "latency" or predictor.encoder.slots >= 2)
        out = tmp_path / mode
        summary = run_plan(seg, plan_folder(folder, prompts, out), out, progress=False)
        assert len(summary.done) == 4 and list(summary.failed) == [str(folder / "im2.png")]
        outputs[mode] = {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}
    assert len(outputs["latency"]) == 4
    assert any(0 < (m > 0).mean() < 1 for m in outputs["latency"].values())  # real masks, not blank ones
    for name, mask in outputs["latency"].items():
        assert np.array_equal(outputs["throughput"][name], mask), name


@needs_openvino
def test_volume_propagation_in_throughput_mode_reads_slices_ahead_and_gives_the_latency_mode_labels(
        loaded, tmp_path, monkeypatch):
    from medsamkit.io.geometry import Geometry
    from medsamkit.inference.prompts3d import VolumePrompt
    from medsamkit.inference.volume3d import VolumeOptions, segment_volume

    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 60, (7, 80, 96)).astype(np.float32)
    volume[1:6, 20:60, 25:70] += 150
    prompts = [VolumePrompt.from_box3d((25, 20, 1, 69, 59, 5), label=1),
               VolumePrompt.from_box3d((40, 30, 2, 60, 50, 4), label=2)]
    labels, submitted = {}, {}
    for mode in ("latency", "throughput"):
        predictor = make_predictor(loaded, backend="openvino", precision="fp32", threads=2, mode=mode)
        calls = []
        original = predictor.embed_async

        def counting(image, original=original, calls=calls):
            calls.append(image.shape)
            return original(image)

        predictor.embed_async = counting
        result = segment_volume(volume, Geometry.identity(), prompts, predictor, VolumeOptions(modality="mr"))
        labels[mode], submitted[mode] = result.labels, len(calls)
        assert result.encoder_calls == 5  # slices 1..5, once each, either way
    assert submitted == {"latency": 0, "throughput": 5}  # throughput: every slice went through the queue
    assert (labels["latency"] > 0).any()
    np.testing.assert_array_equal(labels["throughput"], labels["latency"])
