"""The runtimes of the image encoder (``--backend``) and their precisions (``--precision``).

``auto`` (the default) picks, on the CPU, the fastest installed engine that keeps the masks of
the torch fp32 path (mean Dice >= 0.99 against the official pipeline, none below 0.95; measured
by ``benchmarks/bench_engines.py`` on Kvasir-SEG, see ``docs/benchmarks.md``):

1. OpenVINO, bf16 where the CPU has BF16 instructions, the encoder's weights are ones whose
   bf16 masks were measured to agree (:data:`BF16_AGREES`: the official LiteMedSAM encoder, also
   inside decoder-only fine-tuned checkpoints) and bf16 runs faster than fp32 on this CPU (timed
   once per CPU: :mod:`~medsamkit.inference.precision_probe`), else fp32. Masks too close to call
   on a bf16 embedding are decoded from fp32 (:mod:`~medsamkit.inference.margin_check`);
2. ONNX Runtime fp32;
3. torch fp32 (always there: the engines are the optional ``engines`` extra).

The SAM2 family (SAM2, SAM2.1, MedSAM2) runs the same engines on its ``SAM2Base.encode`` (the
Hiera encoder and the two high-resolution projections, three outputs:
:mod:`~medsamkit.inference.encoder_graph`); ``auto`` picks them in fp32 (OpenVINO, then ONNX
Runtime), whose masks are torch fp32's (``benchmarks/bench_sam2_engines.py``: Dice >= 0.999997
on 20 Kvasir-SEG images with the stand-in weights, SAM2.1-tiny and MedSAM2; docs/benchmarks.md);
bf16 (Dice down to 0.85) only when asked for, int8 not at all. Its mask decoder and memory stay
on torch.

On a GPU ``auto`` is torch. An engine that fails to build under ``auto`` is logged and the next
one is tried; an engine asked for by name fails with a clear error instead.

With an engine for the image encoder (SAM family), box prompts are decoded on an engine too
(:func:`build_decoder`: ONNX Runtime fp32, else OpenVINO fp32; their masks equal the torch
decoder's), all the boxes of an image in one call; clicks and mask prompts stay on torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..choices import BACKENDS, PRECISIONS
from ..errors import MedsamkitError
from ..models.loader import LoadedModel
from .encoder_graph import encoder_graph
from .onnx_encoder import EngineOutput, OnnxEncoder, _weights_key, onnx_available
from .openvino_encoder import OpenVinoEncoder, cpu_capabilities, openvino_available

log = logging.getLogger(__name__)

#: weights digests (:func:`~medsamkit.inference.onnx_encoder._weights_key` of the image encoder) whose
#: OpenVINO bf16 masks meet the agreement bar (benchmarks/bench_engines.py): lite_medsam.pth
BF16_AGREES: frozenset[str] = frozenset({"0d3394df3aa48ec4"})


@dataclass(frozen=True)
class Engine:
    """One runtime: its name, the precisions it runs and whether it is installed."""

    name: str
    precisions: tuple[str, ...]
    available: Callable[[], bool]
    install: str  # what to install when it is missing


ENGINES: dict[str, Engine] = {
    "torch": Engine("torch", ("fp32", "bf16"), lambda: True, ""),
    "onnx": Engine("onnx", ("fp32",), onnx_available, 'pip install -e ".[engines]" (onnxruntime, onnx)'),
    "openvino": Engine("openvino", ("fp32", "bf16", "int8"), openvino_available,
                       'pip install -e ".[engines]" (openvino, onnx)'),
}


@dataclass(frozen=True)
class EngineChoice:
    """The engine a predictor's image encoder runs on."""

    backend: str
    precision: str

    def __str__(self) -> str:
        return f"{self.backend} {self.precision}"


def _has_bf16() -> bool:
    try:
        return "BF16" in cpu_capabilities()
    except Exception:  # noqa: BLE001 - no OpenVINO, or it cannot query the CPU: no bf16 claim
        return False


