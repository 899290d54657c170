"""Long work (3D propagation) in a worker thread, with progress a client can follow and cancel.

A :class:`Job` runs one session operation in its own thread, holding the session's lock, and
hands the operation a *monitor* (:data:`medsamkit.inference.session3d.Monitor`) that the session
calls before each slice: it records the progress and, once :meth:`Job.cancel` was called,
raises :class:`Cancelled`, which stops the operation and leaves the session as it was. Requests
that only read (the current label map, the state) keep being answered meanwhile;
:func:`event_stream` turns the progress into Server-Sent Events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from ..errors import MedsamkitError
from .security import new_id

log = logging.getLogger(__name__)

RUNNING, DONE, CANCELLED, FAILED = "running", "done", "cancelled", "error"


class Cancelled(Exception):
    """Raised by a job's monitor to stop the operation it follows."""


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands: ``done`` of ``total`` slices (``total`` is an upper bound: a walk may
    stop early); ``index`` the slice being segmented; ``version`` grows with every change."""

    id: str
    state: str
    done: int
    total: int
    index: int | None
    message: str
    seconds: float
    version: int

    def to_json(self) -> dict:
        return asdict(self)


class Job:
    """Runs ``work(monitor)`` in a thread while holding ``lock``.

    Args:
        work: the operation; it passes ``monitor`` to the session.
        lock: the session's lock, held for the whole operation.
        on_end: called in the job's thread after the work has ended (whatever happened) and the
            lock is released.
    """

    def __init__(self, work: Callable[[Callable[[int, int, int], None]], object], lock: threading.RLock,
                 on_end: Callable[[Job], None] | None = None) -> None:
        self.id = new_id()
        self._work = work
        self._lock = lock
        self._on_end = on_end
        self._cancel = threading.Event()
        self._changed = threading.Condition()
        self._state, self._message = RUNNING, ""
        self._done, self._total, self._index = 0, 0, None
        self._version = 0
        self._start = time.perf_counter()
        self._end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"medsamkit-job-{self.id[:6]}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._state == RUNNING

    @property
    def cancelling(self) -> bool:
        """Running, but asked to stop (it will before its next slice)."""
        return self._state == RUNNING and self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop before its next slice (returns at once)."""
        self._cancel.set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> JobStatus:
        with self._changed:
            end = self._end if self._end is not None else time.perf_counter()
            return JobStatus(self.id, self._state, self._done, self._total, self._index, self._message,
                             round(end - self._start, 3), self._version)

    def wait(self, version: int, timeout: float) -> JobStatus:
        """The status once its version differs from ``version`` (or after ``timeout`` seconds)."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout)
        return self.status()

    def _monitor(self, done: int, total: int, index: int) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        with self._changed:
            self._done, self._total, self._index = done, total, index
            self._version += 1
            self._changed.notify_all()

    def _finish(self, state: str, message: str) -> None:
        with self._changed:
            if state == DONE:
                self._done = max(self._done, self._total)
            self._state, self._message = state, message
            self._end = time.perf_counter()
            self._version += 1
            self._changed.notify_all()

    def _run(self) -> None:
        with self._lock:
            state, message = self._execute()
            # the end is recorded before the lock goes: a request that gets the lock next sees
            # the job ended (never a running job that has already let go of the session)
            self._finish(state, message)
        if self._on_end is not None:
            try:
                self._on_end(self)
            except Exception:
                log.exception("job %s: end callback failed", self.id)

    def _execute(self) -> tuple[str, str]:
        try:
            if self._cancel.is_set():
                raise Cancelled()
            self._work(self._monitor)
        except Cancelled:
            return CANCELLED, "cancelled: nothing was changed"
        except MedsamkitError as exc:
            return FAILED, str(exc)
        except Exception as exc:  # a bug: keep serving, tell the client, log the traceback
            log.exception("job %s failed", self.id)
            return FAILED, f"internal error: {type(exc).__name__}: {exc}"
        return DONE, ""


def event_stream(job: Job, heartbeat_s: float = 10.0) -> Iterator[str]:
    """Server-Sent Events for ``job``: ``progress`` events, then one ``end`` event."""
    version = -1
    while True:
        status = job.wait(version, heartbeat_s)
        if status.version == version:
            yield ": keep-alive\n\n"
            continue
        version = status.version
        kind = "progress" if status.state == RUNNING else "end"
        yield f"event: {kind}\ndata: {json.dumps(status.to_json())}\n\n"
        if kind == "end":
            return
