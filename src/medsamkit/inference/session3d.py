"""Interactive 3D sessions: boxes and clicks on a volume, refined slice by slice.

:class:`Session3D` holds a volume (intensity scheme applied) and per object a label id, a 2D box
on a key slice with a z range (or no box: a point-only object), its ordered clicks
``(x, y, z, 1|0)`` and its current masks, slice by slice. Operations, undo and redo work as in
:class:`~medsamkit.inference.session.Session2D`.

How a volume is segmented and refined is a strategy (:class:`VolumeRefiner`):

- :class:`SliceRefiner` (LiteMedSAM, any SAM v1 model): the object starts on its key slice from
  its box and is propagated outward as LiteMedSAM's 3D script does (each next slice's box is the
  previous mask's box grown; after an empty mask the key box again). A click on slice ``z``
  re-decodes slice ``z`` with the box used there, the clicks on ``z`` and (``mask_prompt``) the
  previous logits of ``z``; the change then propagates outward from ``z`` (away from the key
  slice) only as far as the masks change: a slice whose box and clicks are the same as before is
  not decoded again, and the walk stops at the first slice whose new mask equals its old one.
  Slice embeddings are cached (up to ``max_cached_embeddings``, least recently used first out).
- :class:`PropagatorRefiner`: any :class:`~medsamkit.inference.propagate.Propagator` (a SAM2
  memory propagator): each update re-runs it on the object's prompt, box and clicks included
  (the clicks become points on their slices).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from ..errors import InputError
from .clicks import Click, check_clicks_3d, prompt_record
from .predictor import ImageEmbedding, Predictor
from .prompts3d import VolumePrompt, check_prompt
from .propagate import PropagationConfig, Propagator, SliceSource, VolumeSlices
from .refine import DecodeRequest, MaskResult, decode_requests, label_map_from_logits
from .session import History, RefineConfig, _next_label, as_click

log = logging.getLogger(__name__)

#: Called before each slice a propagation visits with ``(slices done, slices planned, slice)``;
#: it may raise to stop the operation, which then leaves the session as it was.
Monitor = Callable[[int, int, int], None]


@dataclass(frozen=True)
class SliceState:
    """One object's result on one slice and the prompt it came from.

    Attributes:
        box: the box decoded on this slice (original pixels), or None.
        clicks: the object's clicks on this slice that were decoded.
        result: mask, logits (and low-resolution logits when the strategy has them).
    """

    box: tuple[float, float, float, float] | None
    clicks: tuple[Click, ...]
    result: MaskResult


@dataclass(frozen=True)
class VolumeObject:
    """One object of a 3D session.

    Attributes:
        obj_id: the session's id of the object.
        label: its value in the label volume.
        box: ``(x0, y0, x1, y1)`` on the key slice, or None (point-only object).
        key_slice: the slice the object starts from.
        z_range: ``(z0, z1)`` inclusive; a foreground click outside it extends it.
        clicks: the clicks so far, in order.
        slices: slice index -> :class:`SliceState` (never modified: updates make a new mapping).
        given_range: the z range the object was given (``z_range`` may have grown since).
    """

    obj_id: int
    label: int
    box: tuple[float, float, float, float] | None
    key_slice: int
    z_range: tuple[int, int]
    clicks: tuple[Click, ...]
    slices: Mapping[int, SliceState] = field(default_factory=dict)
    given_range: tuple[int, int] | None = None

    def prompt(self) -> VolumePrompt:
        """The object as a :class:`VolumePrompt` (box, key slice, range, label, clicks)."""
        return VolumePrompt(self.box, self.key_slice, self.z_range, self.label, self.clicks)

    def given_prompt(self) -> VolumePrompt:
        """The prompt as the object was given (its first z range) with all its clicks: replaying it
        gives this object again."""
        return VolumePrompt(self.box, self.key_slice, self.given_range or self.z_range, self.label, self.clicks)

    def clicks_on(self, z: int) -> tuple[Click, ...]:
        return tuple(c for c in self.clicks if c.z == z)

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """The object's own (z, y, x) mask, before overlaps with other objects are resolved."""
        out = np.zeros(tuple(shape), bool)
        for z, s in self.slices.items():
            out[z] = s.result.mask
        return out