def _bf16_agrees(loaded: LoadedModel) -> bool:
    """True when this CPU runs bf16 and the encoder's weights were measured to keep the masks in bf16
    (none of the SAM2 family's: it gets bf16 only when asked for)."""
    return loaded.spec.family != "sam2" and _has_bf16() and _weights_key(loaded.model.image_encoder) in BF16_AGREES


def _bf16_chosen(loaded: LoadedModel) -> bool:
    """bf16 for OpenVINO when its masks agree (:func:`_bf16_agrees`) and it is faster than fp32 on
    this CPU (:func:`~medsamkit.inference.precision_probe.bf16_pays`, timed once per CPU)."""
    if not _bf16_agrees(loaded):
        return False
    from .precision_probe import bf16_pays

    try:
        return bf16_pays(loaded)
    except Exception as exc:  # noqa: BLE001 - an engine that cannot be timed is not picked in bf16
        log.warning("could not time the image encoder in bf16 (%s); using fp32", exc)
        return False


def auto_candidates(loaded: LoadedModel) -> list[EngineChoice]:
    """The engines ``auto`` tries on the CPU, fastest first, installed ones only."""
    out = []
    if ENGINES["openvino"].available():
        out.append(EngineChoice("openvino", "bf16" if _bf16_chosen(loaded) else "fp32"))
    if ENGINES["onnx"].available():
        out.append(EngineChoice("onnx", "fp32"))
    out.append(EngineChoice("torch", "fp32"))
    return out


