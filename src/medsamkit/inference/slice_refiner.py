"""LiteMedSAM-style 3D segmentation and incremental click refinement, slice by slice.

The default strategy of :class:`~medsamkit.inference.session3d.Session3D` (see its module
docstring): an object starts on its key slice from its box and is propagated outward as
LiteMedSAM's 3D script does; a click on slice ``z`` re-decodes ``z`` and the change propagates
outward only as far as the masks change. Slice embeddings are cached (:class:`EmbeddingLRU`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .clicks import Click
from .local_clicks import local_click_update, smoothed_grey
from .predictor import ImageEmbedding, Predictor
from .propagate import PropagationConfig, SliceSource, clip_to_bounds, growth, topology_kept
from .refine import DecodeRequest, MaskResult, decode_requests
from .session import RefineConfig
from .topology import keeps_topology, retries
from .volume_objects import Monitor, SliceState, VolumeObject


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
        self.slices = slices
        self.embeddings = EmbeddingLRU(predictor, slices, max_cached_embeddings)
        self.decoder_calls = 0
        self.monitor: Monitor | None = None
        self._box_step = False
        self._greys: dict[int, np.ndarray | None] = {}

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
        starts, passthrough, new_clicks = [], {}, []
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
                new_clicks.append(click)
                continue
            starts.append((obj, click.z, self._request(obj, click.z, own_previous=True), None))
            new_clicks.append(click)
        walked = self._run(starts, forced=False, new_clicks=new_clicks)
        out, k = [], 0
        for i in range(len(updates)):
            if i in passthrough:
                out.append(passthrough[i])
                continue
            obj = starts[k][0]
            out.append(replace(obj, slices=walked[k]))
            k += 1
        return self._toward_key(out, [click for _, click in updates])

    def _toward_key(self, objects: list[VolumeObject], clicks: Sequence[Click]) -> list[VolumeObject]:
        """With ``click_reach``: re-decode the slices within reach of each click on the side of its
        object's key slice (the outward walk covered the other side), nearest first."""
        for d in range(1, self.config.click_reach + 1):
            starts, owners = [], []
            for i, (obj, click) in enumerate(zip(objects, clicks)):
                z0, z1 = obj.z_range
                z = click.z + (1 if click.z < obj.key_slice else -1) * d
                if click.z == obj.key_slice or not z0 <= z <= z1 or (z - obj.key_slice) * (click.z - obj.key_slice) < 0:
                    continue
                request = self._request(obj, z, own_previous=True)
                stored = obj.slices.get(z)
                if request is None or (stored is not None and stored.clicks == request.clicks):
                    continue
                starts.append((obj, z, request, ()))
                owners.append(i)
            moved = [Click(clicks[i].x, clicks[i].y, clicks[i].label, z=start[1]) for i, start in zip(owners, starts)]
            for i, slices in zip(owners, self._run(starts, forced=False, new_clicks=moved)):
                objects[i] = replace(objects[i], slices=slices)
        return objects

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
        clicks = obj.clicks_on(z) + self._reached(obj, z, stored)
        if box is None and not clicks:
            return None  # type: ignore[return-value]
        return DecodeRequest(box, clicks, mask)

    def _reached(self, obj: VolumeObject, z: int, stored: SliceState | None) -> tuple[Click, ...]:
        """The clicks of nearby slices (``click_reach``) that slice ``z``'s mask disagrees with,
        moved onto ``z``, nearest first."""
        reach = self.config.click_reach
        if reach <= 0:
            return ()
        near = sorted((c for c in obj.clicks if c.z != z and abs(c.z - z) <= reach), key=lambda c: abs(c.z - z))
        out = []
        for c in near:
            if stored is not None:
                mask = stored.result.mask
                y = min(max(int(round(c.y)), 0), mask.shape[0] - 1)
                x = min(max(int(round(c.x)), 0), mask.shape[1] - 1)
                if bool(mask[y, x]) == c.positive:
                    continue  # this slice already agrees with the click there
            out.append(Click(c.x, c.y, c.label, z=z))
        return tuple(out)

    def next_box(self, previous: MaskResult | None, obj: VolumeObject, embedding: ImageEmbedding
                 ) -> tuple[float, float, float, float] | None:
        """The box for the next slice: the previous mask's bounds grown by ``grow_px`` model-input
        pixels (:meth:`~medsamkit.preprocessing.geometry.ModelGeometry.grown_box`); after an
        empty mask the key box (None for a point-only object: its walk ends). Clipped to the key
        box where that bounds the object (a 3D box), as :class:`BoxPropagator` does."""
        if previous is not None:
            bounds = self.predictor.geometry.grown_box(previous.mask, embedding.frame,
                                                       growth(self.propagation, self.predictor))
            if bounds is not None and obj.bounded and obj.box is not None and self.propagation.clip_to_box:
                bounds = clip_to_bounds(bounds, obj.box)
            if bounds is not None:
                return tuple(float(v) for v in bounds)  # type: ignore[return-value]
        return obj.box

    def _run(self, starts: Sequence[tuple[VolumeObject, int, DecodeRequest | None, tuple[int, ...] | None]],
             forced: bool, new_clicks: Sequence[Click] | None = None) -> list[dict[int, SliceState]]:
        """Decode each start slice (request None: the start slice is kept as it is), then walk
        outward from it (away from the key slice, or in the directions given), all objects
        together: the upward sweep, then the downward sweep. ``new_clicks``: the click that
        started each walk (the local update's click with ``RefineConfig.local_clicks``)."""
        slices = [dict(start[0].slices) for start in starts]
        # the start slices, grouped by slice
        by_z: dict[int, list[int]] = {}
        for i, (_, z, request, _) in enumerate(starts):
            if request is not None:
                by_z.setdefault(z, []).append(i)
        for z, members in sorted(by_z.items()):
            results = self._decode(z, [starts[i][2] for i in members])  # type: ignore[misc]
            for i, result in zip(members, results):
                stored = slices[i].get(z)
                result = self._local(z, result, starts[i][2].clicks, stored.result if stored is not None else None,
                                     new_clicks[i] if new_clicks is not None else None)
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
        decoded = self._decode(z, requests, embedding)
        if topology_kept(self.propagation, self.predictor):
            self._keep_topology(z, go, requests, decoded, embedding)
        results = [self._local(z, r, q.clicks) for r, q in zip(decoded, requests)]
        for w, request, result in zip(go, requests, results):
            stored = w.slices.get(z)
            w.slices[z] = SliceState(request.box, request.clicks, result)
            unchanged = stored is not None and np.array_equal(stored.result.mask, result.mask)
            w.previous = result
            w.next_z = w.end + w.step if (unchanged and not w.forced) else z + w.step

    def _keep_topology(self, z: int, walks: list[_Walk], requests: list[DecodeRequest], decoded: list[MaskResult],
                       embedding: ImageEmbedding) -> None:
        """Decode again, in place, the walks' slices whose mask changed topology from the slice
        they were propagated from (:mod:`~medsamkit.inference.topology`), with the same clicks."""
        todo = {k: replace(requests[k], box=box) for k, box in retries(
            [w.previous.mask if w.previous is not None else None for w in walks], [r.mask for r in decoded],
            [q.box for q in requests], embedding.frame, self.predictor.geometry,
            growth(self.propagation, self.predictor)).items()}
        if not todo:
            return
        for (k, request), result in zip(todo.items(), self._decode(z, list(todo.values()), embedding)):
            if keeps_topology(walks[k].previous.mask, result.mask):  # type: ignore[union-attr]
                requests[k], decoded[k] = request, result

    def _local(self, z: int, decoded: MaskResult, clicks: tuple[Click, ...], previous: MaskResult | None = None,
               new_click: Click | None = None) -> MaskResult:
        """With ``RefineConfig.local_clicks``: the new click's decode kept near it (over the slice's
        previous result), then every click of the slice made to hold; else the decode as it is."""
        if not self.config.local_clicks or not clicks:
            return decoded
        c = self.config
        if z not in self._greys:
            self._greys = {z: smoothed_grey(self.slices.rgb(z)) if c.hold_tolerance > 0 else None}  # one slice kept
        grey = self._greys[z]
        out = decoded
        if new_click is not None and previous is not None:
            out = local_click_update(previous, decoded, new_click, grey, c.local_reach, c.hold_tolerance)
        for click in clicks:
            out = local_click_update(out, out, click, grey, c.local_reach, c.hold_tolerance)
        return out

    def _decode(self, z: int, requests: Sequence[DecodeRequest], embedding: ImageEmbedding | None = None
                ) -> list[MaskResult]:
        embedding = embedding if embedding is not None else self.embeddings(z)
        self.decoder_calls += len({r.signature() for r in requests})
        return decode_requests(self.predictor, embedding, requests)
