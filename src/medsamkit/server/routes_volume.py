"""Volumes: slice ranges, propagation as a job, its progress as a stream, cancelling it."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from ..errors import InputError
from . import interaction
from .context import ServerContext, context, web_session
from .jobs import Job, JobStatus, event_stream
from .routes_objects import change
from .schemas import PropagateRequest, RangeRequest, SessionView
from .store import UnknownSession, WebSession

router = APIRouter(tags=["volumes"])


def _job(session: WebSession, job_id: str) -> Job:
    if session.job is None or session.job.id != job_id:
        raise UnknownSession("unknown job: only the image's latest propagation can be followed")
    return session.job


@router.patch("/api/images/{image_id}/objects/{obj_id}/range", response_model=SessionView,
              summary="Set the slices an object is to be propagated over (propagate applies it)")
def set_range(obj_id: int, request: RangeRequest, session: WebSession = Depends(web_session)) -> SessionView:
    return change(session, lambda: interaction.set_target(session, obj_id, request.z_range))


@router.post("/api/images/{image_id}/propagate", response_model=JobStatus, status_code=202,
             summary="Propagate objects over their slice ranges, in the background")
def propagate(request: PropagateRequest | None = None, session: WebSession = Depends(web_session),
              ctx: ServerContext = Depends(context)) -> JobStatus:
    """Starts a job; follow it with ``GET .../jobs/{job}/events`` (Server-Sent Events) or
    ``GET .../jobs/{job}``, stop it with ``DELETE .../jobs/{job}`` (the objects then stay as they were).
    While it runs, every change to the image, a second propagation included, gets 409."""
    with session.changing():
        ranges = interaction.pending(session, request.objects if request else None)
        if not ranges:
            raise InputError(session.record.name, "nothing to propagate: every object already covers its slice range")
        job = Job(lambda monitor: interaction.propagate(session, ranges, monitor), session.lock,
                  on_end=lambda job: _closed(ctx, session))
        session.job = job.start()  # its thread takes the lock once this request lets it go
        return job.status()


def _closed(ctx: ServerContext, session: WebSession) -> None:
    """A job of a closed session has ended: drop the embeddings it cached after the close."""
    if session.closed:
        ctx.engine.forget(session.id)


@router.get("/api/images/{image_id}/jobs/{job_id}", response_model=JobStatus, summary="A propagation's progress")
def job_status(job_id: str, session: WebSession = Depends(web_session)) -> JobStatus:
    return _job(session, job_id).status()


@router.get("/api/images/{image_id}/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}},
            summary="A propagation's progress as Server-Sent Events ('progress' events, then one 'end')")
def job_events(job_id: str, session: WebSession = Depends(web_session)) -> StreamingResponse:
    job = _job(session, job_id)
    return StreamingResponse(event_stream(job), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.delete("/api/images/{image_id}/jobs/{job_id}", response_model=JobStatus, status_code=202,
               summary="Cancel a propagation (before its next slice; nothing it did is kept)")
def cancel_job(job_id: str, session: WebSession = Depends(web_session)) -> JobStatus:
    job = _job(session, job_id)
    job.cancel()
    return job.status()
