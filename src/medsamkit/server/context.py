"""What every route needs: the server's config, engine and sessions, as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Path, Request

from .config import ServerConfig
from .engine import Engine
from .store import SessionStore, WebSession


@dataclass(frozen=True)
class ServerContext:
    config: ServerConfig
    engine: Engine
    store: SessionStore


def context(request: Request) -> ServerContext:
    return request.app.state.medsamkit


def web_session(request: Request, image_id: str = Path(description="the id POST /api/images returned")) -> WebSession:
    """The session named in the path (404 when unknown or expired)."""
    return context(request).store.get(image_id)
