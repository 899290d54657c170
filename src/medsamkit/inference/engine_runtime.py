"""The inference engines' runtimes in numpy only: compile an ONNX file with OpenVINO or open it
with ONNX Runtime, and run it, with no torch import.

:class:`~medsamkit.inference.openvino_encoder.OpenVinoEncoder` and
:class:`~medsamkit.inference.decoder_engine.EngineDecoder` (torch in, torch out) run on these
(the box decoder's two exported halves through :class:`SplitDecoder`);
the torch-free fast path of the CLI (:mod:`medsamkit.inference.fast2d`) uses them directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: ``--precision`` -> OpenVINO's INFERENCE_PRECISION_HINT (int8 is a quantised model run in fp32)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_available() -> bool:
    """True when openvino and onnx (to export the encoder) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "onnx"))


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


@lru_cache(maxsize=1)
def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's optimisation capabilities of this CPU (e.g. FP32, BF16, INT8)."""
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_tag() -> str:
    """A short digest of the OpenVINO version, the CPU's name and its capabilities."""
    import openvino as ov

    core = ov.Core()
    text = "|".join([ov.get_version(), str(core.get_property("CPU", "FULL_DEVICE_NAME")), *cpu_capabilities()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_threads() -> int:
    """The thread count torch would use by default: ``OMP_NUM_THREADS``, else the CPUs this
    process may run on."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "")), 1)
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OpenVinoRunner:
    """An OpenVINO compiled model on the CPU with a pool of requests: numpy in, numpy out.

    The compiled blob is cached by OpenVINO under ``blobs`` (a CPU-tagged folder), so a second
    process with the same file and settings skips the compilation.

    Args:
        path: the ONNX (or IR) file.
        blobs: OpenVINO's cache folder (``<cache>/openvino/<cpu tag>``).
        precision: fp32, bf16 or int8 (:data:`PRECISION_HINTS`).
        threads: inference threads.
        mode: ``latency`` (one request on all threads) or ``throughput`` (OpenVINO's streams and as
            many requests: several inputs in flight with :meth:`submit`).
    """

    def __init__(self, path: Path, blobs: Path, precision: str, threads: int, mode: str = "latency") -> None:
        if mode not in ("latency", "throughput"):
            raise ValueError(f"mode must be latency or throughput, got {mode!r}")
        import openvino as ov

        blobs.mkdir(parents=True, exist_ok=True)
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(blobs)})
        config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": mode.upper(),
                  "INFERENCE_NUM_THREADS": int(threads)}
        self.compiled = core.compile_model(str(path), "CPU", config)
        n = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if mode == "throughput" else 1
        self.outputs = len(self.compiled.outputs)
        self._idle = [self.compiled.create_infer_request() for _ in range(max(n, 1))]
        self.request = self._idle[0]
        self._busy = 0

    @property
    def slots(self) -> int:
        """How many inputs :meth:`submit` can have in flight."""
        return len(self._idle) + self._busy

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.submit(*inputs)()

    def submit(self, *inputs: np.ndarray) -> Callable[[], list[np.ndarray]]:
        """Start a run in the background; the returned function waits for and returns its outputs
        (float32 copies; later calls return them again). At most :attr:`slots` may be pending."""
        if not self._idle:
            raise RuntimeError(f"all {self.slots} OpenVINO requests are busy: collect a result first")
        request = self._idle.pop()
        self._busy += 1
        request.start_async({i: np.ascontiguousarray(x, dtype=np.float32) for i, x in enumerate(inputs)})
        done: list[list[np.ndarray]] = []

        def result() -> list[np.ndarray]:
            if not done:
                try:
                    request.wait()
                    done.append([np.array(request.get_output_tensor(i).data, np.float32, copy=True)
                                 for i in range(self.outputs)])
                finally:
                    self._busy -= 1
                    self._idle.append(request)
            return done[0]

        return result


def ort_session(path: Path, threads: int, spin: bool = True, quiet: bool = False):
    """An ONNX Runtime CPU session of ``path``. ``spin=False``: idle threads sleep instead of
    spinning (they leave the cores to an encoder working meanwhile); ``quiet``: errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if quiet:
        options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


#: the box side's inputs, in order (the image side's outputs, then the boxes)
BOX_SIDE_INPUTS = ("keys", "kp", "vp", "shared_q", "boxes")


def image_side_path(path: Path) -> Path:
    """The image side's ONNX file next to the box side's ``path``."""
    return path.with_name(f"{path.stem}.image.onnx")


class SplitDecoder:
    """The exported box decoder on an engine, numpy in and out: ``(embedding, boxes) -> [logits, iou]``.

    The image side runs once per embedding: its outputs are kept for the two embeddings used last (a
    bf16 one and its fp32 re-check), recognised by identity (``key``, default the embedding array:
    an embedding is not changed in place). Many boxes go through the box side 4 at a time: per box,
    10 in one call took 19 ms, 4 at a time 16 ms (ONNX Runtime, 2 threads; larger calls leave the
    caches)."""

    #: boxes per box-side call
    CHUNK = 4

    def __init__(self, path: Path, backend: str, threads: int, spin: bool = True, blobs: Path | None = None) -> None:
        image_path = image_side_path(path)
        if backend == "onnx":
            # the image side's threads never spin: spinning after its run, they took the cores from
            # the box side's next two calls (30-38 ms instead of 17, measured)
            image, boxes = ort_session(image_path, threads, spin=False), ort_session(path, threads, spin)
            self._image = lambda e: image.run(None, {"embedding": e})
            self._boxes = lambda shared, b: boxes.run(None, dict(zip(BOX_SIDE_INPUTS, (*shared, b))))
        elif backend == "openvino":
            if blobs is None:
                raise ValueError("the openvino decoder needs its blobs folder")
            image_run = OpenVinoRunner(image_path, blobs, "fp32", threads)
            boxes_run = OpenVinoRunner(path, blobs, "fp32", threads)
            self._image = image_run
            self._boxes = lambda shared, b: boxes_run(*shared, b)
        else:
            raise ValueError(f"no decoder engine {backend!r}: openvino or onnx")
        self._shared: list[tuple[object, list[np.ndarray]]] = []

    def shared(self, embedding: np.ndarray, key: object = None) -> list[np.ndarray]:
        """The image side's outputs for ``embedding`` (run now unless kept)."""
        key = embedding if key is None else key
        for i, (kept, outputs) in enumerate(self._shared):
            if kept is key:
                self._shared.insert(0, self._shared.pop(i))  # the latest used first
                return outputs
        outputs = list(self._image(embedding))
        self._shared = [(key, outputs), *self._shared[:1]]
        return outputs

    def __call__(self, embedding: np.ndarray, boxes: np.ndarray, key: object = None) -> list[np.ndarray]:
        shared = self.shared(embedding, key)
        if len(boxes) <= self.CHUNK:
            return list(self._boxes(shared, boxes))
        parts = [self._boxes(shared, boxes[i:i + self.CHUNK]) for i in range(0, len(boxes), self.CHUNK)]
        return [np.concatenate(outputs) for outputs in zip(*parts)]
