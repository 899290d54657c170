"""Interactive segmentation sessions: objects, boxes, clicks, undo, the current label map.

A session holds one image (:class:`Session2D`) or one volume
(:class:`~medsamkit.inference.session3d.Session3D`) with its embedding(s), and per object a label
id, a box, the ordered clicks and the current result. Every operation (add or remove an object,
add clicks) makes a new immutable state of the objects; :meth:`undo` and :meth:`redo` step
through them (a bounded history). The Python API, the CLI (``medsamkit segment --point``) and the
web app drive these same objects: replaying a prompts file is adding its objects, then their clicks
in order.

2D update rule (SAM's interactive loop, :mod:`medsamkit.inference.refine`): a click decodes the
object's box, all its clicks and, when :attr:`RefineConfig.mask_prompt` is on, the low-resolution
logits of its previous result; the image is encoded once, when the session starts. With
:attr:`RefineConfig.local_clicks` the decode changes the mask only near the click and the click
holds (:mod:`medsamkit.inference.local_clicks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import numpy as np

from ..errors import InputError
from .clicks import Click, check_clicks_2d, prompt_record
from .local_clicks import local_click_update, smoothed_grey
from .predictor import ImageEmbedding, Predictor
from .refine import DecodeRequest, MaskResult, decode_requests
from .segment2d_io import check_rgb_image, label_map_from_logits, validate_boxes


@dataclass(frozen=True)
class RefineConfig:
    """How clicks update an object.

    Attributes:
        mask_prompt: decode each update with the object's previous low-resolution logits as the
            mask prompt (SAM's interactive loop). See docs/refinement.md for what it does to
            LiteMedSAM.
        carry_mask: 3D only: when a click changes a slice, each slice the change propagates to
            is decoded with its neighbour's new logits as the mask prompt (the shape travels
            with the box) instead of its box alone.
        click_reach: 3D only: a click also prompts the slices up to this many above and below
            its own, where the mask there disagrees with it (a background click on a pixel that
            slice's mask covers, a foreground click on one it misses); 0: its own slice only.
        local_clicks: a click changes the mask only near itself and the clicked pixel takes the
            clicked label (:mod:`medsamkit.inference.local_clicks`). In 3D (the slice-by-slice
            strategy) every click of a slice holds again whenever that slice is decoded again.
        local_reach: with ``local_clicks``: the new decode is kept within ``local_reach`` times the
            click's distance to the previous mask's edge (plus 2 pixels).
        hold_tolerance: with ``local_clicks``: grey levels (0-255) of the region grown from a click
            the decoder did not honour; 0 switches the hold off.
        max_history: undo steps kept.
    """

    mask_prompt: bool = False
    carry_mask: bool = False
    click_reach: int = 0
    local_clicks: bool = False
    local_reach: float = 2.0
    hold_tolerance: float = 30.0
    max_history: int = 100

    def __post_init__(self) -> None:
        if self.max_history < 0:
            raise ValueError(f"max_history must be >= 0, got {self.max_history}")
        if self.click_reach < 0:
            raise ValueError(f"click_reach must be >= 0, got {self.click_reach}")
        if self.local_reach <= 0:
            raise ValueError(f"local_reach must be > 0, got {self.local_reach}")
        if self.hold_tolerance < 0:
            raise ValueError(f"hold_tolerance must be >= 0, got {self.hold_tolerance}")


S = TypeVar("S")


class History(Generic[S]):
    """Undo/redo over immutable states: ``push`` a new state, ``undo``/``redo`` move through them."""

    def __init__(self, initial: S, limit: int = 100) -> None:
        self.current = initial
        self.limit = limit
        self._past: list[S] = []
        self._future: list[S] = []

    def push(self, state: S) -> None:
        self._past.append(self.current)
        if len(self._past) > self.limit:
            del self._past[: len(self._past) - self.limit]
        self.current = state
        self._future.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._past)

    @property
    def can_redo(self) -> bool:
        return bool(self._future)

    def undo(self) -> bool:
        if not self._past:
            return False
        self._future.append(self.current)
        self.current = self._past.pop()
        return True

    def redo(self) -> bool:
        if not self._future:
            return False
        self._past.append(self.current)
        self.current = self._future.pop()
        return True


@dataclass(frozen=True)
class ImageObject:
    """One object of a 2D session.

    Attributes:
        obj_id: the session's id of the object (stable across undo).
        label: the value the object takes in the label map.
        box: ``(x0, y0, x1, y1)`` original pixels, or None (point-only object).
        clicks: the clicks so far, in order.
        result: the current mask, logits, low-resolution logits and IoU estimate.
    """

    obj_id: int
    label: int
    box: tuple[float, float, float, float] | None
    clicks: tuple[Click, ...]
    result: MaskResult


def as_click(point: Click | Sequence[float], dims: int = 2) -> Click:
    """A :class:`Click` from a Click or ``(x, y, label)`` / ``(x, y, z, label)`` numbers."""
    if isinstance(point, Click):
        return point
    values = tuple(point)
    if len(values) != dims + 1:
        form = "(x, y, label)" if dims == 2 else "(x, y, z, label)"
        raise InputError(None, f"a point is {form}, got {values!r}")
    if values[-1] not in (0, 1):
        raise InputError(None, f"point {values!r}: the label must be 1 (foreground) or 0 (background)")
    z = None if dims == 2 else int(values[2])
    if dims == 3 and values[2] != z:
        raise InputError(None, f"point {values!r}: z must be a whole slice number")
    return Click(float(values[0]), float(values[1]), int(values[-1]), z=z)


def _next_label(used: Iterable[int]) -> int:
    return max(used, default=0) + 1


class Session2D:
    """An interactive session on one 2D image.

    Args:
        predictor: the model with its geometry; the session sets its embedding before every
            decode, so one predictor can serve several sessions.
        image: H x W x 3 uint8 RGB (apply the intensity scheme first), encoded once here.
        config: the update rule (mask prompt or not) and the history length.
        embedding: a precomputed embedding of ``image`` (skips the encoder).
    """

    def __init__(self, predictor: Predictor, image: np.ndarray, config: RefineConfig | None = None,
                 embedding: ImageEmbedding | None = None) -> None:
        check_rgb_image(image)
        self.predictor = predictor
        self.config = config or RefineConfig()
        self.shape: tuple[int, int] = (int(image.shape[0]), int(image.shape[1]))
        self.embedding = embedding if embedding is not None else predictor.embed(image)
        keep_grey = self.config.local_clicks and self.config.hold_tolerance > 0
        self._grey = smoothed_grey(image) if keep_grey else None
        self._history: History[dict[int, ImageObject]] = History({}, self.config.max_history)
        self._next_id = 1

    # ------------------------------------------------------------------------ state
    @property
    def objects(self) -> tuple[ImageObject, ...]:
        """The current objects, in the order they were added."""
        return tuple(self._history.current.values())

    def object(self, obj_id: int) -> ImageObject:
        try:
            return self._history.current[obj_id]
        except KeyError:
            raise InputError(None, f"no object {obj_id} in this session (objects: "
                                   f"{', '.join(map(str, self._history.current)) or 'none'})") from None

    def prompt_records(self) -> list[dict]:
        """The objects as prompts-file entries (box, label, clicks in order): written with
        :func:`~medsamkit.inference.clicks.write_prompts_file`, ``medsamkit segment --boxes-file``
        replays them to the same label map."""
        return [prompt_record(o.box, o.clicks, o.label) for o in self.objects]

    def label_map(self) -> np.ndarray:
        """(H, W) label map: each pixel takes the label of the object with the highest logit there
        among those that claim it; 0 elsewhere."""
        objects = self.objects
        return label_map_from_logits([o.result.logits for o in objects], [o.label for o in objects], self.shape)

    @property
    def can_undo(self) -> bool:
        return self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history.can_redo

    def undo(self) -> bool:
        """Go back one operation; False when there is nothing to undo."""
        return self._history.undo()

    def redo(self) -> bool:
        """Redo the last undone operation; False when there is none."""
        return self._history.redo()

    # ------------------------------------------------------------------------ operations
    def add_object(self, box: Sequence[float] | None = None, points: Sequence[Click | Sequence[float]] = (),
                   label: int | None = None) -> int:
        """Add one object (a box, clicks, or both; clicks applied in order); returns its id."""
        return self.add_objects([(box, points, label)])[0]

    def add_objects(self, objects: Sequence[tuple[Sequence[float] | None, Sequence[Click | Sequence[float]],
                                                  int | None]], source: str | None = None) -> list[int]:
        """Add several objects ``(box, points, label)`` as one operation; returns their ids.

        Each object's box is decoded first (all boxes in one batched call), then its clicks one
        at a time in order, as if they were clicked; objects are batched step by step.
        """
        specs = []
        used = [o.label for o in self.objects]
        for i, (box, points, label) in enumerate(objects):
            where = f"object {i + 1}: " if len(objects) > 1 else ""
            clicks = tuple(as_click(p, 2) for p in points)
            box_t = None
            if box is not None:
                box_t = tuple(float(v) for v in validate_boxes(np.asarray(box), self.shape, source)[0])
            if box_t is None and not clicks:
                raise InputError(source, f"{where}an object needs a box or at least one point")
            check_clicks_2d(clicks, self.shape, source, where)
            if label is None:
                label = _next_label(used)
            if not 1 <= int(label) <= 65535:
                raise InputError(source, f"{where}label {label} must be between 1 and 65535")
            used.append(int(label))
            specs.append((box_t, clicks, int(label)))
        ids = list(range(self._next_id, self._next_id + len(specs)))
        self._next_id += len(specs)
        # step 0: the box (or the first click of a point-only object); then the remaining clicks
        done = [0 if box is not None else 1 for box, _, _ in specs]
        results = decode_requests(self.predictor, self.embedding,
                                  [DecodeRequest(box, clicks[:n]) for (box, clicks, _), n in zip(specs, done)])
        steps = max((len(c) - n for (_, c, _), n in zip(specs, done)), default=0)
        for k in range(steps):
            todo = [i for i, ((_, c, _), n) in enumerate(zip(specs, done)) if n + k < len(c)]
            new = decode_requests(self.predictor, self.embedding,
                                  [self._request(specs[i][0], specs[i][1][:done[i] + k + 1], results[i]) for i in todo])
            for i, r in zip(todo, new):
                results[i] = self._update(results[i], r, specs[i][1][done[i] + k])
        state = dict(self._history.current)
        for obj_id, (box, clicks, label), result in zip(ids, specs, results):
            state[obj_id] = ImageObject(obj_id, label, box, clicks, result)
        self._history.push(state)
        return ids

    def add_click(self, obj_id: int, point: Click | Sequence[float]) -> MaskResult:
        """Add a click ``(x, y, label)`` to an object and update it; returns its new result."""
        return self.add_clicks([(obj_id, point)])[obj_id]

    def add_clicks(self, clicks: Sequence[tuple[int, Click | Sequence[float]]]) -> dict[int, MaskResult]:
        """Add one click to each of several objects as one operation (one decoder pass)."""
        state = dict(self._history.current)
        ids, requests = [], []
        for obj_id, point in clicks:
            if obj_id in ids:
                raise InputError(None, f"object {obj_id} has two clicks in one step: add them one at a time")
            obj = self.object(obj_id)
            click = as_click(point, 2)
            check_clicks_2d([click], self.shape)
            ids.append(obj_id)
            requests.append(self._request(obj.box, obj.clicks + (click,), obj.result))
        decoded = decode_requests(self.predictor, self.embedding, requests)
        results = [self._update(state[obj_id].result, r, request.clicks[-1])
                   for obj_id, request, r in zip(ids, requests, decoded)]
        for obj_id, request, result in zip(ids, requests, results):
            state[obj_id] = replace(state[obj_id], clicks=request.clicks, result=result)
        self._history.push(state)
        return dict(zip(ids, results))

    def remove_object(self, obj_id: int) -> None:
        """Remove an object (undo brings it back)."""
        self.object(obj_id)
        state = {k: v for k, v in self._history.current.items() if k != obj_id}
        self._history.push(state)

    def clear(self) -> None:
        """Remove every object, as one operation (undo brings them back)."""
        if self._history.current:
            self._history.push({})

    def _update(self, previous: MaskResult, decoded: MaskResult, click: Click) -> MaskResult:
        """The object's result after ``click``: the decode, or its local update."""
        if not self.config.local_clicks:
            return decoded
        return local_click_update(previous, decoded, click, self._grey, self.config.local_reach,
                                  self.config.hold_tolerance)

    def _request(self, box, clicks: tuple[Click, ...], previous: MaskResult | None) -> DecodeRequest:
        mask = previous.low_res_logits if (self.config.mask_prompt and previous is not None) else None
        return DecodeRequest(box, clicks, mask)
