"""Uploads: a bound on request bodies, saving an upload under a safe name, unpacking zips.

The client's file name is never used as a path: only its ending is kept (it picks the reader).
A zip (a DICOM series, or one image or volume file) is unpacked with every member checked: no
absolute path or ``..``, no links, a bounded number of files and unpacked bytes.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..io.image2d import SUPPORTED_2D_SUFFIXES
from ..io.volume import volume_suffix

_MAX_ZIP_MEMBERS = 5000


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware answering 413 to a request whose body passes ``max_bytes``.

    A declared ``Content-Length`` over the bound is refused before anything is read; a body
    without one is counted as it arrives and cut off at the bound.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (f"the upload is larger than this server's limit of {self.max_bytes / 2**20:.3g} MB "
                "(medsamkit serve --max-upload-mb)")

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": self._message()}).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode("ascii")),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)


def file_ending(name: str) -> str:
    """The reader-relevant ending of a client file name (``.nii.gz``, ``.png``, ``.zip``, or '')."""
    lower = PurePosixPath(str(name).replace("\\", "/")).name.lower()
    vol = volume_suffix(lower)
    if vol is not None:
        return vol
    suffix = PurePosixPath(lower).suffix
    # any plain ending is kept, so that the reader's message names it ("unsupported file type '.txt'")
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ""


def display_name(name: str | None) -> str:
    """The client's file name, without any folder part, for messages (never used as a path)."""
    base = PurePosixPath(str(name or "upload").replace("\\", "/")).name
    return "".join(c for c in base if c.isprintable())[:200] or "upload"


def save_stream(stream, folder: Path, name: str, max_bytes: int) -> Path:
    """Copy a file-like ``stream`` to ``folder/upload<ending>``; refuses more than ``max_bytes``."""
    target = folder / f"upload{file_ending(name)}"
    written = 0
    with target.open("wb") as out:
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            written += len(chunk)
            if written > max_bytes:
                raise InputError(display_name(name), f"is larger than the limit of {max_bytes / 2**20:.3g} MB")
            out.write(chunk)
    if written == 0:
        raise InputError(display_name(name), "the uploaded file is empty")
    return target


def unpack_zip(archive: Path, folder: Path, name: str, max_bytes: int) -> Path:
    """Unpack ``archive`` into ``folder``; return what to open: its one image/volume file, or the folder.

    Raises :class:`InputError` naming ``name`` for a file that is not a zip, a member with an
    absolute path, ``..`` or a link, too many members, or more than ``max_bytes`` unpacked.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise InputError(name, "is not a readable zip archive") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise InputError(name, "the zip archive is empty")
        if len(members) > _MAX_ZIP_MEMBERS:
            raise InputError(name, f"the zip holds {len(members)} files; at most {_MAX_ZIP_MEMBERS} are accepted")
        if sum(m.file_size for m in members) > max_bytes:
            raise InputError(name, f"unpacks to more than the limit of {max_bytes / 2**20:.3g} MB")
        root = folder.resolve()
        for m in members:
            path = PurePosixPath(m.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or (m.external_attr >> 16) & 0o170000 == stat.S_IFLNK:
                raise InputError(name, f"member {m.filename!r} is refused (absolute path, '..' or a link)")
            target = (root / path).resolve()
            if not target.is_relative_to(root):
                raise InputError(name, f"member {m.filename!r} would unpack outside its folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(name, f"member {m.filename!r} cannot be unpacked ({exc})") from None
    files = [f for f in root.rglob("*") if f.is_file() and not f.name.startswith(".")]
    known = [f for f in files if volume_suffix(f) or f.suffix.lower() in SUPPORTED_2D_SUFFIXES]
    if len(files) == 1 and known and known[0].suffix.lower() not in (".dcm", ".dicom"):
        return known[0]
    folders = {f.parent for f in files}
    return folders.pop() if len(folders) == 1 else root

