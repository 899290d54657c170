"""Slice propagation: segment a volume from one box per object with a 2D model.

LiteMedSAM's 3D strategy (../shared/docs/design.md, "3D inference strategies"): segment the key
slice with the object's 2D box, then walk up to ``z1`` and down to ``z0``; on each next slice the
box is the bounding box of the previous slice's mask grown by 3 px; an empty previous mask falls
back to the key box. The growth is in the model's 256 px frame, after resizing the mask as the
image is (:meth:`~medsamkit.preprocessing.geometry.ModelGeometry.grown_box`). Unlike the
reference script, which re-encodes every slice for every object, :class:`BoxPropagator` encodes
each slice **once** and decodes all objects present on it in one batched call, while streaming
through the volume (and, with an encoder that takes several slices at once, encoding the next
planned slices while one is decoded: :class:`SliceEncoder`):

1. an upward sweep visits, in increasing z, every slice from an object's key slice to its ``z1``;
2. a downward sweep visits, in decreasing z, every slice from an object's key slice - 1 to its
   ``z0``, starting each object from its key-slice mask.

Only slices that both sweeps need (between the lowest and highest key slices) keep their
embedding from the first sweep to the second, in memory up to
:attr:`PropagationConfig.max_cached_embeddings` and in a temporary folder beyond, so memory does
not grow with the volume. The reference also skips the end slices ``z0`` and ``z1``
(``range(z_mid, z_max)``, ``range(z_mid - 1, z_min, -1)``); here the range is inclusive.

The interface follows SAM2's video predictor (``init_state`` then ``propagate``, a generator of
per-slice results) so that a memory-based propagator can replace this one: see
:class:`Propagator`. The state is typed (:class:`PropagationState`, :class:`ObjectState`).
"""

from __future__ import annotations

import logging
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..preprocessing.intensity import to_rgb_uint8
from ..preprocessing.geometry import Frame
from .predictor import ImageEmbedding, Predictor
from .prompts3d import VolumePrompt
from .topology import keeps_topology, retries

log = logging.getLogger(__name__)