def choose_engines(backend: str, precision: str | None, loaded: LoadedModel) -> list[EngineChoice]:
    """The engine(s) to try, in order, for ``--backend``/``--precision`` and a loaded model."""
    if backend not in BACKENDS:
        raise MedsamkitError(f"unknown backend {backend!r}: {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise MedsamkitError(f"unknown precision {precision!r}: {', '.join(PRECISIONS)}")
    family, device = loaded.spec.family, loaded.device
    if family == "sam2" and precision == "int8":
        raise MedsamkitError(f"--precision int8 is not available for {loaded.spec.name}; use fp32 or bf16")
    if backend == "auto":
        if device.type != "cpu":
            return [EngineChoice("torch", precision or "fp32")]
        if precision is None:
            return auto_candidates(loaded)
        found = [EngineChoice(name, precision) for name, e in ENGINES.items()
                 if precision in e.precisions and e.available()]
        order = {"openvino": 0, "onnx": 1, "torch": 2}
        return sorted(found, key=lambda c: order[c.backend])
    engine = ENGINES[backend]
    if backend != "torch":
        if device.type != "cpu":
            raise MedsamkitError(f"--backend {backend} runs on the CPU; drop it or use --device cpu "
                                 f"(device is {device})")
        if not engine.available():
            raise MedsamkitError(f"--backend {backend} is not installed: {engine.install}")
    if precision is None:
        precision = "bf16" if backend == "openvino" and _bf16_chosen(loaded) else "fp32"
    if precision not in engine.precisions:
        raise MedsamkitError(f"--precision {precision} is not offered by --backend {backend} "
                             f"({', '.join(engine.precisions)})")
    return [EngineChoice(backend, precision)]


class TorchAutocastEncoder:
    """The model's own encoder under CPU/GPU bf16 autocast; returns float32 (SAM2: each of the
    three feature maps)."""

    def __init__(self, encode: Callable[[torch.Tensor], EngineOutput], device: torch.device) -> None:
        self.encode, self.device_type = encode, device.type

    def __call__(self, images: torch.Tensor) -> EngineOutput:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.encode(images)
        return tuple(t.float() for t in out) if isinstance(out, tuple) else out.float()


def build_encoder(choice: EngineChoice, loaded: LoadedModel, threads: int | None = None,
                  cache: Path | None = None, calibration: Sequence[np.ndarray] = (),
                  mode: str = "latency") -> Callable | None:
    """The image encoder callable for ``choice`` (None: the model's own torch fp32 encoder).

    ``mode`` (OpenVINO only): ``latency`` for one image at a time, ``throughput`` for folders
    (several images in flight through the encoder's ``submit``; the same embeddings)."""
    from ..models.zoo import cache_dir

    cache = cache_dir() if cache is None else cache
    model, arch = loaded.model, loaded.spec.architecture
    if choice.backend == "torch":
        return TorchAutocastEncoder(model.encode, loaded.device) if choice.precision == "bf16" else None
    graph = encoder_graph(model, loaded.spec.family)
    if choice.backend == "onnx":
        return OnnxEncoder(graph.module, model.image_size, cache / "onnx", arch, threads, graph.outputs)
    if loaded.spec.family == "sam2":
        mode = "latency"  # the SAM2 predictor and memory propagation encode one image at a time
    return OpenVinoEncoder(graph.module, model.image_size, cache, arch, choice.precision, threads,
                           calibration, mode, graph.outputs)


def exact_encoder(choice: EngineChoice, loaded: LoadedModel, threads: int | None = None,
                  cache: Path | None = None) -> Callable | None:
    """The fp32 encoder that goes with a bf16 one (SAM family), built on its first call: masks too
    close to call on the bf16 embedding are decoded from it
    (:class:`~medsamkit.inference.margin_check.MarginCheck`). None for an fp32 or int8 choice."""
    if choice.precision != "bf16" or loaded.spec.family == "sam2":
        return None
    if choice.backend == "torch":
        return loaded.model.encode
    built: list[Callable] = []

    def encode(images: torch.Tensor) -> EngineOutput:
        if not built:
            log.info("building the fp32 image encoder (%s) for masks too close to call in bf16", choice.backend)
            built.append(build_encoder(EngineChoice(choice.backend, "fp32"), loaded, threads, cache))
        return built[0](images)

    return encode


def build_first(choices: list[EngineChoice], loaded: LoadedModel, threads: int | None = None,
                cache: Path | None = None, calibration: Sequence[np.ndarray] = (),
                mode: str = "latency") -> tuple[EngineChoice, Callable | None]:
    """Build the first engine of ``choices`` that works; with several (``auto``) a failure is
    logged and the next is tried, with one it is raised."""
    for i, choice in enumerate(choices):
        try:
            return choice, build_encoder(choice, loaded, threads, cache, calibration, mode)
        except Exception as exc:
            if i == len(choices) - 1:
                raise
            log.warning("image encoder engine %s failed (%s); trying %s", choice, exc, choices[i + 1])
    raise MedsamkitError("no engine to run the image encoder")  # only for an empty list


#: decoder engines, fastest first (measured, docs/benchmarks.md); fp32: the torch decoder's masks
DECODER_ORDER: tuple[str, ...] = ("onnx", "openvino")


def build_decoder(choice: EngineChoice, loaded: LoadedModel, threads: int | None = None,
                  cache: Path | None = None, spin: bool = True) -> Callable | None:
    """The box decoder engine that goes with an image encoder engine (None: the torch decoder).

    Only with an ONNX Runtime or OpenVINO encoder; a decoder engine that is missing or fails to
    build is logged and the torch decoder is used. ``spin=False`` (folder runs): ONNX Runtime's
    idle threads sleep, leaving the cores to the encoder (measured in docs/benchmarks.md)."""
    from ..models.zoo import cache_dir
    from .decoder_engine import EngineDecoder

    from .box_decoder_graph import supports

    if choice.backend not in ("onnx", "openvino"):
        return None
    if not supports(loaded.model):
        log.info("box decoder: torch (the mask decoder is not the plain SAM one the engine graph rearranges)")
        return None
    cache = cache_dir() if cache is None else cache
    for name in DECODER_ORDER:
        if not ENGINES[name].available():
            continue
        try:
            return EngineDecoder(loaded.model, cache, loaded.spec.architecture, name, "fp32", threads, spin)
        except Exception as exc:  # noqa: BLE001 - any failure: the torch decoder still works
            log.warning("box decoder engine %s failed (%s); trying the next", name, exc)
    log.info("box decoder: torch (no decoder engine available)")
    return None
