"""``medsamkit serve``: the interactive web app (FastAPI under uvicorn), on loopback by default."""

from __future__ import annotations

import argparse
import logging
import secrets
from pathlib import Path

from ..errors import InputError, MedsamkitError
from .common import add_model_options

HELP = "start the interactive web app (draw boxes and clicks in the browser)"
log = logging.getLogger("medsamkit.cli")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help=HELP, description=HELP + ". Opens 2D images and volumes from the browser (or from --data), "
        "segments them with the model loaded once, and downloads label maps and the prompts file that "
        "medsamkit segment --boxes-file replays. See docs/app.md.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--data", metavar="DIR", help="a folder whose files the page may open (nothing outside it)")
    p.add_argument("--token", metavar="T", help="require this token on every API call (needed off loopback; "
                   "'random' makes one)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, metavar="N", help="largest upload (default 512 MB)")
    p.add_argument("--cache-mb", type=float, default=1024.0, metavar="N",
                   help="image embeddings kept over all sessions (default 1024 MB, least recently used dropped)")
    p.add_argument("--session-minutes", type=float, default=60.0, metavar="M",
                   help="an image unused this long is closed and forgotten (default 60)")
    p.add_argument("--max-sessions", type=int, default=8, metavar="N", help="images open at once (default 8)")
    add_model_options(p)
    p.set_defaults(run=run)


def _config(args: argparse.Namespace):
    from ..server.config import ServerConfig

    data = None
    if args.data is not None:
        data = Path(args.data)
        if not data.is_dir():
            raise InputError(args.data, "--data must be an existing folder")
    token = secrets.token_urlsafe(24) if args.token == "random" else args.token
    try:
        return ServerConfig(host=args.host, port=args.port, data_dir=data, token=token,
                            max_upload_mb=args.max_upload_mb, cache_mb=args.cache_mb,
                            session_ttl_s=args.session_minutes * 60, max_sessions=args.max_sessions)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None


def page_url(host: str, port: int, token: str | None) -> str:
    """The address to open; the token travels in the fragment, which is never sent to the server."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"#token={token}" if token else "")


def bind(host: str, port: int):
    """A socket listening on ``host:port`` (port 0: a free one), for uvicorn to serve."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        sock.close()
        raise InputError(None, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve_forever(app, sock) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    server.run(sockets=[sock])


def _check_app_installed() -> None:
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise MedsamkitError(f"medsamkit serve needs {', '.join(missing)}: pip install 'medsamkit[app]'")


def run(args: argparse.Namespace) -> int:
    from .common import check_model_options, make_predictor

    _check_app_installed()
    check_model_options(args)
    config = _config(args)
    if not config.loopback and config.token is None:
        log.warning("--host %s is reachable from other machines and this server has no authentication: "
                    "anyone who can reach it can upload images and read results. Add --token T "
                    "(or --token random), or keep the default 127.0.0.1.", config.host)
    from ..training.export_metadata import is_baseline_checkpoint
    from ..server.app import create_app
    from ..server.engine import Engine

    if is_baseline_checkpoint(args.checkpoint):
        raise InputError(args.checkpoint, "is a baseline (unet/prompted-resnet); the app needs a SAM-family model "
                                          "(LiteMedSAM, MedSAM, SAM or one fine-tuned from them)")
    sock = bind(config.host, config.port)
    predictor, loaded = make_predictor(args)
    app = create_app(config, Engine(predictor, config.cache_bytes, loaded.spec.name))
    port = sock.getsockname()[1]
    print(f"medsamkit serve: {loaded.spec.name} ready; open {page_url(config.host, port, config.token)}", flush=True)
    print("press Ctrl+C to stop", flush=True)
    serve_forever(app, sock)
    return 0