class SliceSource(Protocol):
    """Slices of a volume as the model takes them: ``rgb(z)`` is an H x W x 3 uint8 image."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def rgb(self, z: int) -> np.ndarray: ...


@dataclass(frozen=True)
class VolumeSlices:
    """A ``[z, y, x]`` uint8 volume (intensity scheme already applied) served slice by slice."""

    volume: np.ndarray

    def __post_init__(self) -> None:
        if self.volume.ndim != 3 or self.volume.dtype != np.uint8:
            raise ValueError(f"expected a [z, y, x] uint8 volume, got {self.volume.shape} {self.volume.dtype}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.volume.shape)  # type: ignore[return-value]

    def rgb(self, z: int) -> np.ndarray:
        return to_rgb_uint8(self.volume[z])


@dataclass(frozen=True)
class PropagationConfig:
    """How boxes move from slice to slice.

    Attributes:
        grow_px: the next slice's box is the previous mask's bounding box grown by this many
            pixels on every side, in the model-input frame (LiteMedSAM: 3 px of its 256 px
            frame, as the reference script; about 6 px of a 512 px slice), clipped to that frame.
            None (the default): the model's own (:func:`growth`; 3 unless its registry entry
            says otherwise: ``litemedsam-clicks`` 1).
        clip_to_box: clip the propagated boxes of an object given as a 3D box
            (:attr:`VolumePrompt.bounded`) to that box's x and y extent, which bounds the object on
            every slice. The official LiteMedSAM script does not (``False`` reproduces it); on
            the BraTS 2021 volume it lifts the Dice from 0.482 to 0.543 (docs/benchmarks.md).
        keep_topology: decode a slice again when an object's mask turned from solid into a ring or
            back from the slice it was propagated from (:mod:`medsamkit.inference.topology`). None
            (the default): the model's (:func:`topology_kept`; on for ``litemedsam-clicks``, off
            for every other model and for the official LiteMedSAM logic).
        stop_when_empty: stop an object's walk in one direction at the first slice where its
            mask is empty (default: go on to the end of the z range, re-using the key box, as the
            reference does).
        max_cached_embeddings: embeddings kept in memory between the two sweeps; more are
            written to a temporary folder (each is 256 x 64 x 64 float32 = 4 MiB).
    """

    grow_px: int | None = None
    clip_to_box: bool = True
    keep_topology: bool | None = None
    stop_when_empty: bool = False
    max_cached_embeddings: int = 32

    def __post_init__(self) -> None:
        if self.grow_px is not None and self.grow_px < 0:
            raise ValueError(f"grow_px must be >= 0, got {self.grow_px}")
        if self.max_cached_embeddings < 0:
            raise ValueError(f"max_cached_embeddings must be >= 0, got {self.max_cached_embeddings}")


#: LiteMedSAM's reference growth of a propagated box (model-input pixels)
DEFAULT_GROW_PX = 3


def growth(config: PropagationConfig, predictor: object) -> int:
    """The box growth a propagation uses: ``config.grow_px`` when set, else the predictor's model's
    (``Predictor.grow_px``, from :attr:`medsamkit.models.registry.ModelSpec.grow_px`)."""
    if config.grow_px is not None:
        return config.grow_px
    return int(getattr(predictor, "grow_px", DEFAULT_GROW_PX))


def topology_kept(config: PropagationConfig, predictor: object) -> bool:
    """Whether a propagation keeps topology: ``config.keep_topology`` when set, else the
    predictor's model's (``Predictor.keep_topology``, from
    :attr:`medsamkit.models.registry.ModelSpec.keep_topology`)."""
    if config.keep_topology is not None:
        return config.keep_topology
    return bool(getattr(predictor, "keep_topology", False))


def clip_to_bounds(box: Sequence[float], bounds: Sequence[float]) -> tuple[float, float, float, float] | None:
    """``box`` (x0, y0, x1, y1) intersected with ``bounds``; None when nothing of it is left."""
    x0, y0 = max(box[0], bounds[0]), max(box[1], bounds[1])
    x1, y1 = min(box[2], bounds[2]), min(box[3], bounds[3])
    if x1 < x0 or y1 < y0:
        return None
    return float(x0), float(y0), float(x1), float(y1)


@dataclass
class ObjectState:
    """Where one object's propagation stands.

    Attributes:
        obj_id: position of the object's prompt (0-based).
        key_box: ``(x0, y0, x1, y1)`` on the key slice.
        key_slice, z_range: from the prompt (``z_range`` inclusive).
        box: the box used on the last slice segmented.
        last_mask: the mask of the last slice segmented (the next box comes from it).
        key_mask: the key slice's mask (the downward sweep starts from it).
        up_done, down_done: the walk in that direction has finished.
        slices: slices segmented so far; empty_slices: how many of them gave an empty mask.
        bounded: the key box bounds the object on every slice (a 3D box).
    """

    obj_id: int
    key_box: tuple[float, float, float, float]
    key_slice: int
    z_range: tuple[int, int]
    bounded: bool = False
    box: np.ndarray | None = None
    last_mask: np.ndarray | None = None
    key_mask: np.ndarray | None = None
    up_done: bool = False
    down_done: bool = False
    slices: int = 0
    empty_slices: int = 0

    def up_active(self, z: int) -> bool:
        return not self.up_done and self.key_slice <= z <= self.z_range[1]

    def down_active(self, z: int) -> bool:
        return not self.down_done and self.z_range[0] <= z < self.key_slice


@dataclass
class PropagationState:
    """The state of one volume's propagation (made by :meth:`Propagator.init_state`)."""

    slices: SliceSource
    objects: list[ObjectState]
    encoder_calls: int = 0
    decoder_calls: int = 0
    spilled: int = 0

    def plan(self) -> tuple[list[int], list[int]]:
        """(upward slices in increasing z, downward slices in decreasing z) still to visit."""
        up = sorted({z for o in self.objects for z in range(o.key_slice, o.z_range[1] + 1)})
        down = sorted({z for o in self.objects for z in range(o.z_range[0], o.key_slice)}, reverse=True)
        return up, down


@dataclass(frozen=True)
class SliceResult:
    """The masks of the objects segmented on one slice.

    Attributes:
        z: slice index.
        obj_ids: the objects segmented (may be empty: a planned slice no object needed).
        masks: ``(N, H, W)`` bool; logits: ``(N, H, W)`` float32 (resolve overlaps with them).
        final: no later result of this propagation touches slice ``z``.
    """

    z: int
    obj_ids: tuple[int, ...]
    masks: np.ndarray
    logits: np.ndarray
    final: bool


class Propagator(Protocol):
    """Anything that propagates per-object prompts through a volume, SAM2-style."""

    def init_state(self, slices: SliceSource, prompts: Sequence[VolumePrompt]) -> PropagationState: ...

    def propagate(self, state: PropagationState) -> Iterator[SliceResult]: ...


