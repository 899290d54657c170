"""Paths under --data stay inside it; host names and origins are checked (the app-level checks
are in test_server_app.py)."""

import os

import pytest

from medsamkit.errors import InputError
from medsamkit.server.security import _hostname, resolve_data_path


@pytest.fixture()
def data(tmp_path):
    root = tmp_path / "data"
    (root / "cases" / "a").mkdir(parents=True)
    (root / "cases" / "a" / "img.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("secret", encoding="utf-8")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    os.symlink(tmp_path, root / "up")
    os.symlink(root / "cases" / "a" / "img.png", root / "alias.png")
    return root


def test_paths_inside_the_folder_resolve(data):
    assert resolve_data_path(data, "cases/a/img.png") == (data / "cases" / "a" / "img.png").resolve()
    assert resolve_data_path(data, "cases\\a") == (data / "cases" / "a").resolve()
    assert resolve_data_path(data, "") == data.resolve()
    assert resolve_data_path(data, "alias.png") == (data / "cases" / "a" / "img.png").resolve()


@pytest.mark.parametrize("path, problem", [
    ("../secret.txt", "'..' is refused"),
    ("cases/../../secret.txt", "'..' is refused"),
    ("/etc/passwd", "absolute paths are refused"),
    ("\\\\server\\share", "absolute paths are refused"),
    ("C:/Windows", "absolute paths are refused"),
    ("leak.txt", "leads outside the data folder"),
    ("up/secret.txt", "leads outside the data folder"),
    ("cases/none.png", "no such file"),
])
def test_paths_leading_out_are_refused_with_the_reason(data, path, problem):
    with pytest.raises(InputError, match=problem) as err:
        resolve_data_path(data, path)
    assert err.value.source == path


@pytest.mark.parametrize("header, name", [
    ("127.0.0.1:8000", "127.0.0.1"), ("localhost", "localhost"), ("[::1]:8000", "::1"),
    ("Example.COM:80", "example.com"), ("::1", "::1"),
])
def test_host_header_names(header, name):
    assert _hostname(header) == name
