"""Segmenting: the one-off ``segment`` call, and the page's objects, clicks, undo and redo."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from fastapi import APIRouter, Depends, Query, Response

from . import interaction
from .context import ServerContext, context, web_session
from .schemas import ClickRequest, ObjectRequest, RenameRequest, SegmentRequest, SessionView
from .store import WebSession

router = APIRouter(tags=["segment"])


def change(session: WebSession, operation: Callable[[], object]) -> SessionView:
    """Apply one change to a session's objects and answer its new state; refused with 409 while a
    propagation runs (see :meth:`WebSession.changing`)."""
    with session.changing():
        operation()
        return interaction.view(session)


def png_response(label_map: np.ndarray) -> Response:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(label_map))
    if not ok:  # pragma: no cover - cv2 encodes every uint8/uint16 array
        raise RuntimeError("PNG encoding failed")
    return Response(encoded.tobytes(), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/api/images/{image_id}/segment", response_class=Response,
             responses={200: {"content": {"image/png": {}},
                              "description": "label map at the image's size: 0 background, 1..N per object"}},
             summary="Segment boxes and clicks (one call, the session's objects untouched)")
def segment(request: SegmentRequest, session: WebSession = Depends(web_session),
            ctx: ServerContext = Depends(context)) -> Response:
    predictor = ctx.engine.predictor(session.id)
    return png_response(interaction.segment_once(session, predictor, request))


@router.get("/api/images/{image_id}/state", response_model=SessionView, summary="The objects and what undo/redo can do")
def state(session: WebSession = Depends(web_session)) -> SessionView:
    return interaction.view(session)  # reads one immutable state of the session: no lock needed


@router.post("/api/images/{image_id}/objects", response_model=SessionView, status_code=201,
             summary="Add an object from a box and/or clicks")
def add_object(request: ObjectRequest, session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.add_object(session, request))


@router.post("/api/images/{image_id}/objects/{obj_id}/points", response_model=SessionView,
             summary="Add a foreground or background click to an object")
def add_click(obj_id: int, request: ClickRequest, session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.add_click(session, obj_id, request))


@router.patch("/api/images/{image_id}/objects/{obj_id}", response_model=SessionView, summary="Rename an object")
def rename(obj_id: int, request: RenameRequest, session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.rename(session, obj_id, request.name))


@router.delete("/api/images/{image_id}/objects/{obj_id}", response_model=SessionView, summary="Remove an object")
def remove_object(obj_id: int, session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.remove_object(session, obj_id))


@router.post("/api/images/{image_id}/undo", response_model=SessionView, summary="Undo the last change")
def undo(session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.undo(session))


@router.post("/api/images/{image_id}/redo", response_model=SessionView, summary="Redo the last undone change")
def redo(session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.redo(session))


@router.post("/api/images/{image_id}/clear", response_model=SessionView, summary="Remove every object (undoable)")
def clear(session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.clear(session))


@router.get("/api/images/{image_id}/labels", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}},
            summary="One plane of the current label map (for display)")
def plane_labels(axis: int = Query(0, description="0 axial, 1 coronal, 2 sagittal"),
                 index: int = Query(0), session: WebSession = Depends(web_session)) -> Response:
    """Little-endian uint16 label ids, row by row; ``X-Shape`` gives rows,columns."""
    labels = interaction.plane_labels(session, axis, index)  # one immutable state: no lock needed
    data = np.ascontiguousarray(labels, dtype="<u2")
    return Response(data.tobytes(), media_type="application/octet-stream",
                    headers={"X-Shape": ",".join(map(str, labels.shape)), "X-Dtype": "uint16",
                             "Cache-Control": "no-store"})