class EmbeddingCache:
    """Slice embeddings kept between the sweeps: in memory up to ``max_in_memory``, then on disk."""

    def __init__(self, max_in_memory: int) -> None:
        self.max_in_memory = max_in_memory
        self._memory: dict[int, ImageEmbedding] = {}
        self._disk: dict[int, tuple[Path, ImageEmbedding]] = {}
        self._folder: tempfile.TemporaryDirectory | None = None
        self.spilled = 0

    def __len__(self) -> int:
        return len(self._memory) + len(self._disk)

    def put(self, z: int, embedding: ImageEmbedding) -> None:
        if len(self._memory) < self.max_in_memory:
            self._memory[z] = embedding
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="medsamkit-embeddings-")
        path = Path(self._folder.name) / f"{z}.pt"
        torch.save(embedding.features.cpu(), path)
        # keep the frame and device; the features are replaced by an empty tensor placeholder
        self._disk[z] = (path, ImageEmbedding(embedding.features.new_empty(0), embedding.frame))
        self.spilled += 1

    def pop(self, z: int) -> ImageEmbedding | None:
        if z in self._memory:
            return self._memory.pop(z)
        if z in self._disk:
            path, stub = self._disk.pop(z)
            features = torch.load(path, map_location=stub.features.device, weights_only=True)
            path.unlink()
            return ImageEmbedding(features, stub.frame)
        return None

    def close(self) -> None:
        self._memory.clear()
        self._disk.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


class SliceEncoder:
    """Encodes a propagation's slices, ahead of time where the encoder can.

    The slices a propagation encodes are known before it starts (its plan: every slice of the
    upward sweep, then the downward sweep's slices that the first one did not keep), whatever
    the masks turn out to be. With an encoder that takes several images at once (``slots``,
    :meth:`Predictor.embed_async`: OpenVINO in throughput mode) up to ``slots`` of the next planned
    slices are in the encoder while the current slice is decoded; otherwise each slice is encoded
    when asked for. Planned slices that are passed over (no object needed them after all, with
    ``stop_when_empty``) are collected and dropped; a slice outside the plan is encoded at once.
    The embeddings are the encoder's own either way, so the masks do not change.
    """

    def __init__(self, predictor: Predictor, slices: SliceSource, order: Sequence[int]) -> None:
        self.predictor, self.slices = predictor, slices
        self.order = deque(order)
        encoder = getattr(predictor, "encoder", None)
        slots = int(getattr(encoder, "slots", 1)) if hasattr(encoder, "submit") else 1
        self.depth = slots if slots > 1 and hasattr(predictor, "embed_async") else 0
        self.pending: deque[tuple[int, Callable[[], ImageEmbedding]]] = deque()
        self.calls = 0

    def _fill(self) -> None:
        while len(self.pending) < self.depth and self.order:
            z = self.order.popleft()
            self.pending.append((z, self.predictor.embed_async(self.slices.rgb(z))))
            self.calls += 1

    def get(self, z: int) -> ImageEmbedding:
        """The embedding of slice ``z``."""
        if self.depth and (any(q == z for q, _ in self.pending) or z in self.order):
            # planned slices before z that nobody needed: collect them to free their slots
            while self.pending and self.pending[0][0] != z:
                self.pending.popleft()[1]()
            if not self.pending:
                while self.order[0] != z:
                    self.order.popleft()
            self._fill()
            embedding = self.pending.popleft()[1]()
            self._fill()
            return embedding
        for _, result in self.pending:  # a slice outside the plan: free the encoder's slots
            result()
        self.calls += 1
        return self.predictor.embed(self.slices.rgb(z))

    def close(self) -> None:
        """Wait for what is still in the encoder (its requests go back to the pool)."""
        while self.pending:
            self.pending.popleft()[1]()


