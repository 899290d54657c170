"""Uploads: safe names, size bounds, zips unpacked with every member checked."""

import io
import os
import stat
import zipfile

import pytest

from medsamkit.errors import InputError
from medsamkit.server.uploads import display_name, file_ending, save_stream, unpack_zip


@pytest.mark.parametrize("name, ending", [
    ("ct.nii.gz", ".nii.gz"), ("CT.NII.GZ", ".nii.gz"), ("a/b/scan.mha", ".mha"), ("x.png", ".png"),
    ("series.zip", ".zip"), ("IM0001", ""), ("notes.txt", ".txt"), ("evil.png/../../x", ""), ("a.p n g", ""),
])
def test_only_the_ending_of_the_clients_name_is_kept(name, ending):
    assert file_ending(name) == ending


def test_display_names_drop_folders_and_control_characters():
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\me\\scan.nii.gz") == "scan.nii.gz"
    assert display_name("a\x00b\nc.png") == "abc.png"
    assert display_name(None) == "upload"


def test_save_stream_refuses_empty_and_oversize_files(tmp_path):
    path = save_stream(io.BytesIO(b"x" * 100), tmp_path, "../scan.png", max_bytes=100)
    assert path == tmp_path / "upload.png" and path.stat().st_size == 100
    with pytest.raises(InputError, match="larger than the limit"):
        save_stream(io.BytesIO(b"x" * 101), tmp_path, "scan.png", max_bytes=100)
    with pytest.raises(InputError, match="empty"):
        save_stream(io.BytesIO(b""), tmp_path, "scan.png", max_bytes=100)


def _zip(tmp_path, members, name="up.zip"):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            if isinstance(member, zipfile.ZipInfo):
                zf.writestr(member, data)
            else:
                zf.writestr(member, data)
    return path


def test_a_zip_of_one_volume_opens_that_file_and_of_a_series_its_folder(tmp_path):
    one = _zip(tmp_path, {"inner/scan.nii.gz": b"nifti"}, "one.zip")
    (tmp_path / "u1").mkdir()
    assert unpack_zip(one, tmp_path / "u1", "one.zip", 10_000).name == "scan.nii.gz"
    series = _zip(tmp_path, {f"study/series/IM{i:04d}": b"dicom" for i in range(3)}, "series.zip")
    (tmp_path / "u2").mkdir()
    folder = unpack_zip(series, tmp_path / "u2", "series.zip", 10_000)
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["IM0000", "IM0001", "IM0002"]


@pytest.mark.parametrize("member", ["../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm"])
def test_members_leading_out_are_refused(tmp_path, member):
    archive = _zip(tmp_path, {member: b"x"})
    (tmp_path / "u").mkdir()
    with pytest.raises(InputError, match="is refused|outside"):
        unpack_zip(archive, tmp_path / "u", "up.zip", 10_000)
    assert not (tmp_path / "evil.dcm").exists()


def test_links_in_zips_are_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path, {info: "/etc/passwd"})
    (tmp_path / "u").mkdir()
    with pytest.raises(InputError, match="link"):
        unpack_zip(archive, tmp_path / "u", "up.zip", 10_000)


def test_zip_bombs_and_non_zips_are_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.dcm", b"\0" * 2_000_000)
    assert bomb.stat().st_size < 20_000
    (tmp_path / "u").mkdir()
    with pytest.raises(InputError, match="unpacks to more than the limit"):
        unpack_zip(bomb, tmp_path / "u", "bomb.zip", 1_000_000)
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="fake.zip: is not a readable zip"):
        unpack_zip(fake, tmp_path / "u", "fake.zip", 1_000_000)
    assert os.listdir(tmp_path / "u") == []


def test_the_body_limit_cuts_off_a_stream_without_content_length():
    import asyncio

    from medsamkit.server.uploads import BodyLimit

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def run(chunks, headers=()):
        queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent = []

        async def receive():
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        await BodyLimit(app, max_bytes=100)({"type": "http", "headers": list(headers)}, receive, send)
        return sent[0]["status"]

    assert asyncio.run(run([b"x" * 60, b"x" * 30])) == 200
    assert asyncio.run(run([b"x" * 60, b"x" * 60])) == 413
    assert asyncio.run(run([b"x"], [(b"content-length", b"5000")])) == 413