class VolumeRefiner(Protocol):
    """A 3D strategy: segment new objects, apply one click to each of several objects, change
    objects' z ranges; ``monitor`` (or None) follows the slices of each operation."""

    monitor: Monitor | None

    def segment(self, objects: Sequence[VolumeObject]) -> list[VolumeObject]: ...

    def refine(self, updates: Sequence[tuple[VolumeObject, Click]]) -> list[VolumeObject]: ...

    def resize(self, updates: Sequence[tuple[VolumeObject, tuple[int, int]]]) -> list[VolumeObject]: ...


class EmbeddingLRU:
    """Slice embeddings, computed on first use and kept up to ``limit`` (least recently used out)."""

    def __init__(self, predictor: Predictor, slices: SliceSource, limit: int = 64) -> None:
        self.predictor, self.slices, self.limit = predictor, slices, limit
        self._items: OrderedDict[int, ImageEmbedding] = OrderedDict()
        self.encoder_calls = 0

    def __call__(self, z: int) -> ImageEmbedding:
        if z in self._items:
            self._items.move_to_end(z)
            return self._items[z]
        embedding = self.predictor.embed(self.slices.rgb(z))
        self.encoder_calls += 1
        if self.limit > 0:
            self._items[z] = embedding
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return embedding

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Walk:
    """One object's propagation in one direction (+1 up, -1 down), slice by slice."""

    obj: VolumeObject
    step: int
    next_z: int
    end: int
    previous: MaskResult | None
    forced: bool
    slices: dict[int, SliceState]

    def active(self, z: int) -> bool:
        return self.next_z == z and (z - self.end) * self.step <= 0