@dataclass
class BoxPropagator:
    """LiteMedSAM-style propagation with one encoder pass per slice (see the module docstring).

    Args:
        predictor: encodes slices (:meth:`Predictor.embed`) and decodes boxes in batches.
        config: box growth, stopping rule and embedding cache size.
    """

    predictor: Predictor
    config: PropagationConfig = field(default_factory=PropagationConfig)

    def init_state(self, slices: SliceSource, prompts: Sequence[VolumePrompt]) -> PropagationState:
        objects = [ObjectState(i, tuple(float(v) for v in p.box), int(p.key_slice),  # type: ignore[arg-type]
                               (int(p.z_range[0]), int(p.z_range[1])), bool(getattr(p, "bounded", False)))
                   for i, p in enumerate(prompts)]
        return PropagationState(slices, objects)

    def propagate(self, state: PropagationState) -> Iterator[SliceResult]:
        """Yield one :class:`SliceResult` per planned slice: the upward sweep, then the downward."""
        up, down = state.plan()
        wanted_later = set(down)
        cache = EmbeddingCache(self.config.max_cached_embeddings)
        planned_up = set(up)
        encoder = SliceEncoder(self.predictor, state.slices, up + [z for z in down if z not in planned_up])
        try:
            for z in up:
                active = [o for o in state.objects if o.up_active(z)]
                if not active:
                    yield self._nothing(state, z, final=z not in wanted_later)
                    continue
                embedding = self._encode(state, encoder, z)
                if z in wanted_later:
                    cache.put(z, embedding)
                result = self._decode(state, z, active, embedding, final=z not in wanted_later)
                for obj, mask in zip(active, result.masks):
                    if z == obj.key_slice:
                        obj.key_mask = mask
                    if z == obj.z_range[1] or (self.config.stop_when_empty and not mask.any()):
                        obj.up_done = True
                yield result
            for obj in state.objects:
                obj.last_mask = obj.key_mask
                if obj.key_slice == obj.z_range[0] or (
                        self.config.stop_when_empty and (obj.key_mask is None or not obj.key_mask.any())):
                    obj.down_done = True
            for z in down:
                active = [o for o in state.objects if o.down_active(z)]
                embedding = cache.pop(z)
                if not active:
                    yield self._nothing(state, z, final=True)
                    continue
                embedding = embedding if embedding is not None else self._encode(state, encoder, z)
                result = self._decode(state, z, active, embedding, final=True)
                for obj, mask in zip(active, result.masks):
                    if z == obj.z_range[0] or (self.config.stop_when_empty and not mask.any()):
                        obj.down_done = True
                yield result
        finally:
            state.spilled += cache.spilled
            cache.close()
            encoder.close()

    # ------------------------------------------------------------------------ steps
    @staticmethod
    def _encode(state: PropagationState, encoder: SliceEncoder, z: int) -> ImageEmbedding:
        before = encoder.calls
        embedding = encoder.get(z)
        state.encoder_calls += encoder.calls - before
        return embedding

    def next_box(self, obj: ObjectState, frame: Frame) -> np.ndarray:
        """The box for the object's next slice: the last mask's bounds in the model-input frame
        grown by ``grow_px`` model pixels (:meth:`ModelGeometry.grown_box`), or the key box on
        the key slice and after an empty mask; clipped to the key box where that bounds the object
        (:func:`clip_to_bounds`)."""
        if obj.last_mask is not None:
            bounds = self.predictor.geometry.grown_box(obj.last_mask, frame, growth(self.config, self.predictor))
            if bounds is not None and obj.bounded and self.config.clip_to_box:
                bounds = clip_to_bounds(bounds, obj.key_box)
            if bounds is not None:
                return np.asarray(bounds, dtype=np.float64)
        return np.asarray(obj.key_box, dtype=np.float64)

    def _decode(self, state: PropagationState, z: int, active: list[ObjectState],
                embedding: ImageEmbedding, final: bool) -> SliceResult:
        boxes = np.stack([self.next_box(o, embedding.frame) for o in active])
        self.predictor.set_embedding(embedding)
        prediction = self.predictor.predict(boxes=boxes)
        state.decoder_calls += 1
        masks, logits = prediction.masks[:, 0], prediction.logits[:, 0]
        if topology_kept(self.config, self.predictor):
            state.decoder_calls += self._keep_topology(active, embedding.frame, boxes, masks, logits)
        for obj, box, mask in zip(active, boxes, masks):
            obj.box, obj.last_mask = box, mask
            obj.slices += 1
            obj.empty_slices += int(not mask.any())
        return SliceResult(z, tuple(o.obj_id for o in active), masks, logits, final)

    def _keep_topology(self, active: list[ObjectState], frame: Frame, boxes: np.ndarray, masks: np.ndarray,
                       logits: np.ndarray) -> int:
        """Decode again, in place, the objects whose mask changed topology from their last slice's
        (:mod:`~medsamkit.inference.topology`); returns the decoder calls made (0 or 1)."""
        todo = retries([o.last_mask for o in active], masks, boxes, frame, self.predictor.geometry,
                       growth(self.config, self.predictor))
        if not todo:
            return 0
        again = self.predictor.predict(boxes=np.array(list(todo.values()), dtype=np.float64))
        for row, (k, box) in enumerate(todo.items()):
            if keeps_topology(active[k].last_mask, again.masks[row, 0]):
                boxes[k], masks[k], logits[k] = box, again.masks[row, 0], again.logits[row, 0]
        return 1

    @staticmethod
    def _nothing(state: PropagationState, z: int, final: bool) -> SliceResult:
        _, h, w = state.slices.shape
        return SliceResult(z, (), np.zeros((0, h, w), bool), np.zeros((0, h, w), np.float32), final)
