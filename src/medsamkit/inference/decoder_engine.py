"""Run the box prompt path of the decoder (prompt encoder + mask decoder) with OpenVINO or ONNX
Runtime: one call for all the boxes of an image (a dynamic number of boxes).

Only boxes without clicks or a mask prompt, single-mask output, go through the engine (the folder
runs and a box drawn in the web app); everything else uses the torch decoder. The graphs exported
are the two halves of :class:`~medsamkit.inference.box_decoder_graph.BoxDecoderGraph` (the decoder
rearranged so that extra boxes cost little): the image side runs once per embedding, the box side
once per call. The exports are cached per weights digest of the prompt encoder and mask decoder
under ``<cache>/onnx/`` (as the image encoder's), OpenVINO's compiled blobs under the CPU-tagged
``<cache>/openvino/<tag>/``.
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
from .box_decoder_graph import GRAPH_VERSION, BoxSide, ImageSide
from .onnx_encoder import _weights_key, onnx_available
from .engine_runtime import BOX_SIDE_INPUTS, SplitDecoder, cpu_tag, image_side_path, openvino_available

log = logging.getLogger(__name__)


def decoder_key(model: Sam) -> str:
    """A short digest of the prompt encoder's and mask decoder's weights."""
    return f"{_weights_key(model.prompt_encoder)[:8]}{_weights_key(model.mask_decoder)[:8]}"


def _export(module: torch.nn.Module, example: tuple, path: Path, **names) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), example, str(tmp), opset_version=17, dynamo=False, **names)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def exported_decoder(model: Sam, cache: Path, arch: str) -> Path:
    """The box side's ONNX file under ``cache`` (the image side's beside it, :func:`image_side_path`):
    exported once (atomically, the image side first), then reused."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{arch}-boxdecoder{GRAPH_VERSION}-{decoder_key(model)}.onnx"
    image_path = image_side_path(path)
    if path.exists() and image_path.exists():
        return path
    log.info("exporting the box decoder to ONNX once (cached at %s)", path)
    h, w = model.prompt_encoder.image_embedding_size
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, h, w)
    image_side = ImageSide(model)
    _export(image_side, (embedding,), image_path, input_names=["embedding"], output_names=list(BOX_SIDE_INPUTS[:-1]))
    with torch.no_grad():
        shared = image_side(embedding)
    boxes = torch.tensor([[10.0, 20.0, 100.0, 120.0], [5.0, 5.0, 50.0, 60.0]])
    _export(BoxSide(model), (*shared, boxes), path, input_names=list(BOX_SIDE_INPUTS),
            output_names=["low_res_logits", "iou"],
            dynamic_axes={"boxes": {0: "n"}, "low_res_logits": {0: "n"}, "iou": {0: "n"}})
    return path


class EngineDecoder:
    """Callable (embedding (1, C, h, w), boxes (N, 4) model-input) -> (logits (N, 1, 4h, 4w), iou (N, 1)).

    Args:
        model: the torch model (its prompt encoder and mask decoder are exported).
        cache: the medsamkit cache dir.
        arch: architecture name, part of the cached file name.
        backend: ``openvino`` or ``onnx``.
        precision: fp32 (bf16 changed thousands of mask pixels: not offered).
        threads: inference threads (default: torch's).
        spin: let ONNX Runtime's idle threads spin (fastest single calls, the interactive case);
            False for folder runs, where the encoder works on the same cores meanwhile.
    """

    def __init__(self, model: Sam, cache: Path, arch: str, backend: str = "openvino", precision: str = "fp32",
                 threads: int | None = None, spin: bool = True) -> None:
        threads = int(threads or torch.get_num_threads())
        if backend == "openvino" and not openvino_available():
            raise MedsamkitError("the openvino decoder needs openvino and onnx: pip install -e \".[engines]\"")
        if backend == "onnx" and not onnx_available():
            raise MedsamkitError("the onnx decoder needs onnxruntime and onnx: pip install -e \".[engines]\"")
        if backend not in ("openvino", "onnx"):
            raise MedsamkitError(f"no decoder engine {backend!r}: openvino or onnx")
        if precision != "fp32":
            raise MedsamkitError(f"the decoder engine runs fp32, not {precision}")
        path = exported_decoder(model, cache / "onnx", arch)
        self._run = SplitDecoder(path, backend, threads, spin, cache / "openvino" / cpu_tag())
        self.backend, self.precision, self.path, self.spin = backend, precision, path, spin
        log.info("box decoder: %s %s, %s", backend, precision, path.name)

    def __call__(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = np.ascontiguousarray(embedding.detach().cpu().numpy(), dtype=np.float32)
        b = np.ascontiguousarray(boxes.detach().cpu().numpy(), dtype=np.float32).reshape(-1, 4)
        logits, iou = self._run(e, b, key=embedding)
        return (torch.from_numpy(np.array(logits, np.float32, copy=True)),
                torch.from_numpy(np.array(iou, np.float32, copy=True)))
