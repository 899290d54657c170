"""The app factory: :func:`create_app` builds the FastAPI application of ``medsamkit serve``.

It wires the routes to one :class:`~.engine.Engine` and one :class:`~.store.SessionStore`, adds
the request guards (:mod:`.security`, the upload bound), turns every error a user can cause into
a 4xx answer with the CLI's message, and serves the page from ``static/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import InputError, MedsamkitError
from . import routes_export, routes_images, routes_objects, routes_volume
from .config import ServerConfig
from .context import ServerContext
from .engine import Engine
from .security import HostOriginGuard, SecurityHeaders, TokenGuard
from .store import Busy, Full, SessionStore, UnknownSession, WebSession
from .uploads import BodyLimit

log = logging.getLogger(__name__)

#: The page may load only its own files; nothing inline, nothing from elsewhere.
_PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def static_dir() -> Path:
    """The page's files, inside the installed package."""
    return Path(str(resources.files("medsamkit.server") / "static"))


def _detail(exc: Exception) -> str:
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "invalid request: " + "; ".join(parts)


def _add_error_handlers(app: FastAPI) -> None:
    def handler(status: int):
        async def respond(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": _detail(exc)}, status_code=status)
        return respond

    app.add_exception_handler(InputError, handler(400))
    app.add_exception_handler(MedsamkitError, handler(400))
    app.add_exception_handler(UnknownSession, handler(404))
    app.add_exception_handler(Busy, handler(409))
    app.add_exception_handler(Full, handler(503))

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)


def _on_drop(engine: Engine):
    def drop(session: WebSession) -> None:
        engine.forget(session.id)
        log.info("session %s... closed", session.id[:6])
    return drop


def create_app(config: ServerConfig, engine: Engine) -> FastAPI:
    """The web app for ``config``, segmenting with ``engine``'s model."""
    store = SessionStore(config.session_ttl_s, config.max_sessions, _on_drop(engine))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async def sweep() -> None:
            while True:
                await asyncio.sleep(min(60.0, config.session_ttl_s / 4))
                store.sweep()

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            store.clear()

    app = FastAPI(title="medsamkit", version=__version__, lifespan=lifespan,
                  description="Interactive segmentation with Segment-Anything-family models: open an image or a "
                              "volume, prompt it with boxes and clicks, get label maps. See docs/app.md.")
    app.state.medsamkit = ServerContext(config, engine, store)
    _add_error_handlers(app)

    guard = [Depends(TokenGuard(config.token))]
    for module in (routes_images, routes_objects, routes_volume, routes_export):
        app.include_router(module.router, dependencies=guard)

    page = static_dir()

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(page / "index.html", headers={"Content-Security-Policy": _PAGE_POLICY,
                                                          "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=page), name="static")

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(HostOriginGuard, loopback=config.loopback)
    return app
