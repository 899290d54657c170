"""Keep the memory a training step frees inside the process (glibc on Linux).

A training step allocates and frees the same large tensors at every step. glibc's ``malloc`` serves
every block over 32 MB (and, by its dynamic threshold, smaller ones too) with a fresh ``mmap`` and
returns it at ``free``, so the kernel zero-fills every page again at the next step. The LiteMedSAM
decoder step on cached embeddings (batch 8, bf16) took about 130,000 minor page faults per step,
0.25 CPU seconds of 1.0 (docs/benchmarks.md, "Training speed"). With ``mmap`` off for
``malloc`` and a high trim threshold, freed blocks stay in the heap and are reused: no faults, and
the step is about a quarter shorter on the 2-core VM. PyTorch's own CPU performance guide gets the
same effect by preloading jemalloc or tcmalloc; this needs no other library.

The settings are process-wide, so :class:`KeepFreedMemory` (a Lightning callback that
``build_trainer`` adds unless ``trainer.keep_freed_memory`` is false) sets them for the fit and
restores glibc's defaults afterwards, handing the kept memory back with ``malloc_trim``. It runs
in every training process (DDP workers too). Elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

import lightning as L

log = logging.getLogger(__name__)

# mallopt parameters and glibc's defaults (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: freed memory at the top of the heap beyond this is still handed back while kept
KEPT_TRIM_THRESHOLD = 1 << 30


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse (no ``mmap`` per allocation); False where this is
    not glibc or glibc refused."""
    libc = _glibc()
    if libc is None:
        return False
    kept = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD) == 1
    if not kept:
        release_freed_memory()
    return kept


def release_freed_memory() -> None:
    """glibc's default limits again, and the heap's free memory handed back to the system."""
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    libc.malloc_trim(0)


class KeepFreedMemory(L.Callback):
    """:func:`keep_freed_memory` from ``setup`` to ``teardown`` of a fit (in each process)."""

    def __init__(self) -> None:
        self.kept = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self.kept:
            self.kept = keep_freed_memory()
            log.debug("freed memory kept for reuse: %s", self.kept)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.kept:
            release_freed_memory()
            self.kept = False
