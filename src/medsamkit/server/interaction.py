"""The page's requests turned into calls on :mod:`medsamkit.inference.session` (and back to JSON).

Nothing here segments or decides anything: each function translates one request into the
session's own operations (:class:`~medsamkit.inference.session.Session2D`,
:class:`~medsamkit.inference.session3d.Session3D`) and its state into the views the page draws.

Volumes: an object drawn on a slice is added on that slice alone (``z_range = (key, key)``), so
its mask shows at once; :func:`propagate` then gives it the slice range the page asked for (by
default the one ``medsamkit segment`` gives a 2D box on a slice), which the session propagates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..inference.predictor import Predictor
from ..inference.prompts3d import VolumePrompt, default_z_range
from ..inference.session import Session2D, as_click
from ..inference.session3d import Monitor, Session3D
from ..preprocessing.intensity import to_rgb_uint8
from .images import ImageRecord
from .schemas import ClickRequest, ObjectRequest, ObjectView, SegmentRequest, SessionView
from .store import WebSession


def start(record: ImageRecord, predictor: Predictor) -> Session2D | Session3D:
    """The interaction session of a newly opened image, on the model input ``medsamkit segment``
    makes (the same intensity scheme). A 2D image is encoded here; a volume's slices when first
    prompted (the server's embedding cache keeps them: the session keeps none of its own)."""
    scheme, _ = record.scheme()
    if record.volume:
        return Session3D(predictor, scheme(record.pixels), max_cached_embeddings=0)
    return Session2D(predictor, to_rgb_uint8(scheme(record.pixels)))


# ---------------------------------------------------------------------------------- views
def _score(obj) -> float | None:
    """The decoder's IoU estimate (a volume object's on its key slice), when there is one."""
    result = obj.result if hasattr(obj, "result") else getattr(obj.slices.get(obj.key_slice), "result", None)
    return None if result is None or math.isnan(result.score) else float(result.score)


def object_view(session: WebSession, obj) -> ObjectView:
    name = session.names.get(obj.label) or f"Object {obj.label}"
    view = ObjectView(id=obj.obj_id, label=obj.label, name=name,
                      box=None if obj.box is None else [float(v) for v in obj.box],
                      points=[c.as_list() for c in obj.clicks], score=_score(obj))
    if session.record.volume:
        view.slice = obj.key_slice
        view.z_range = list(obj.z_range)
        view.target = list(session.targets.get(obj.obj_id, obj.z_range))
    return view


def view(session: WebSession) -> SessionView:
    s = session.interaction
    objects = s.objects
    job = session.job.status().to_json() if session.job is not None else None
    stale = session.record.volume and any(tuple(o.z_range) != session.targets.get(o.obj_id, o.z_range)
                                          for o in objects)
    return SessionView(id=session.id, objects=[object_view(session, o) for o in objects],
                       can_undo=s.can_undo, can_redo=s.can_redo, job=job, stale=bool(stale))


def plane_labels(session: WebSession, axis: int, index: int) -> np.ndarray:
    """The current label map of one plane (the same plane :meth:`ImageRecord.plane` gives)."""
    session.record.plane(axis, index)  # checks axis and index
    s = session.interaction
    if not session.record.volume:
        return s.label_map()
    if axis == 0:
        return s.label_slice(index)
    return np.take(label_volume(session), index, axis=axis)


def label_volume(session: WebSession) -> np.ndarray:
    """The whole current label map (what downloads write); a volume's is kept until the next change."""
    s = session.interaction
    if not session.record.volume:
        return s.label_map()
    objects = s.objects
    memo = session.memo
    if memo is not None and len(memo[0]) == len(objects) and all(a is b for a, b in zip(memo[0], objects)):
        return memo[1]
    labels = s.label_map()
    session.memo = (objects, labels)
    return labels


# ---------------------------------------------------------------------------- operations
def _points(points: Sequence[Sequence[float]], where: str, z: int | None = None) -> list[tuple]:
    out = []
    for p in points:
        if len(p) != 3 or p[2] not in (0, 1):
            raise InputError(None, f"{where}: a point is [x, y, 1|0] (1 foreground, 0 background), got {list(p)}")
        xy = (float(p[0]), float(p[1]))
        out.append((*xy, int(p[2])) if z is None else (*xy, z, int(p[2])))
    return out


def _slice(session: WebSession, value: int | None) -> int:
    nz = session.record.shape[0]
    if value is None:
        raise InputError(session.record.name, "is a volume: give the 'slice' the prompt is on")
    if not 0 <= value < nz:
        raise InputError(session.record.name, f"slice {value} is outside the volume's slices 0..{nz - 1}")
    return int(value)


def _check_range(session: WebSession, z_range: Sequence[int], key: int) -> tuple[int, int]:
    nz = session.record.shape[0]
    z0, z1 = (int(v) for v in z_range)
    if not 0 <= z0 <= z1 < nz:
        raise InputError(session.record.name, f"z range {z0},{z1} must lie in the slices 0..{nz - 1} with z0 <= z1")
    if not z0 <= key <= z1:
        raise InputError(session.record.name, f"z range {z0},{z1} leaves out the object's slice {key}")
    return z0, z1


def add_object(session: WebSession, request: ObjectRequest) -> int:
    s = session.interaction
    record = session.record
    if not record.volume:
        if request.slice is not None or request.z_range is not None:
            raise InputError(record.name, "is a 2D image: leave out 'slice' and 'z_range'")
        obj_id = s.add_object(request.box, _points(request.points, "points"), request.label)
    else:
        z = _slice(session, request.slice)
        box = None if request.box is None else tuple(float(v) for v in request.box)
        if box is None and not request.points:
            raise InputError(record.name, "an object needs a box or at least one point")
        if box is not None and len(box) != 4:
            raise InputError(record.name, f"a box on a slice is 4 numbers x0, y0, x1, y1, got {list(box)}")
        points = tuple(_points(request.points, "points", z))
        prompt = VolumePrompt(box, z, (z, z), request.label, points=tuple(as_click(p, 3) for p in points))
        [obj_id] = s.add_objects([prompt], source=record.name)
        nz = record.shape[0]
        if request.z_range is not None:
            target = _check_range(session, request.z_range, z)
        elif box is not None:
            target = default_z_range(box, z, record.geometry, nz)
        else:
            target = (0, nz - 1)
        session.targets[obj_id] = target
    if request.name:
        session.names[s.object(obj_id).label] = request.name.strip()
    return obj_id


def add_click(session: WebSession, obj_id: int, request: ClickRequest) -> None:
    s = session.interaction
    if session.record.volume:
        z = _slice(session, request.slice)
        s.add_click(obj_id, (request.x, request.y, z, int(request.positive)))
        obj = s.object(obj_id)
        t0, t1 = session.targets.get(obj_id, obj.z_range)
        session.targets[obj_id] = (min(t0, obj.z_range[0]), max(t1, obj.z_range[1]))
    else:
        if request.slice is not None:
            raise InputError(session.record.name, "is a 2D image: leave out 'slice'")
        s.add_click(obj_id, (request.x, request.y, int(request.positive)))


def set_target(session: WebSession, obj_id: int, z_range: Sequence[int]) -> None:
    if not session.record.volume:
        raise InputError(session.record.name, "is a 2D image: it has no slice range")
    obj = session.interaction.object(obj_id)
    session.targets[obj_id] = _check_range(session, z_range, obj.key_slice)


def pending(session: WebSession, objects: Sequence[int] | None) -> dict[int, tuple[int, int]]:
    """The objects whose propagated range differs from their target, with that target."""
    if not session.record.volume:
        raise InputError(session.record.name, "is a 2D image: there is nothing to propagate")
    s = session.interaction
    chosen = [s.object(i) for i in objects] if objects is not None else list(s.objects)
    return {o.obj_id: session.targets.get(o.obj_id, o.z_range) for o in chosen
            if tuple(o.z_range) != tuple(session.targets.get(o.obj_id, o.z_range))}


def propagate(session: WebSession, ranges: dict[int, tuple[int, int]], monitor: Monitor) -> None:
    """Give each object its target range (the session propagates), followed by ``monitor``."""
    s = session.interaction
    s.monitor = monitor
    try:
        s.set_ranges(ranges)
    finally:
        s.monitor = None


def remove_object(session: WebSession, obj_id: int) -> None:
    session.interaction.remove_object(obj_id)


def rename(session: WebSession, obj_id: int, name: str) -> None:
    label = session.interaction.object(obj_id).label
    session.names[label] = name.strip()


def undo(session: WebSession) -> bool:
    return session.interaction.undo()


def redo(session: WebSession) -> bool:
    return session.interaction.redo()


def clear(session: WebSession) -> None:
    session.interaction.clear()


# ---------------------------------------------------------------------- one-off segmentation
def _objects(request: SegmentRequest) -> list[tuple]:
    points = request.points
    if points and all(isinstance(p, list) and p and not isinstance(p[0], list) for p in points):
        points = [points]  # a flat list of clicks: the one object's
    n = max(len(request.boxes), len(points))
    if n == 0:
        raise InputError(None, "no prompt given: send at least one box [x0, y0, x1, y1] or one point [x, y, 1]")
    if request.boxes and points and len(request.boxes) != len(points):
        raise InputError(None, f"{len(request.boxes)} boxes and {len(points)} point lists: give one point "
                               "list per box (an empty list for a box without clicks)")
    if request.labels is not None and len(request.labels) != n:
        raise InputError(None, f"{len(request.labels)} labels for {n} objects: give one per object")
    labels = request.labels or list(range(1, n + 1))
    boxes = request.boxes or [None] * n
    clicks = points or [[]] * n
    return [(boxes[i], _points(clicks[i], f"object {i + 1} points"), labels[i]) for i in range(n)]


def segment_once(session: WebSession, predictor: Predictor, request: SegmentRequest) -> np.ndarray:
    """The label map of the request's prompts alone, on the image or on one slice of a volume
    (the session's objects are not touched)."""
    record = session.record
    objects = _objects(request)
    if record.volume:
        z = _slice(session, request.slice)
        image = session.interaction.slices.rgb(z)
        source = f"{record.name} slice {z}"
    else:
        if request.slice is not None:
            raise InputError(record.name, "is a 2D image: leave out 'slice'")
        image = to_rgb_uint8(record.scheme()[0](record.pixels))
        source = record.name
    one_off = Session2D(predictor, image)
    one_off.add_objects(objects, source=source)
    return one_off.label_map()


# ---------------------------------------------------------------------------------- export
def prompts_file(session: WebSession) -> list[dict]:
    """The session's prompts-file entries (``medsamkit segment --boxes-file`` replays them to the
    same label map), with the page's object names."""
    s = session.interaction
    records = s.prompt_records()
    for record, obj in zip(records, s.objects):
        name = session.names.get(obj.label)
        if name:
            record["name"] = name
    return records
