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
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ..choices import DEFAULT_OVERLAP, OVERLAP_RULES
from ..errors import InputError
from .clicks import Click, check_clicks_3d, prompt_record
from .predictor import Predictor
from .prompts3d import VolumePrompt, check_prompt
from .propagate import PropagationConfig, Propagator, SliceResult, SliceSource, VolumeSlices
from .refine import MaskResult
from .session import History, RefineConfig, _next_label, as_click
from .slice_refiner import EmbeddingLRU, SliceRefiner
from .volume3d import LabelAssembler
from .volume_objects import Monitor, SliceState, VolumeObject, VolumeRefiner

__all__ = ["EmbeddingLRU", "Monitor", "PropagatorRefiner", "Session3D", "SliceRefiner", "SliceState",
           "VolumeObject", "VolumeRefiner"]

log = logging.getLogger(__name__)


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
                 max_cached_embeddings: int = 64, overlap: str = DEFAULT_OVERLAP) -> None:
        if overlap not in OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
        self.overlap = overlap
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
        return self._assemble([z], (1, *self.shape[1:]))[0]

    def _assemble(self, zs: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
        """Slices ``zs`` of the label map into a volume of ``shape`` (row k holds ``zs[k]``)."""
        objects = self.objects
        assembler = LabelAssembler(shape, [o.label for o in objects], self.overlap)
        for row, z in enumerate(zs):
            present = [(i, o.slices[z].result) for i, o in enumerate(objects) if z in o.slices]
            if present:
                assembler.add(SliceResult(row, tuple(i for i, _ in present), np.stack([r.mask for _, r in present]),
                                          np.stack([r.logits for _, r in present]), final=True))
        return assembler.volume

    def prompt_records(self) -> list[dict]:
        """The objects as prompts-file entries (the 2D box with its key slice and z range, the
        label, the clicks in order); ``medsamkit segment VOLUME --boxes-file`` replays them."""
        return [_record(o) for o in self.objects]

    def label_map(self) -> np.ndarray:
        """(z, y, x) label volume. A voxel several objects claim goes by the session's ``overlap``
        rule, as in ``segment_volume`` and the CLI: ``"last"`` (default) to the object added last,
        ``"logit"`` to the highest logit, ``"smallest"`` to the smallest mask on that slice."""
        return self._assemble(range(self.shape[0]), self.shape)

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
                                    given_range=p.z_range, bounded=p.bounded and p.box is not None))
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


def _record(o: VolumeObject) -> dict:
    """A prompts-file entry: a 3D box (bounded object) keeps its 6-number form and its key slice."""
    z_range = o.given_range or o.z_range
    if o.bounded and o.box is not None:
        x0, y0, x1, y1 = o.box
        return prompt_record((x0, y0, z_range[0], x1, y1, z_range[1]), o.clicks, o.label, slice=o.key_slice)
    return prompt_record(o.box, o.clicks, o.label, slice=o.key_slice if o.box is not None else None,
                         z_range=list(z_range))