class SliceRefiner:
    """LiteMedSAM-style 3D segmentation and incremental click refinement (module docstring).

    Args:
        predictor: the 2D model (encodes slices, decodes prompts).
        slices: the volume's slices as RGB uint8.
        propagation: box growth and the stop-when-empty rule (as :class:`BoxPropagator`).
        config: the mask-prompt rules.
        max_cached_embeddings: slice embeddings kept in memory (4 MiB each).
    """

    def __init__(self, predictor: Predictor, slices: SliceSource, propagation: PropagationConfig | None = None,
                 config: RefineConfig | None = None, max_cached_embeddings: int = 64) -> None:
        self.predictor = predictor
        self.propagation = propagation or PropagationConfig()
        self.config = config or RefineConfig()
        self.embeddings = EmbeddingLRU(predictor, slices, max_cached_embeddings)
        self.decoder_calls = 0
        self.monitor: Monitor | None = None
        self._box_step = False

    # ------------------------------------------------------------------------ strategy
    def segment(self, objects: Sequence[VolumeObject]) -> list[VolumeObject]:
        """Segment new objects from their box (a point-only object: from its first foreground
        click, on its key slice), propagated over their z range; then replay their other clicks
        in order, as if they were clicked."""
        starts, replays = [], []
        for obj in objects:
            first = () if obj.box is not None else (next(c for c in obj.clicks if c.positive),)
            start = replace(obj, clicks=first, slices={})
            starts.append((start, obj.key_slice, DecodeRequest(obj.box, first), None))
            rest = list(obj.clicks)
            if first:
                rest.remove(first[0])
            replays.append(rest)
        self._box_step = True
        try:
            walked = self._run(starts, forced=True)
        finally:
            self._box_step = False
        out = []
        for (start, *_), slices, rest in zip(starts, walked, replays):
            applied = replace(start, slices=slices)
            for click in rest:
                applied = self.refine([(applied, click)])[0]
            out.append(applied)
        return out

    def refine(self, updates: Sequence[tuple[VolumeObject, Click]]) -> list[VolumeObject]:
        """Apply one click to each object; all their walks run together, slice by slice."""
        starts, passthrough = [], {}
        for i, (obj, click) in enumerate(updates):
            z0, z1 = obj.z_range
            obj = replace(obj, clicks=obj.clicks + (click,))
            if not z0 <= click.z <= z1:
                if not click.positive:  # the object is not there: nothing to remove
                    passthrough[i] = obj
                    continue
                # extend the range to the clicked slice: propagate from the old edge to it (or,
                # where the object ended before the edge, start again from the click)
                edge = z1 if click.z > z1 else z0
                obj = replace(obj, z_range=(min(z0, click.z), max(z1, click.z)))
                if edge in obj.slices:
                    starts.append((obj, edge, None, (1 if click.z > z1 else -1,)))
                else:
                    starts.append((obj, click.z, self._request(obj, click.z, own_previous=True), None))
                continue
            starts.append((obj, click.z, self._request(obj, click.z, own_previous=True), None))
        walked = self._run(starts, forced=False)
        out, k = [], 0
        for i in range(len(updates)):
            if i in passthrough:
                out.append(passthrough[i])
                continue
            obj = starts[k][0]
            out.append(replace(obj, slices=walked[k]))
            k += 1
        return out

    def resize(self, updates: Sequence[tuple[VolumeObject, tuple[int, int]]]) -> list[VolumeObject]:
        """Give objects new z ranges: slices and clicks outside go; a range that grows is propagated
        outward from the old ends as the box step would (so the object is the one its box, the new
        range and its clicks give from the start)."""
        resized, starts, owners = [], [], []
        for k, (obj, (z0, z1)) in enumerate(updates):
            old0, old1 = obj.z_range
            obj = replace(obj, z_range=(z0, z1), given_range=(z0, z1),
                          slices={z: s for z, s in obj.slices.items() if z0 <= z <= z1},
                          clicks=tuple(c for c in obj.clicks if z0 <= c.z <= z1))
            resized.append(obj)
            # a walk that ended before the old end (stop_when_empty, point-only) would end there again
            for grows, edge, step in ((z1 > old1, old1, 1), (z0 < old0, old0, -1)):
                if grows and edge in obj.slices:
                    starts.append((obj, edge, None, (step,)))
                    owners.append(k)
        self._box_step = True  # the new slices are the box step's, as if the range had been given first
        try:
            walked = self._run(starts, forced=True)
        finally:
            self._box_step = False
        for k, slices in zip(owners, walked):
            resized[k] = replace(resized[k], slices={**resized[k].slices, **slices})
        return resized

    # ------------------------------------------------------------------------ the walks
    def _request(self, obj: VolumeObject, z: int, own_previous: bool, box=None,
                 neighbour: MaskResult | None = None) -> DecodeRequest:
        """The prompt of slice ``z``: its stored box (or ``box``), its clicks, and the mask prompt
        (the neighbour's logits with ``carry_mask``, else its own previous ones with ``mask_prompt``)."""
        stored = obj.slices.get(z)
        if box is None and stored is not None:
            box = stored.box
        if box is None and z == obj.key_slice:
            box = obj.box
        mask = None
        if neighbour is not None and self.config.carry_mask and neighbour.low_res_logits is not None:
            mask = neighbour.low_res_logits
        elif own_previous and self.config.mask_prompt and stored is not None:
            mask = stored.result.low_res_logits
        clicks = obj.clicks_on(z)
        if box is None and not clicks:
            return None  # type: ignore[return-value]
        return DecodeRequest(box, clicks, mask)

    def next_box(self, previous: MaskResult | None, obj: VolumeObject, embedding: ImageEmbedding
                 ) -> tuple[float, float, float, float] | None:
        """The box for the next slice: the previous mask's bounds grown by ``grow_px`` model-input
        pixels (:meth:`~medsamkit.preprocessing.geometry.ModelGeometry.grown_box`); after an
        empty mask the key box (None for a point-only object: its walk ends)."""
        if previous is not None:
            bounds = self.predictor.geometry.grown_box(previous.mask, embedding.frame, self.propagation.grow_px)
            if bounds is not None:
                return tuple(float(v) for v in bounds)  # type: ignore[return-value]
        return obj.box

    def _run(self, starts: Sequence[tuple[VolumeObject, int, DecodeRequest | None, tuple[int, ...] | None]],
             forced: bool) -> list[dict[int, SliceState]]:
        """Decode each start slice (request None: the start slice is kept as it is), then walk
        outward from it (away from the key slice, or in the directions given), all objects
        together: the upward sweep, then the downward sweep."""
        slices = [dict(start[0].slices) for start in starts]
        # the start slices, grouped by slice
        by_z: dict[int, list[int]] = {}
        for i, (_, z, request, _) in enumerate(starts):
            if request is not None:
                by_z.setdefault(z, []).append(i)
        for z, members in sorted(by_z.items()):
            results = self._decode(z, [starts[i][2] for i in members])  # type: ignore[misc]
            for i, result in zip(members, results):
                slices[i][z] = SliceState(starts[i][2].box, starts[i][2].clicks, result)
        walks: list[tuple[int, _Walk]] = []
        for i, (obj, z, request, directions) in enumerate(starts):
            z0, z1 = obj.z_range
            start = slices[i].get(z)
            previous = start.result if start is not None else None
            forced_here = forced or request is None
            if directions is None:
                directions = tuple(d for d, ok in ((1, z >= obj.key_slice), (-1, z <= obj.key_slice)) if ok)
            if 1 in directions and z < z1:
                walks.append((i, _Walk(obj, +1, z + 1, z1, previous, forced_here, slices[i])))
            if -1 in directions and z > z0:
                walks.append((i, _Walk(obj, -1, z - 1, z0, previous, forced_here, slices[i])))
        sweeps = []
        for step in (+1, -1):
            todo = [w for _, w in walks if w.step == step]
            if not todo:
                continue
            zs = [w.next_z for w in todo] + [w.end for w in todo]
            order = range(min(zs), max(zs) + 1) if step > 0 else range(max(zs), min(zs) - 1, -1)
            sweeps.append((todo, order))
        planned, done = sum(len(order) for _, order in sweeps), 0
        for todo, order in sweeps:
            for z in order:
                active = [w for w in todo if w.active(z)]
                if active:
                    if self.monitor is not None:
                        self.monitor(done, planned, z)
                    self._advance(z, active)
                done += 1
        return slices

    def _advance(self, z: int, walks: list[_Walk]) -> None:
        """One slice of the sweep for the walks that reach it; a walk whose slice is unchanged stops."""
        embedding = self.embeddings(z)
        go, requests = [], []
        for w in walks:
            box = self.next_box(w.previous, w.obj, embedding)
            if box is None or (self.propagation.stop_when_empty and w.previous is not None
                               and not w.previous.mask.any()):
                w.next_z = w.end + w.step  # ends the walk
                continue
            # the box step propagates as LiteMedSAM does; only a click's walk carries the shape
            request = self._request(w.obj, z, own_previous=False, box=box,
                                    neighbour=None if self._box_step else w.previous)
            stored = w.slices.get(z)
            if (not w.forced and stored is not None and request.mask_input is None
                    and stored.box == request.box and stored.clicks == request.clicks):
                w.next_z = w.end + w.step  # same prompt as before: this slice and the rest stay
                continue
            go.append(w)
            requests.append(request)
        if not go:
            return
        results = self._decode(z, requests, embedding)
        for w, request, result in zip(go, requests, results):
            stored = w.slices.get(z)
            w.slices[z] = SliceState(request.box, request.clicks, result)
            unchanged = stored is not None and np.array_equal(stored.result.mask, result.mask)
            w.previous = result
            w.next_z = w.end + w.step if (unchanged and not w.forced) else z + w.step

    def _decode(self, z: int, requests: Sequence[DecodeRequest], embedding: ImageEmbedding | None = None
                ) -> list[MaskResult]:
        embedding = embedding if embedding is not None else self.embeddings(z)
        self.decoder_calls += len({r.signature() for r in requests})
        return decode_requests(self.predictor, embedding, requests)


