"""Run the image encoder with OpenVINO on the CPU, in fp32 or bf16 (int8 through NNCF).

The model compiled is the cached ONNX export of :func:`~medsamkit.inference.onnx_encoder.exported_encoder`
(one per weights digest). OpenVINO's own model cache keeps the compiled blob under
``<cache dir>/openvino/<cpu tag>/``: the tag is a digest of the OpenVINO version and the CPU's name
and instruction-set capabilities, so a blob compiled for one CPU is never loaded on another, and
a second process with the same weights skips the compilation (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import MedsamkitError
from .encoder_graph import EMBEDDING_OUTPUTS
from .engine_runtime import PRECISION_HINTS, OpenVinoRunner, cpu_capabilities, cpu_tag, openvino_available
from .onnx_encoder import EngineOutput, _weights_key, as_output, exported_encoder

log = logging.getLogger(__name__)


def _quantized(onnx_path: Path, out: Path, calibration: Sequence[np.ndarray]) -> Path:
    """NNCF post-training int8 quantisation of the ONNX encoder on ``calibration`` inputs, saved as IR."""
    if importlib.util.find_spec("nncf") is None:
        raise MedsamkitError("--precision int8 needs nncf: pip install nncf (or the engines extra)")
    if not calibration:
        raise MedsamkitError("--precision int8 needs calibration images")
    import nncf
    import openvino as ov

    if not out.exists():
        log.info("quantising the image encoder to int8 on %d calibration images (once; cached at %s)",
                 len(calibration), out)
        model = ov.Core().read_model(str(onnx_path))
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), subset_size=len(calibration),
                                  model_type=nncf.ModelType.TRANSFORMER)
        tmp = out.with_name(f".{out.stem}.tmp.xml")
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))
        tmp.replace(out)
    return out


class OpenVinoEncoder:
    """Callable (1, 3, S, S) tensor -> embedding tensor (for a module with several ``outputs``, a
    tuple of tensors in their order) backed by an OpenVINO compiled model.

    Args:
        encoder: the torch image encoder (exported to ONNX once per weights digest), or any
            module of one image input (:mod:`~medsamkit.inference.encoder_graph`).
        input_size: S, the square input side.
        cache: the medsamkit cache dir (``onnx/`` and ``openvino/`` are made under it).
        arch: architecture name, part of the cached file names.
        precision: fp32, bf16 (needs a CPU with BF16) or int8 (needs ``calibration``).
        threads: inference threads (default: torch's).
        calibration: (1, 3, S, S) float32 model inputs for int8; their digest keys the cached IR.
        mode: ``latency`` (one request on all threads: one image at a time, the interactive case)
            or ``throughput`` (OpenVINO's streams, one thread each, and as many requests: several
            images encoded at once with :meth:`submit`, the folder case). Same embeddings.
        outputs: the names of the module's outputs (one: the embedding).
    """

    def __init__(self, encoder: nn.Module, input_size: int, cache: Path, arch: str, precision: str = "fp32",
                 threads: int | None = None, calibration: Sequence[np.ndarray] = (),
                 mode: str = "latency", outputs: tuple[str, ...] = EMBEDDING_OUTPUTS) -> None:
        if mode not in ("latency", "throughput"):
            raise ValueError(f"mode must be latency or throughput, got {mode!r}")
        if not openvino_available():
            raise MedsamkitError("the openvino backend needs openvino and onnx: pip install -e \".[engines]\"")
        if precision not in PRECISION_HINTS:
            raise MedsamkitError(f"--precision {precision}: openvino runs fp32, bf16 or int8")
        if precision == "bf16" and "BF16" not in cpu_capabilities():
            raise MedsamkitError("--precision bf16: this CPU has no BF16 instructions; use fp32")
        path = exported_encoder(encoder, input_size, cache / "onnx", arch, outputs)
        if precision == "int8":
            calib = hashlib.sha256(b"".join(np.ascontiguousarray(c, np.float32).tobytes() for c in calibration))
            path = _quantized(path, cache / "openvino" / f"{arch}-{_weights_key(encoder)}-int8-"
                                          f"{calib.hexdigest()[:12]}.xml", calibration)
        blobs = cache / "openvino" / cpu_tag()
        self.runner = OpenVinoRunner(path, blobs, precision, int(threads or torch.get_num_threads()), mode)
        self.compiled, self.request = self.runner.compiled, self.runner.request
        self.path, self.precision, self.cache, self.mode = path, precision, blobs, mode
        log.info("image encoder: OpenVINO %s %s (%d requests), %s (compiled blobs in %s)", precision, mode,
                 self.runner.slots, path.name, blobs)

    @property
    def slots(self) -> int:
        """How many images :meth:`submit` can have in flight (OpenVINO's optimal number of requests)."""
        return self.runner.slots

    def __call__(self, images: torch.Tensor) -> EngineOutput:
        return self.submit(images)()

    def submit(self, images: torch.Tensor) -> Callable[[], EngineOutput]:
        """Start encoding ``images`` in the background; the returned function waits for and
        returns the embedding (later calls return it again). At most :attr:`slots` may be pending."""
        pending = self.runner.submit(images.detach().cpu().numpy())
        return lambda: as_output(pending())
