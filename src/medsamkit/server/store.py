"""Sessions: one per opened image, reachable only by its unguessable id, dropped when idle.

A :class:`WebSession` holds the opened image, its interaction session and its running job; a
:class:`SessionStore` finds one by id (404 otherwise: unknown and expired look the same), drops
sessions unused for ``ttl_s`` seconds, and makes room for a new one by dropping the least
recently used idle session. No listing exists.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .images import ImageRecord
from .jobs import Job


class UnknownSession(LookupError):
    """No session with this id (never created, expired or closed)."""


class Busy(RuntimeError):
    """The session is running a job: changes must wait for it or cancel it."""


class Full(RuntimeError):
    """The server holds as many sessions as it may and none can be dropped now."""


@dataclass(eq=False)
class WebSession:
    """One opened image and everything the page did on it.

    Attributes:
        id: the session's secret id.
        record: the image as stored (display, downloads).
        interaction: the :mod:`medsamkit.inference.session` object the page drives.
        lock: held around every change of ``interaction`` (and each propagation step).
        names: the page's names of objects, by label id (shown and exported, never segmented).
        targets: volumes: the slice range each object is to be propagated over, by object id
            (the session's own range is what has been propagated so far).
        job: the running or last propagation.
        memo: the last full label volume with the objects it was made from (volumes).
        last_used: monotonic time of the last request.
        closed: set once the store has dropped the session (a job still ending then frees what
            it made).
    """

    id: str
    record: ImageRecord
    interaction: Any
    lock: threading.RLock = field(default_factory=threading.RLock)
    names: dict[int, str] = field(default_factory=dict)
    targets: dict[int, tuple[int, int]] = field(default_factory=dict)
    job: Job | None = None
    memo: tuple | None = None
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False

    #: How long a change waits for another change of the same image (a click on a volume may
    #: re-segment many slices) before it is refused; it never waits for a propagation.
    change_wait_s: float = 120.0

    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.running

    def check_idle(self) -> None:
        """Raise :class:`Busy` while a propagation runs (changes must wait for it or cancel it)."""
        job = self.job
        if job is not None and job.cancelling:
            raise Busy("the propagation on this image is being cancelled: try again in a moment")
        if job is not None and job.running:
            raise Busy("a propagation is running on this image: wait for it to end or cancel it")

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the session's lock for one change (or one consistent read of its objects).

        Refused with :class:`Busy` at once while a propagation runs (its job holds the lock: a
        request never queues behind it, and never runs between its slices); another change of
        this image in progress is waited for, up to :attr:`change_wait_s` seconds.
        """
        deadline = time.monotonic() + self.change_wait_s
        while True:
            self.check_idle()
            if self.lock.acquire(timeout=0.05):
                break
            if time.monotonic() > deadline:
                raise Busy("another change to this image is still being made: try again when it ends")
        try:
            self.check_idle()  # a propagation started just before the lock was had
            yield
        finally:
            self.lock.release()


class SessionStore:
    """Thread-safe id -> :class:`WebSession` map with expiry and a size bound.

    Args:
        ttl_s: idle seconds after which a session is dropped.
        max_sessions: sessions held at once.
        on_drop: called with each dropped session (free its cache entries, cancel its job).
        clock: time source (tests pass a fake one).
    """

    def __init__(self, ttl_s: float, max_sessions: int, on_drop: Callable[[WebSession], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._on_drop = on_drop
        self._clock = clock
        self._sessions: OrderedDict[str, WebSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def add(self, session: WebSession) -> None:
        dropped = self._expire()
        with self._lock:
            while len(self._sessions) >= self.max_sessions:
                idle = next((s for s in self._sessions.values() if not s.busy), None)
                if idle is None:
                    raise Full(f"the server already holds {self.max_sessions} images with running "
                               "propagations; try again when one ends")
                dropped.append(self._sessions.pop(idle.id))
            session.last_used = self._clock()
            self._sessions[session.id] = session
        self._dropped(dropped)

    def get(self, session_id: str) -> WebSession:
        """The session, marked as used now; :class:`UnknownSession` if none (or expired)."""
        dropped = self._expire()
        self._dropped(dropped)
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise UnknownSession("unknown or expired image session: open the image again")
            session.last_used = self._clock()
            self._sessions.move_to_end(session_id)
            return session

    def remove(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise UnknownSession("unknown or expired image session: open the image again")
        self._dropped([session])

    def clear(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        self._dropped(sessions)

    def sweep(self) -> int:
        """Drop the sessions idle for longer than ``ttl_s``; returns how many went."""
        dropped = self._expire()
        self._dropped(dropped)
        return len(dropped)

    def _expire(self) -> list[WebSession]:
        now = self._clock()
        with self._lock:
            stale = [s for s in self._sessions.values() if now - s.last_used > self.ttl_s and not s.busy]
            for s in stale:
                del self._sessions[s.id]
        return stale

    def _dropped(self, sessions: list[WebSession]) -> None:
        for s in sessions:
            s.closed = True
            if s.job is not None:
                s.job.cancel()
            if self._on_drop is not None:
                self._on_drop(s)
