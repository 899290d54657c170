"""Is OpenVINO bf16 faster than fp32 for this image encoder on this CPU? Measured once, then cached.

A CPU that reports BF16 does not always run bf16 faster. On the development host (Xeon with AMX)
LiteMedSAM's encoder takes 174 ms in bf16 and 418 ms in fp32 (2 threads). With AMX turned off
(``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``: AVX-512 BF16 instructions only) bf16 takes 496 ms and
fp32 395 ms. On an AMD EPYC with AVX-512 BF16 and no AMX, bf16 was 2x faster again
(docs/benchmarks.md). So ``--backend auto`` asks the hardware: the first time it would pick bf16
for an encoder on a CPU, it builds both engines, times them on one input and keeps the result in
``<cache>/openvino/<cpu tag>/``. The CPU tag covers the CPU's name, its capabilities and the
OpenVINO version, so another CPU (or the same one with an instruction-set limit) measures again.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import torch

from ..io.writers import atomic_output
from ..models.loader import LoadedModel
from .engine_runtime import cpu_tag
from .onnx_encoder import _weights_key

log = logging.getLogger(__name__)

#: bf16 is picked when it takes at most this fraction of fp32's time
FASTER = 0.9
RUNS = 3


def probe_path(loaded: LoadedModel, threads: int, cache: Path) -> Path:
    return cache / "openvino" / cpu_tag() / f"bf16-speed-{_weights_key(loaded.model.image_encoder)}-{threads}t.json"


def measure(loaded: LoadedModel, threads: int, cache: Path) -> dict[str, float]:
    """Median seconds per image of the OpenVINO encoder in bf16 and in fp32 (after a warm-up)."""
    from .engines import EngineChoice, build_encoder

    size = loaded.model.image_size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    seconds = {}
    for precision in ("bf16", "fp32"):
        encoder = build_encoder(EngineChoice("openvino", precision), loaded, threads, cache)
        encoder(x)
        times = []
        for _ in range(RUNS):
            start = time.perf_counter()
            encoder(x)
            times.append(time.perf_counter() - start)
        seconds[precision] = statistics.median(times)
    return seconds


def bf16_pays(loaded: LoadedModel, threads: int | None = None, cache: Path | None = None) -> bool:
    """True when bf16 runs this encoder in at most :data:`FASTER` of fp32's time on this CPU
    (measured on the first call for this CPU, weights and thread count; read back later)."""
    from ..models.zoo import cache_dir

    threads = int(threads or torch.get_num_threads())
    path = probe_path(loaded, threads, cache_dir() if cache is None else cache)
    try:
        seconds = json.loads(path.read_text(encoding="utf-8"))
        bf16, fp32 = float(seconds["bf16"]), float(seconds["fp32"])
    except (OSError, ValueError, KeyError, TypeError):
        log.info("timing the image encoder in bf16 and fp32 on this CPU (once; kept in %s)", path.parent)
        measured = measure(loaded, threads, path.parents[2])
        bf16, fp32 = measured["bf16"], measured["fp32"]
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({"bf16": bf16, "fp32": fp32, "threads": threads}) + "\n", encoding="utf-8")
    pays = bf16 <= FASTER * fp32
    log.info("image encoder on this CPU: bf16 %.0f ms, fp32 %.0f ms per image: %s", 1000 * bf16, 1000 * fp32,
             "bf16" if pays else "fp32")
    return pays
