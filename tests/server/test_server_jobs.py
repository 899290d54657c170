"""Jobs: work in a thread under the session lock, progress, cancel, Server-Sent Events."""

import json
import threading

from medsamkit.errors import InputError
from medsamkit.server.jobs import CANCELLED, DONE, FAILED, Job, event_stream


def test_a_job_reports_its_progress_and_ends_done():
    seen = []

    def work(monitor):
        for z in range(4):
            monitor(z, 4, 10 + z)
            seen.append(z)

    job = Job(work, threading.RLock()).start()
    assert job.join(10)
    status = job.status()
    assert status.state == DONE and status.done == 4 and status.total == 4 and status.index == 13
    assert seen == [0, 1, 2, 3]


def test_cancel_stops_the_work_at_its_next_slice():
    started, release = threading.Event(), threading.Event()
    seen = []

    def work(monitor):
        for z in range(100):
            monitor(z, 100, z)
            seen.append(z)
            if z == 2:
                started.set()
                release.wait(5)

    job = Job(work, threading.RLock()).start()
    assert started.wait(5)
    job.cancel()
    release.set()
    assert job.join(5)
    assert job.status().state == CANCELLED
    assert seen == [0, 1, 2]  # slice 3's monitor call raised


def test_the_session_lock_is_held_while_the_work_runs():
    lock = threading.RLock()
    inside = threading.Event()
    release = threading.Event()

    def work(monitor):
        inside.set()
        release.wait(5)

    job = Job(work, lock).start()
    assert inside.wait(5)
    assert not lock.acquire(blocking=False)
    release.set()
    assert job.join(5)
    assert lock.acquire(blocking=False)
    lock.release()


def test_an_input_error_fails_the_job_with_its_message_and_end_runs():
    ended = []

    def work(monitor):
        raise InputError("vol.nii.gz", "slice 9 is outside 0..4")

    job = Job(work, threading.RLock(), on_end=ended.append).start()
    assert job.join(5)
    status = job.status()
    assert status.state == FAILED and status.message == "vol.nii.gz: slice 9 is outside 0..4"
    assert ended == [job]


def test_event_stream_sends_progress_events_then_one_end_event():
    release = threading.Event()

    def work(monitor):
        release.wait(5)
        for z in range(3):
            monitor(z, 3, z)

    job = Job(work, threading.RLock()).start()
    stream = event_stream(job, heartbeat_s=0.05)
    first = next(stream)  # the initial status, before any slice
    release.set()
    events = [first] + list(stream)
    kinds = [e.split("\n")[0] for e in events if not e.startswith(":")]
    assert kinds[-1] == "event: end" and set(kinds[:-1]) == {"event: progress"}
    last = json.loads(events[-1].split("data: ", 1)[1])
    assert last["state"] == DONE and last["done"] == 3 and last["total"] == 3
