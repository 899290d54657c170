"""Volumes over HTTP on the real LiteMedSAM: an object on a slice, propagation as a job with
streamed progress, cancel, edits on another slice, and the API answering meanwhile."""

from __future__ import annotations

import json
import threading

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
