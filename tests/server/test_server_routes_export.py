"""Downloads on the real LiteMedSAM: the label map (PNG; a volume's format with its geometry) and
the prompts file, which ``medsamkit segment --boxes-file`` replays to the same label map."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import ball_volume, disc_image

from medsamkit.cli.main import main
from medsamkit.io import read_volume, write_volume
from medsamkit.io.geometry import Geometry

GEOMETRY = Geometry(spacing=(4.0, 0.9, 0.8), origin=(-12.5, 30.0, 7.0),
                    direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def test_2d_label_map_and_prompts_replay_through_the_cli(make_client, tmp_path, capsys, cli_shares_the_model):
    client = make_client()
    image = tmp_path / "disc.png"
    cv2.imwrite(str(image), disc_image()[:, :, ::-1])
    sid = client.post("/api/images", files={"file": ("disc.png", image.read_bytes())}).json()["id"]
    client.post(f"/api/images/{sid}/objects", json={"box": [30, 20, 90, 80], "name": "lesion"})
    client.post(f"/api/images/{sid}/objects/1/points", json={"x": 60, "y": 50, "positive": False})
    client.post(f"/api/images/{sid}/objects/1/points", json={"x": 45, "y": 50, "positive": True})
    client.post(f"/api/images/{sid}/objects", json={"box": [96, 60, 124, 90]})
    r = client.get(f"/api/images/{sid}/download")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'attachment; filename="disc_labels.png"'
    downloaded = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert downloaded.shape == (96, 128) and (downloaded == 1).any()
    r = client.get(f"/api/images/{sid}/prompts")
    assert r.headers["content-disposition"] == 'attachment; filename="disc_prompts.json"'
    prompts = json.loads(r.content)
    assert prompts == [{"box": [30.0, 20.0, 90.0, 80.0], "label": 1, "points": [[60, 50, 0], [45, 50, 1]],
                        "name": "lesion"},
                       {"box": [96.0, 60.0, 124.0, 90.0], "label": 2}]
    (tmp_path / "prompts.json").write_bytes(r.content)
    out = tmp_path / "cli.png"
    assert main(["-q", "segment", str(image), "--boxes-file", str(tmp_path / "prompts.json"), "-o", str(out)]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), downloaded)


@pytest.mark.parametrize("click", [False, True], ids=["box", "box+click"])
def test_3d_download_keeps_the_geometry_and_the_cli_replays_it(make_client, tmp_path, capsys, click,
                                                              cli_shares_the_model):
    client = make_client()
    volume = tmp_path / "ball.nii.gz"
    write_volume(volume, ball_volume(), GEOMETRY)
    sid = client.post("/api/images", files={"file": ("ball.nii.gz", volume.read_bytes())}).json()["id"]
    client.post(f"/api/images/{sid}/objects", json={"box": [16, 12, 56, 52], "slice": 2})
    job = client.post(f"/api/images/{sid}/propagate", json={}).json()
    with client.stream("GET", f"/api/images/{sid}/jobs/{job['id']}/events") as stream:
        assert any('"state": "done"' in line for line in stream.iter_lines())
    if click:
        r = client.post(f"/api/images/{sid}/objects/1/points", json={"x": 36, "y": 32, "slice": 3, "positive": False})
        assert r.status_code == 200
    r = client.get(f"/api/images/{sid}/download")
    assert r.headers["content-disposition"] == 'attachment; filename="ball_labels.nii.gz"'
    (tmp_path / "web.nii.gz").write_bytes(r.content)
    web, geometry = read_volume(tmp_path / "web.nii.gz")
    assert geometry.same_as(GEOMETRY) and web.shape == (5, 64, 72) and web.dtype == np.uint8
    stacked = np.stack([np.frombuffer(client.get(f"/api/images/{sid}/labels", params={"index": z}).content, "<u2")
                        .reshape(64, 72) for z in range(5)])
    np.testing.assert_array_equal(web, stacked)
    assert web[1:4].any()
    prompts = client.get(f"/api/images/{sid}/prompts")
    (tmp_path / "prompts.json").write_bytes(prompts.content)
    entry = json.loads(prompts.content)[0]
    assert entry["slice"] == 2 and entry["z_range"] == [0, 4] and ("points" in entry) == click
    out = tmp_path / "cli.nii.gz"
    assert main(["-q", "segment", str(volume), "--boxes-file", str(tmp_path / "prompts.json"), "-o", str(out)]) == 0
    capsys.readouterr()
    cli, cli_geometry = read_volume(out)
    assert cli_geometry.same_as(geometry)
    np.testing.assert_array_equal(cli, web)
