"""The app as a whole: the page and its assets, /openapi.json and /docs, the token, host and
origin checks, unknown sessions, and serving on after errors."""

from __future__ import annotations

import re

import pytest
from conftest import disc_image, png_bytes

from medsamkit.server.app import static_dir

TOKEN = "s3cret-token-for-tests"


def test_the_page_and_its_assets_are_served_from_the_package(make_client):
    client = make_client()
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
    assert "/static/js/app.js" in assets and "/static/css/app.css" in assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    # no build step, nothing from elsewhere: every module the page imports is in the package
    for js in (static_dir() / "js").glob("*.js"):
        text = js.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text, js.name
        for module in re.findall(r'from "\./([^"]+)"', text):
            assert (static_dir() / "js" / module).is_file(), (js.name, module)
    assert client.get("/static/../app.py").status_code == 404


def test_openapi_and_docs(make_client):
    client = make_client()
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert "/api/images" in paths and "post" in paths["/api/images"]
    assert "/api/images/{image_id}/segment" in paths
    assert "image/png" in paths["/api/images/{image_id}/segment"]["post"]["responses"]["200"]["content"]
    assert "/api/images/{image_id}/jobs/{job_id}/events" in paths
    assert client.get("/docs").status_code == 200


def test_with_a_token_every_api_call_needs_it(make_client):
    client = make_client(token=TOKEN)
    assert client.get("/").status_code == 200  # the page itself is public; it reads the token from #token=
    for call in (lambda h: client.get("/api/config", headers=h),
                 lambda h: client.post("/api/images", files={"file": ("a.png", png_bytes(disc_image()))}, headers=h)):
        r = call({})
        assert r.status_code == 401 and "needs its token" in r.json()["detail"]
        assert call({"Authorization": "Bearer wrong-token-000"}).status_code == 401
    r = client.post("/api/images", files={"file": ("a.png", png_bytes(disc_image()))},
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201
    sid = r.json()["id"]
    assert client.get(f"/api/images/{sid}/state").status_code == 401
    assert client.get(f"/api/images/{sid}/state", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_foreign_host_names_and_origins_are_refused(make_client):
    client = make_client()
    r = client.get("/api/config", headers={"host": "attacker.example:8000"})
    assert r.status_code == 403 and "listens on loopback only" in r.json()["detail"]
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert client.get("/api/config", headers={"host": host}).status_code == 200
    r = client.post("/api/images", files={"file": ("a.png", b"x")}, headers={"origin": "http://attacker.example"})
    assert r.status_code == 403 and "only the page served here" in r.json()["detail"]
    assert client.get("/api/config", headers={"origin": "null"}).status_code == 403
    assert client.get("/api/config", headers={"origin": "http://127.0.0.1:8000"}).status_code == 200
    # off loopback (with --host 0.0.0.0 and a token) any host name is served; the token guards the API
    remote = make_client(host="0.0.0.0", token=TOKEN)
    assert remote.get("/api/config", headers={"host": "scanner-room-pc:8000",
                                              "Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/images/{id}"), ("GET", "/api/images/{id}/state"), ("GET", "/api/images/{id}/pixels"),
    ("GET", "/api/images/{id}/labels"), ("POST", "/api/images/{id}/undo"), ("GET", "/api/images/{id}/download"),
    ("GET", "/api/images/{id}/prompts"), ("DELETE", "/api/images/{id}"), ("POST", "/api/images/{id}/propagate"),
])
def test_an_unknown_session_is_404_everywhere(make_client, method, path):
    client = make_client()
    r = client.request(method, path.format(id="A" * 32))
    assert r.status_code == 404 and r.json()["detail"] == "unknown or expired image session: open the image again"


def test_expired_sessions_are_gone(make_client):
    client = make_client(session_ttl_s=0.001)
    sid = client.post("/api/images", files={"file": ("a.png", png_bytes(disc_image()))}).json()["id"]
    import time

    time.sleep(0.01)
    assert client.get(f"/api/images/{sid}/state").status_code == 404
    assert len(client.app.state.medsamkit.engine.cache) == 0  # its embedding went with it


def test_every_static_file_is_package_data():
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    globs = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["medsamkit.server"]
    root = static_dir().parent
    files = [p.relative_to(root).as_posix() for p in static_dir().rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