class PropagatorRefiner:
    """Any :class:`Propagator` as a 3D strategy: every update re-runs it on the whole object
    (its box and all its clicks as one :class:`VolumePrompt`); results carry no low-res logits."""

    def __init__(self, propagator: Propagator, slices: SliceSource) -> None:
        self.propagator, self.slices = propagator, slices
        self.monitor: Monitor | None = None

    def segment(self, objects: Sequence[VolumeObject]) -> list[VolumeObject]:
        state = self.propagator.init_state(self.slices, [o.prompt() for o in objects])
        found: list[dict[int, SliceState]] = [{} for _ in objects]
        plan = getattr(state, "plan", None)  # a Propagator's state is its own; PropagationState has a plan
        planned = sum(len(part) for part in plan()) if callable(plan) else 0
        for done, result in enumerate(self.propagator.propagate(state)):
            if self.monitor is not None:
                self.monitor(done, planned, result.z)
            for k, obj_index in enumerate(result.obj_ids):
                obj = objects[obj_index]
                previous = found[obj_index].get(result.z)
                logits = result.logits[k]
                if previous is not None:  # a slice visited twice keeps the higher logits
                    logits = np.maximum(previous.result.logits, logits)
                found[obj_index][result.z] = SliceState(
                    None, obj.clicks_on(result.z), MaskResult(logits > 0, logits, None, float("nan")))
        return [replace(o, slices=s) for o, s in zip(objects, found)]

    def refine(self, updates: Sequence[tuple[VolumeObject, Click]]) -> list[VolumeObject]:
        changed = []
        for obj, click in updates:
            z0, z1 = obj.z_range
            if click.positive and not z0 <= click.z <= z1:
                obj = replace(obj, z_range=(min(z0, click.z), max(z1, click.z)))
            changed.append(replace(obj, clicks=obj.clicks + (click,)))
        return self.segment(changed)

    def resize(self, updates: Sequence[tuple[VolumeObject, tuple[int, int]]]) -> list[VolumeObject]:
        return self.segment([replace(obj, z_range=tuple(r), given_range=tuple(r),
                                     clicks=tuple(c for c in obj.clicks if r[0] <= c.z <= r[1]))
                             for obj, r in updates])


