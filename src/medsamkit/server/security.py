"""Who may call the server and what a request may touch.

- Session ids are 192-bit random strings (:func:`new_id`): knowing one is the only way into a
  session, and no endpoint lists them.
- :class:`TokenGuard`: with ``--token``, every ``/api`` call sends ``Authorization: Bearer TOKEN``
  (compared in constant time); the page reads the token from its URL fragment, which browsers do
  not send to the server.
- :class:`HostOriginGuard`: on a loopback server only loopback ``Host`` names are served (a web
  page that re-points its own domain at 127.0.0.1, "DNS rebinding", is refused), and a request
  that carries an ``Origin`` (a browser) must come from the page's own origin, so another site
  open in the same browser cannot drive the API.
- :func:`resolve_data_path`: a path the page asks for under ``--data`` must stay inside it: no
  absolute path, no ``..``, no symbolic link that leads out.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import InputError

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def new_id() -> str:
    """An unguessable identifier (32 URL-safe characters, 192 random bits)."""
    return secrets.token_urlsafe(24)


class TokenGuard:
    """A FastAPI dependency: checks the bearer token when the server has one."""

    def __init__(self, token: str | None) -> None:
        self._token = token
        self._bearer = HTTPBearer(auto_error=False, description="the --token given to medsamkit serve")

    async def __call__(self, request: Request) -> None:
        if self._token is None:
            return
        credentials: HTTPAuthorizationCredentials | None = await self._bearer(request)
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode("utf-8"), self._token.encode("utf-8")):
            raise HTTPException(401, "this server needs its token: send 'Authorization: Bearer TOKEN' "
                                     "(open the page with the URL medsamkit serve printed)",
                                headers={"WWW-Authenticate": "Bearer"})


def _hostname(host_header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostOriginGuard:
    """ASGI middleware refusing foreign ``Host`` names (loopback servers) and foreign ``Origin``s."""

    def __init__(self, app, loopback: bool) -> None:
        self.app = app
        self.loopback = loopback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        problem = None
        if self.loopback and _hostname(host) not in _LOOPBACK_NAMES:
            problem = f"host name {host!r} is not served: this server listens on loopback only"
        origin = headers.get("origin")
        if problem is None and origin is not None:
            if urlsplit(origin).netloc.lower() != host.lower():
                problem = f"requests from {origin} are refused: only the page served here may call the API"
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": problem}).encode("utf-8")
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": body})


def resolve_data_path(root: Path, relative: str) -> Path:
    """``relative`` (as the page sends it, '/'-separated) resolved inside ``root``.

    Raises :class:`InputError` naming ``relative`` for an absolute path, a ``..`` component, a
    path that does not exist, or one that leads outside ``root`` through a symbolic link.
    """
    text = str(relative).strip()
    if not text or text == ".":
        return root.resolve()
    if "\x00" in text:
        raise InputError(relative, "is not a valid path")
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or text.startswith(("/", "\\")):
        raise InputError(relative, "absolute paths are refused: give a path inside the data folder")
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(relative, "'..' is refused: give a path inside the data folder")
    base = root.resolve()
    candidate = base.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(relative, "no such file or folder in the data folder") from None
    except (OSError, RuntimeError) as exc:  # symlink loops and the like
        raise InputError(relative, f"cannot be opened ({exc})") from None
    if not resolved.is_relative_to(base):
        raise InputError(relative, "leads outside the data folder (a symbolic link) and is refused")
    return resolved


class SecurityHeaders:
    """ASGI middleware adding the usual hardening headers to every response."""

    _HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framed = scope.get("path", "").startswith("/docs")

        async def add_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = list(self._HEADERS) + ([] if framed else [(b"x-frame-options", b"DENY")])
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add_headers)
