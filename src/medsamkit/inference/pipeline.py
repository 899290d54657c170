"""Folder runs: read and encode the next images while the current one is decoded and written.

An encoder with ``submit`` and ``slots`` (:class:`~medsamkit.inference.openvino_encoder.OpenVinoEncoder`
in throughput mode: OpenVINO streams of one thread each) encodes up to ``slots`` images at once.
:func:`ahead` keeps it full: before handing image i to the caller it collects i's embedding and
starts image i + slots, so on 2 cores two images are encoded while the caller decodes and writes.
The embeddings are the encoder's own (the same compiled model), so the masks do not change.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MedsamkitError
from .prompts import BoxPrompt

if TYPE_CHECKING:
    from .predictor import ImageEmbedding


@dataclass
class Job:
    """One image of a folder run: its prompts and outputs, and once read ahead its RGB image and
    embedding (or the error that reading it raised)."""

    path: Path
    prompts: list[BoxPrompt]
    output: Path
    overlay: Path | None = None
    rgb: np.ndarray | None = None
    embedding: ImageEmbedding | None = None
    error: MedsamkitError | None = None
    pending: Callable[[], ImageEmbedding] | None = None


def encoder_slots(segmenter: object) -> int:
    """How many images the segmenter's encoder takes at once (1: no read-ahead)."""
    if segmenter is None or not getattr(segmenter, "prefetch", False):
        return 1
    predictor = getattr(segmenter, "predictor", None)
    if not hasattr(predictor, "embed_async"):
        return 1
    return int(getattr(getattr(predictor, "encoder", None), "slots", 1))


def _start(segmenter, job: Job) -> Job:
    try:
        job.rgb = segmenter.load_rgb(job.path, job.output, job.overlay)
        job.pending = segmenter.predictor.embed_async(job.rgb)
    except MedsamkitError as exc:
        job.error = exc
    return job


def _collect(job: Job) -> Job:
    if job.pending is not None:
        job.embedding, job.pending = job.pending(), None
    return job


def ahead(segmenter, jobs: Iterable[Job], depth: int) -> Iterator[Job]:
    """Yield ``jobs`` in order with their RGB image and embedding filled in (or their error),
    keeping up to ``depth`` images in the encoder."""
    queue: deque[Job] = deque()
    for job in jobs:
        if len(queue) == depth:
            head = _collect(queue.popleft())  # frees its encoder slot for the next image
            queue.append(_start(segmenter, job))
            yield head
        else:
            queue.append(_start(segmenter, job))
    while queue:
        yield _collect(queue.popleft())
