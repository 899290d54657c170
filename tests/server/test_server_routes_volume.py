"""Volumes over HTTP on the real LiteMedSAM: an object on a slice, propagation as a job with
streamed progress, cancel, edits on another slice, and the API answering meanwhile."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from conftest import ball_volume, disc_image, engine_of, png_bytes

from medsamkit.io import write_volume
from medsamkit.io.geometry import Geometry

BOX = [16, 12, 56, 52]  # around the ball (centre 36, 32; radius 18 on the middle slice)


@pytest.fixture()
def volume(make_client, tmp_path):
    client = make_client()
    path = tmp_path / "ball.nii.gz"
    write_volume(path, ball_volume(), Geometry(spacing=(4.0, 1.0, 1.0)))
    r = client.post("/api/images", files={"file": ("ball.nii.gz", path.read_bytes())})
    assert r.status_code == 201, r.text
    return client, r.json()["id"]


def labels(client, sid, axis=0, index=2):
    r = client.get(f"/api/images/{sid}/labels", params={"axis": axis, "index": index})
    assert r.status_code == 200, r.text
    h, w = map(int, r.headers["x-shape"].split(","))
    return np.frombuffer(r.content, "<u2").reshape(h, w)


def follow(client, sid, job_id):
    """The job's events, read from its Server-Sent Events stream until the end event."""
    events = []
    with client.stream("GET", f"/api/images/{sid}/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def add_on_slice(client, sid, **extra):
    r = client.post(f"/api/images/{sid}/objects", json={"box": BOX, "slice": 2, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_box_on_a_slice_then_propagation_with_streamed_progress(volume):
    client, sid = volume
    state = add_on_slice(client, sid)
    obj = state["objects"][0]
    assert obj["slice"] == 2 and obj["z_range"] == [2, 2] and state["stale"]
    assert obj["target"] == [0, 4]  # the CLI's default for a 2D box: +- half its 40 px side, 4 mm slices
    assert labels(client, sid, index=2).any() and not labels(client, sid, index=1).any()
    state = client.patch(f"/api/images/{sid}/objects/1/range", json={"z_range": [1, 3]}).json()
    assert state["objects"][0]["target"] == [1, 3]
    r = client.post(f"/api/images/{sid}/propagate", json={})
    assert r.status_code == 202 and r.json()["state"] == "running"
    events = follow(client, sid, r.json()["id"])
    assert [k for k, _ in events][-1] == "end" and {k for k, _ in events[:-1]} <= {"progress"}
    end = events[-1][1]
    assert end["state"] == "done" and end["done"] == end["total"] == 2
    assert [e["index"] for k, e in events if k == "progress" and e["index"] is not None] == [3, 1]
    state = client.get(f"/api/images/{sid}/state").json()
    assert state["objects"][0]["z_range"] == [1, 3] and not state["stale"]
    masks = {z: labels(client, sid, index=z) for z in range(5)}
    assert all(masks[z].any() for z in (1, 2, 3)) and not masks[0].any() and not masks[4].any()
    coronal = labels(client, sid, axis=1, index=32)
    assert np.array_equal(coronal, np.stack([masks[z][32] for z in range(5)]))
    r = client.post(f"/api/images/{sid}/propagate", json={})
    assert r.status_code == 400 and "nothing to propagate" in r.json()["detail"]


def test_a_click_on_another_slice_updates_it_and_undo_restores(volume):
    client, sid = volume
    add_on_slice(client, sid, z_range=[1, 3])
    job = client.post(f"/api/images/{sid}/propagate", json={}).json()
    follow(client, sid, job["id"])
    before = {z: labels(client, sid, index=z) for z in range(5)}
    state = client.post(f"/api/images/{sid}/objects/1/points",
                        json={"x": 36, "y": 32, "slice": 3, "positive": False}).json()
    assert state["objects"][0]["points"] == [[36, 32, 3, 0]]
    after = {z: labels(client, sid, index=z) for z in range(5)}
    assert not np.array_equal(after[3], before[3]) and np.array_equal(after[2], before[2])
    client.post(f"/api/images/{sid}/undo")
    assert all(np.array_equal(labels(client, sid, index=z), before[z]) for z in range(5))
    r = client.post(f"/api/images/{sid}/objects/1/points", json={"x": 36, "y": 32, "positive": True})
    assert r.status_code == 400 and "give the 'slice'" in r.json()["detail"]


def test_cancel_leaves_the_object_as_it_was_and_the_api_answers_while_it_runs(volume, make_client):
    client, sid = volume
    add_on_slice(client, sid)
    other = client.post("/api/images", files={"file": ("d.png", png_bytes(disc_image()))}).json()["id"]
    engine = engine_of(client)
    with engine.lock:  # the model is busy: the job waits inside its first slice
        job = client.post(f"/api/images/{sid}/propagate", json={}).json()
        # while it runs: reads answer, changes are refused with 409, other images work
        assert client.get(f"/api/images/{sid}/state").json()["job"]["state"] == "running"
        assert labels(client, sid, index=2).any()
        assert client.get(f"/api/images/{sid}/pixels", params={"index": 0}).status_code == 200
        r = client.post(f"/api/images/{sid}/objects", json={"box": BOX, "slice": 1})
        assert r.status_code == 409 and "propagation is running" in r.json()["detail"]
        assert client.get(f"/api/images/{sid}/download").status_code == 409
        assert client.get(f"/api/images/{other}/state").status_code == 200
        r = client.delete(f"/api/images/{sid}/jobs/{job['id']}")
        assert r.status_code == 202
    events = follow(client, sid, job["id"])
    assert events[-1][1]["state"] == "cancelled"
    state = client.get(f"/api/images/{sid}/state").json()
    assert state["objects"][0]["z_range"] == [2, 2] and state["stale"]
    assert client.get(f"/api/images/{sid}/jobs/not-a-job").status_code == 404


def test_one_off_segment_on_a_slice_and_volume_errors(volume):
    client, sid = volume
    r = client.post(f"/api/images/{sid}/segment", json={"boxes": [BOX], "slice": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    for body, problem in (({"boxes": [BOX]}, "is a volume: give the 'slice'"),
                          ({"boxes": [BOX], "slice": 9}, "slice 9 is outside the volume's slices 0..4"),
                          ({"boxes": [[16, 70, 56, 99]], "slice": 2}, "ball.nii.gz slice 2: box 16,70,56,99 lies outside")):
        r = client.post(f"/api/images/{sid}/segment", json=body)
        assert r.status_code == 400 and problem in r.json()["detail"], r.json()
    r = client.patch(f"/api/images/{sid}/objects/1/range", json={"z_range": [0, 4]})
    assert r.status_code == 400 and "no object 1" in r.json()["detail"]
    add_on_slice(client, sid)
    r = client.patch(f"/api/images/{sid}/objects/1/range", json={"z_range": [3, 4]})
    assert r.status_code == 400 and "leaves out the object's slice 2" in r.json()["detail"]


# ------------------------------------------------------------------ a propagation against the rest
@pytest.fixture()
def paused_propagation(monkeypatch):
    """Propagations stop before their second slice (after its progress) until ``gate`` is set
    (``paused`` says they are there); the job then holds the image's lock and not the model's."""
    from medsamkit.server import interaction

    gate, paused = threading.Event(), threading.Event()
    real = interaction.propagate

    def propagate(session, ranges, monitor):
        def held(done, total, index):
            monitor(done, total, index)  # a cancel stops the job here
            if done == 1 and not gate.is_set():
                paused.set()
                assert gate.wait(60), "the test never released the propagation"
        real(session, ranges, held)

    monkeypatch.setattr(interaction, "propagate", propagate)
    return gate, paused


def test_a_running_propagation_is_neither_overtaken_nor_interleaved(volume, paused_propagation):
    client, sid = volume
    gate, paused = paused_propagation
    other = client.post("/api/images", files={"file": ("d.png", png_bytes(disc_image()))}).json()["id"]
    add_on_slice(client, sid, z_range=[0, 4])
    job = client.post(f"/api/images/{sid}/propagate", json={}).json()
    assert paused.wait(60)
    # every change of this image is refused at once (none waits for the job, none runs between its slices)
    for method, path, body in (("POST", "propagate", {}), ("POST", "objects", {"box": BOX, "slice": 1}),
                               ("POST", "objects/1/points", {"x": 36, "y": 32, "slice": 3, "positive": False}),
                               ("PATCH", "objects/1", {"name": "ball"}), ("PATCH", "objects/1/range", {"z_range": [1, 3]}),
                               ("DELETE", "objects/1", None), ("POST", "undo", None), ("POST", "clear", None),
                               ("GET", "prompts", None), ("GET", "download", None)):
        r = client.request(method, f"/api/images/{sid}/{path}", json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["detail"] == "a propagation is running on this image: wait for it to end or cancel it"
    # reads of this image and everything on other images are answered
    assert client.get(f"/api/images/{sid}/state").json()["job"]["state"] == "running"
    assert client.post(f"/api/images/{other}/segment", json={"boxes": [[30, 20, 90, 80]]}).status_code == 200
    assert client.post(f"/api/images/{other}/objects", json={"box": [30, 20, 90, 80]}).status_code == 201
    client.delete(f"/api/images/{sid}/jobs/{job['id']}")
    r = client.post(f"/api/images/{sid}/undo")
    assert r.status_code == 409 and "being cancelled" in r.json()["detail"]
    gate.set()
    assert follow(client, sid, job["id"])[-1][1]["state"] == "cancelled"
    # the moment the end is announced, the image takes changes again
    assert client.patch(f"/api/images/{sid}/objects/1", json={"name": "ball"}).status_code == 200
    job = client.post(f"/api/images/{sid}/propagate", json={}).json()
    assert follow(client, sid, job["id"])[-1][1]["state"] == "done"
    state = client.get(f"/api/images/{sid}/state").json()
    assert state["objects"][0]["z_range"] == [0, 4] and state["objects"][0]["name"] == "ball"


def test_closing_an_image_cancels_its_propagation_and_frees_its_embeddings(volume, paused_propagation):
    client, sid = volume
    gate, paused = paused_propagation
    add_on_slice(client, sid, z_range=[0, 4])
    job = client.post(f"/api/images/{sid}/propagate", json={}).json()
    assert paused.wait(60)
    session = client.app.state.medsamkit.store.get(sid)
    assert client.delete(f"/api/images/{sid}").status_code == 204
    assert client.get(f"/api/images/{sid}/state").status_code == 404
    gate.set()  # the job segments its second slice, then sees the cancel
    assert session.job.join(60) and session.job.status().state == "cancelled"
    assert session.closed and engine_of(client).cache.drop_owner(sid) == 0
    assert job["id"] == session.job.id


class SlowEncoder:
    """The real encoder, slowed down: a long propagation however fast the machine."""

    def __init__(self, encoder, seconds: float) -> None:
        self.encoder, self.seconds = encoder, seconds

    def __call__(self, tensor):
        time.sleep(self.seconds)
        return self.encoder(tensor)


def test_other_images_are_answered_between_the_slices_of_a_long_propagation(base_predictor, tmp_path):
    """The model lock is taken per encoder or decoder call: requests of other images get their
    turn between a propagation's slices, not after it."""
    from fastapi.testclient import TestClient

    from medsamkit.inference.predictor import Predictor
    from medsamkit.server.app import create_app
    from medsamkit.server.config import ServerConfig
    from medsamkit.server.engine import Engine

    slow = Predictor(base_predictor.model, base_predictor.geometry, SlowEncoder(base_predictor.encoder, 0.5))
    path = tmp_path / "ball.nii.gz"
    write_volume(path, ball_volume(nz=7), Geometry(spacing=(1.0, 1.0, 1.0)))
    with TestClient(create_app(ServerConfig(), Engine(slow, 1 << 30, "litemedsam")),
                    base_url="http://127.0.0.1:8000") as client:
        vol = client.post("/api/images", files={"file": ("ball.nii.gz", path.read_bytes())}).json()["id"]
        other = client.post("/api/images", files={"file": ("d.png", png_bytes(disc_image()))}).json()["id"]
        r = client.post(f"/api/images/{vol}/objects", json={"box": BOX, "slice": 3, "z_range": [0, 6]})
        assert r.status_code == 201, r.text
        job = client.post(f"/api/images/{vol}/propagate", json={}).json()
        answered_during = 0
        while True:
            r = client.post(f"/api/images/{other}/segment", json={"boxes": [[30, 20, 90, 80]]})
            assert r.status_code == 200
            status = client.get(f"/api/images/{vol}/jobs/{job['id']}").json()
            if status["state"] != "running":
                break
            answered_during += 1
        assert status["state"] == "done" and status["done"] == 6
        assert answered_during >= 2, status