class Session3D:
    """An interactive session on one volume.

    Args:
        predictor: the 2D model (also used by the default strategy to encode slices).
        volume: ``[z, y, x]`` uint8 volume, intensity scheme applied (or any :class:`SliceSource`).
        config: mask-prompt rules and the history length.
        propagation: box growth and stop-when-empty (as for ``segment_volume``).
        refiner: the 3D strategy (default :class:`SliceRefiner`; a SAM2 memory propagator goes
            in as ``PropagatorRefiner(propagator, slices)``).
        max_cached_embeddings: slice embeddings kept by the default strategy.
    """

    def __init__(self, predictor: Predictor, volume: np.ndarray | SliceSource, config: RefineConfig | None = None,
                 propagation: PropagationConfig | None = None, refiner: VolumeRefiner | None = None,
                 max_cached_embeddings: int = 64) -> None:
        self.slices: SliceSource = VolumeSlices(volume) if isinstance(volume, np.ndarray) else volume
        self.shape = tuple(int(s) for s in self.slices.shape)
        self.config = config or RefineConfig()
        self.refiner: VolumeRefiner = refiner or SliceRefiner(predictor, self.slices, propagation, self.config,
                                                              max_cached_embeddings)
        self._history: History[dict[int, VolumeObject]] = History({}, self.config.max_history)
        self._next_id = 1

    # ------------------------------------------------------------------------ state
    @property
    def objects(self) -> tuple[VolumeObject, ...]:
        return tuple(self._history.current.values())

    def object(self, obj_id: int) -> VolumeObject:
        try:
            return self._history.current[obj_id]
        except KeyError:
            raise InputError(None, f"no object {obj_id} in this session (objects: "
                                   f"{', '.join(map(str, self._history.current)) or 'none'})") from None

    def label_slice(self, z: int) -> np.ndarray:
        """(y, x) label map of slice ``z`` alone (as :meth:`label_map` has it, without the rest)."""
        objects = self.objects
        dtype = np.uint8 if max((o.label for o in objects), default=0) <= 255 else np.uint16
        present = [o for o in objects if z in o.slices]
        labels = label_map_from_logits([o.slices[z].result.logits for o in present], [o.label for o in present],
                                       self.shape[1:])
        return labels.astype(dtype, copy=False)

    def prompt_records(self) -> list[dict]:
        """The objects as prompts-file entries (the 2D box with its key slice and z range, the
        label, the clicks in order); ``medsamkit segment VOLUME --boxes-file`` replays them."""
        return [prompt_record(o.box, o.clicks, o.label, slice=o.key_slice if o.box is not None else None,
                              z_range=list(o.given_range or o.z_range)) for o in self.objects]

    def label_map(self) -> np.ndarray:
        """(z, y, x) label volume: a voxel claimed by several objects goes to the highest logit."""
        objects = self.objects
        dtype = np.uint8 if max((o.label for o in objects), default=0) <= 255 else np.uint16
        out = np.zeros(self.shape, dtype)
        for z in sorted({z for o in objects for z in o.slices}):
            present = [o for o in objects if z in o.slices]
            out[z] = label_map_from_logits([o.slices[z].result.logits for o in present],
                                           [o.label for o in present], self.shape[1:])
        return out

    @property
    def can_undo(self) -> bool:
        return self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history.can_redo

    def undo(self) -> bool:
        return self._history.undo()

    def redo(self) -> bool:
        return self._history.redo()

    # ------------------------------------------------------------------------ operations
    def add_object(self, prompt: VolumePrompt | Sequence[float]) -> int:
        """Add one object from a :class:`VolumePrompt` (or a 6-number box); returns its id."""
        return self.add_objects([prompt])[0]

    def add_objects(self, prompts: Sequence[VolumePrompt | Sequence[float]], source: str | None = None) -> list[int]:
        """Add several objects as one operation: segmented together, then their clicks replayed."""
        used = [o.label for o in self.objects]
        new = []
        for i, p in enumerate(prompts):
            if not isinstance(p, VolumePrompt):
                values = tuple(p)
                if len(values) != 6:
                    raise InputError(source, f"a volume box is 6 numbers x0, y0, z0, x1, y1, z1, got {values!r}")
                p = VolumePrompt.from_box3d(values)
            check_prompt(p, self.shape, source, where=f"object {i + 1} ({p.describe()})")
            label = p.label if p.label is not None else _next_label(used)
            used.append(label)
            new.append(VolumeObject(self._next_id + i, label, p.box, p.key_slice, p.z_range, p.points,
                                    given_range=p.z_range))
        self._next_id += len(new)
        done = self.refiner.segment(new)
        state = dict(self._history.current)
        state.update({o.obj_id: o for o in done})
        self._history.push(state)
        return [o.obj_id for o in done]

    def add_click(self, obj_id: int, point: Click | Sequence[float]) -> VolumeObject:
        """Add a click ``(x, y, z, label)`` to an object and update it; returns the updated object."""
        return self.add_clicks([(obj_id, point)])[obj_id]

    def add_clicks(self, clicks: Sequence[tuple[int, Click | Sequence[float]]]) -> dict[int, VolumeObject]:
        """One click for each of several objects, as one operation (their updates run together)."""
        updates, seen = [], set()
        for obj_id, point in clicks:
            if obj_id in seen:
                raise InputError(None, f"object {obj_id} has two clicks in one step: add them one at a time")
            seen.add(obj_id)
            click = as_click(point, 3)
            check_clicks_3d([click], self.shape)
            updates.append((self.object(obj_id), click))
        done = self.refiner.refine(updates)
        state = dict(self._history.current)
        state.update({o.obj_id: o for o in done})
        self._history.push(state)
        return {o.obj_id: o for o in done}

    def remove_object(self, obj_id: int) -> None:
        self.object(obj_id)
        self._history.push({k: v for k, v in self._history.current.items() if k != obj_id})

    def clear(self) -> None:
        """Remove every object, as one operation (undo brings them back)."""
        if self._history.current:
            self._history.push({})

    def set_range(self, obj_id: int, z_range: Sequence[int]) -> VolumeObject:
        """Change an object's z range (see :meth:`set_ranges`); returns the updated object."""
        return self.set_ranges({obj_id: z_range})[obj_id]

    def set_ranges(self, ranges: Mapping[int, Sequence[int]]) -> dict[int, VolumeObject]:
        """New z ranges ``(z0, z1)`` for several objects, as one operation.

        A range that grows is propagated from the old ends (an object added on its key slice
        alone, ``z_range = (key, key)``, and then given its range is the same as the object
        added with that range); slices outside a range that shrinks are dropped, with the clicks
        on them. The new range is the object's given range (its prompts-file ``z_range``).
        """
        nz = self.shape[0]
        updates = []
        for obj_id, z_range in ranges.items():
            obj = self.object(obj_id)
            z0, z1 = (int(v) for v in z_range)
            if not 0 <= z0 <= z1 < nz:
                raise InputError(None, f"object {obj_id}: z range {z0},{z1} must be within the volume's "
                                       f"slices 0..{nz - 1}, z0 <= z1")
            if not z0 <= obj.key_slice <= z1:
                raise InputError(None, f"object {obj_id}: z range {z0},{z1} leaves out its key slice {obj.key_slice}")
            updates.append((obj, (z0, z1)))
        done = self.refiner.resize(updates)
        state = dict(self._history.current)
        state.update({o.obj_id: o for o in done})
        self._history.push(state)
        return {o.obj_id: o for o in done}

    @property
    def monitor(self) -> Monitor | None:
        """Called before each slice an operation visits (see :data:`Monitor`); None: not followed."""
        return self.refiner.monitor

    @monitor.setter
    def monitor(self, value: Monitor | None) -> None:
        self.refiner.monitor = value
