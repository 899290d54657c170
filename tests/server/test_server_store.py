"""Sessions: found only by id, expire when idle, the least recently used idle one makes room."""

import threading

import numpy as np
import pytest

from medsamkit.io.geometry import Geometry
from medsamkit.server.images import ImageRecord
from medsamkit.server.jobs import Job
from medsamkit.server.security import new_id
from medsamkit.server.store import Busy, Full, SessionStore, UnknownSession, WebSession


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def session(name="a.png"):
    record = ImageRecord(name, False, np.zeros((4, 4), np.uint8), "grey8", Geometry((1, 1, 1)), None, None,
                         ".png", (0, 255))
    return WebSession(new_id(), record, interaction=None)


def test_ids_are_long_random_and_distinct():
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 for i in ids)


def test_sessions_expire_after_the_idle_time_and_report_as_unknown():
    clock, dropped = Clock(), []
    store = SessionStore(ttl_s=60, max_sessions=4, on_drop=dropped.append, clock=clock)
    a, b = session(), session()
    store.add(a)
    store.add(b)
    clock.now = 50
    store.get(a.id)  # a is used: its idle time starts again
    clock.now = 100
    assert store.sweep() == 1 and dropped == [b]
    assert store.get(a.id) is a
    with pytest.raises(UnknownSession, match="unknown or expired"):
        store.get(b.id)
    clock.now = 200
    with pytest.raises(UnknownSession):
        store.get(a.id)
    assert dropped == [b, a]


def test_a_full_store_drops_its_least_recently_used_idle_session():
    clock, dropped = Clock(), []
    store = SessionStore(ttl_s=1e9, max_sessions=2, on_drop=dropped.append, clock=clock)
    a, b, c = session(), session(), session()
    store.add(a)
    store.add(b)
    store.get(a.id)
    store.add(c)
    assert dropped == [b] and len(store) == 2


def test_sessions_with_running_jobs_are_kept_and_a_full_store_of_them_refuses():
    release = threading.Event()
    store = SessionStore(ttl_s=1e9, max_sessions=1)
    a = session()
    a.job = Job(lambda monitor: release.wait(5), threading.RLock()).start()
    store.add(a)
    with pytest.raises(Busy, match="propagation is running"):
        a.check_idle()
    with pytest.raises(Full, match="running propagations"):
        store.add(session())
    release.set()
    assert a.job.join(5)
    store.add(session())
    assert len(store) == 1


def test_remove_and_unknown_ids():
    store = SessionStore(ttl_s=60, max_sessions=2)
    a = session()
    store.add(a)
    store.remove(a.id)
    with pytest.raises(UnknownSession):
        store.remove(a.id)
    with pytest.raises(UnknownSession):
        store.get("not-a-session")


def test_a_change_is_refused_at_once_while_a_job_holds_the_session_and_waits_for_another_change():
    a = session()
    release, inside = threading.Event(), threading.Event()

    def work(monitor):
        inside.set()
        release.wait(5)

    a.job = Job(work, a.lock).start()
    assert inside.wait(5)
    with pytest.raises(Busy, match="propagation is running"):
        with a.changing():
            pass  # pragma: no cover - never entered
    a.job.cancel()
    with pytest.raises(Busy, match="being cancelled"):
        with a.changing():
            pass  # pragma: no cover
    release.set()
    assert a.job.join(5)
    # another change in progress (no job) is waited for, then the lock is had
    order = []

    def second():
        with a.changing():
            order.append("second")

    with a.changing():
        t = threading.Thread(target=second)
        t.start()
        t.join(0.3)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]
    # ... but not for ever
    a.change_wait_s = 0.2
    with a.changing():
        t = threading.Thread(target=lambda: order.append(pytest.raises(Busy, a.changing().__enter__)))
        t.start()
        t.join(5)
    assert "another change to this image is still being made" in str(order[-1].value)
