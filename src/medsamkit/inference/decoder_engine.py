"""Run the box prompt path of the decoder (prompt encoder + mask decoder) with OpenVINO or ONNX
Runtime: one call for all the boxes of an image (a dynamic number of boxes).

Only boxes without clicks or a mask prompt, single-mask output, go through the engine (the folder
runs and a box drawn in the web app); everything else uses the torch decoder. The graph exported is
:class:`~medsamkit.inference.box_decoder_graph.BoxDecoderGraph` (the decoder rearranged so that
extra boxes cost little). The export is cached per weights digest of the prompt encoder and mask
decoder under ``<cache>/onnx/`` (as the image encoder's), OpenVINO's compiled blob under the
CPU-tagged ``<cache>/openvino/<tag>/``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import MedsamkitError
from ..models.sam import Sam
from .box_decoder_graph import GRAPH_VERSION, BoxDecoderGraph
from .onnx_encoder import _weights_key, onnx_available
from .engine_runtime import OpenVinoRunner, cpu_tag, openvino_available, ort_session

log = logging.getLogger(__name__)


def decoder_key(model: Sam) -> str:
    """A short digest of the prompt encoder's and mask decoder's weights."""
    return f"{_weights_key(model.prompt_encoder)[:8]}{_weights_key(model.mask_decoder)[:8]}"


def exported_decoder(model: Sam, cache: Path, arch: str) -> Path:
    """The ONNX file of the box decoder under ``cache``: exported once (atomically), then reused."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{arch}-boxdecoder{GRAPH_VERSION}-{decoder_key(model)}.onnx"
    if path.exists():
        return path
    log.info("exporting the box decoder to ONNX once (cached at %s)", path)
    module = BoxDecoderGraph(model).eval()
    h, w = model.prompt_encoder.image_embedding_size
    dim = model.prompt_encoder.embed_dim
    example = (torch.zeros(1, dim, h, w), torch.tensor([[10.0, 20.0, 100.0, 120.0], [5.0, 5.0, 50.0, 60.0]]))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, str(tmp), input_names=["embedding", "boxes"],
                              output_names=["low_res_logits", "iou"], opset_version=17, dynamo=False,
                              dynamic_axes={"boxes": {0: "n"}, "low_res_logits": {0: "n"}, "iou": {0: "n"}})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class EngineDecoder:
    """Callable (embedding (1, C, h, w), boxes (N, 4) model-input) -> (logits (N, 1, 4h, 4w), iou (N, 1)).

    Args:
        model: the torch model (its prompt encoder and mask decoder are exported).
        cache: the medsamkit cache dir.
        arch: architecture name, part of the cached file name.
        backend: ``openvino`` or ``onnx``.
        precision: fp32 or bf16 (OpenVINO on a CPU with BF16).
        threads: inference threads (default: torch's).
        spin: let ONNX Runtime's idle threads spin (fastest single calls, the interactive case);
            False for folder runs, where the encoder works on the same cores meanwhile.
    """

    def __init__(self, model: Sam, cache: Path, arch: str, backend: str = "openvino", precision: str = "fp32",
                 threads: int | None = None, spin: bool = True) -> None:
        threads = int(threads or torch.get_num_threads())
        if backend == "openvino":
            if not openvino_available():
                raise MedsamkitError("the openvino decoder needs openvino and onnx: pip install -e \".[engines]\"")
            path = exported_decoder(model, cache / "onnx", arch)
            self._run = OpenVinoRunner(path, cache / "openvino" / cpu_tag(), precision, threads)
        elif backend == "onnx":
            if not onnx_available():
                raise MedsamkitError("the onnx decoder needs onnxruntime and onnx: pip install -e \".[engines]\"")
            if precision != "fp32":
                raise MedsamkitError(f"the onnx decoder runs fp32, not {precision}")
            path = exported_decoder(model, cache / "onnx", arch)
            session = ort_session(path, threads, spin)
            self._run = lambda e, b: session.run(None, {"embedding": e, "boxes": b})
        else:
            raise MedsamkitError(f"no decoder engine {backend!r}: openvino or onnx")
        self.backend, self.precision, self.path, self.spin = backend, precision, path, spin
        log.info("box decoder: %s %s, %s", backend, precision, path.name)

    def __call__(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = np.ascontiguousarray(embedding.detach().cpu().numpy(), dtype=np.float32)
        b = np.ascontiguousarray(boxes.detach().cpu().numpy(), dtype=np.float32).reshape(-1, 4)
        logits, iou = self._run(e, b)
        return (torch.from_numpy(np.array(logits, np.float32, copy=True)),
                torch.from_numpy(np.array(iou, np.float32, copy=True)))
