"""Options of the web app (``medsamkit serve``), grouped in one dataclass."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``medsamkit serve`` can set.

    Attributes:
        host, port: where uvicorn listens (loopback by default).
        data_dir: a folder whose files the page may open (None: uploads only).
        token: when set, every ``/api`` call must send it (``Authorization: Bearer TOKEN``).
        max_upload_mb: the largest accepted upload (HTTP 413 beyond).
        cache_mb: the embedding cache's bound, over all sessions (least recently used dropped).
        session_ttl_s: a session unused this long is deleted with everything it holds.
        max_sessions: sessions held at once; the least recently used one goes to make room.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path | None = None
    token: str | None = None
    max_upload_mb: float = 512.0
    cache_mb: float = 1024.0
    session_ttl_s: float = 3600.0
    max_sessions: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not between 0 and 65535")
        for name in ("max_upload_mb", "cache_mb", "session_ttl_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {self.max_sessions}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("a token must have at least 8 characters")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * 1024 * 1024)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
