"""Opening images (upload, or a file under ``--data``), showing their planes, closing them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from .. import __version__
from ..errors import InputError
from ..preprocessing.intensity import WINDOW_PRESETS
from . import interaction
from .context import ServerContext, context, web_session
from .images import ImageRecord, open_image
from .schemas import FileEntry, FileListing, ImageInfo, OpenRequest, ServerInfo
from .security import new_id, resolve_data_path
from .store import WebSession
from .uploads import display_name, file_ending, save_stream, unpack_zip

router = APIRouter(tags=["images"])


@router.get("/api/config", response_model=ServerInfo, summary="What the page needs to know about this server")
def server_info(ctx: ServerContext = Depends(context)) -> ServerInfo:
    return ServerInfo(version=__version__, model=ctx.engine.name, data=ctx.config.data_dir is not None,
                      max_upload_mb=ctx.config.max_upload_mb,
                      window_presets={k: list(v) for k, v in WINDOW_PRESETS.items() if k != "chest"})


@router.get("/api/files", response_model=FileListing, summary="List a folder under --data")
def list_files(path: str = Query("", description="a folder inside the data folder, '/'-separated"),
               ctx: ServerContext = Depends(context)) -> FileListing:
    root = _data_root(ctx)
    folder = resolve_data_path(root, path)
    if not folder.is_dir():
        raise InputError(path, "is a file, not a folder")
    base = root.resolve()
    entries = []
    for child in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
        if child.name.startswith("."):
            continue
        try:
            real = child.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not real.is_relative_to(base):
            continue  # a link out of the data folder is not shown (and refused if asked for)
        rel = real.relative_to(base).as_posix() if not child.is_symlink() else child.relative_to(base).as_posix()
        entries.append(FileEntry(name=child.name, path=rel, folder=real.is_dir(),
                                 size=None if real.is_dir() else real.stat().st_size))
    here = folder.relative_to(base).as_posix() if folder != base else ""
    return FileListing(path=here, entries=entries)


@router.post("/api/images", response_model=ImageInfo, status_code=201,
             summary="Upload a 2D image or a volume (a DICOM series as a zip)")
def upload_image(file: UploadFile = File(..., description="PNG, JPEG, BMP, TIFF, NPY, NPZ, DICOM, NIfTI, MHA, "
                                                           "NRRD, or a zip of a DICOM series"),
                 modality: str | None = Form(None, description="intensity scheme, as medsamkit segment --modality"),
                 window: str | None = Form(None, description="CT window preset or L,W, as --window"),
                 ctx: ServerContext = Depends(context)) -> ImageInfo:
    name = display_name(file.filename)
    with tempfile.TemporaryDirectory(prefix="medsamkit-upload-") as tmp:
        folder = Path(tmp)
        path = save_stream(file.file, folder, name, ctx.config.max_upload_bytes)
        if file_ending(name) == ".zip":
            unpacked = folder / "unpacked"
            unpacked.mkdir()
            path = unpack_zip(path, unpacked, name, ctx.config.max_upload_bytes)
        record = open_image(path, name, _option(modality), _option(window))
    return _start(ctx, record)


@router.post("/api/images/open", response_model=ImageInfo, status_code=201,
             summary="Open a file (or DICOM folder) under --data")
def open_data_file(body: OpenRequest, ctx: ServerContext = Depends(context)) -> ImageInfo:
    path = resolve_data_path(_data_root(ctx), body.path)
    if path.is_dir() and not any(p.is_file() for p in path.iterdir()):
        raise InputError(body.path, "is a folder without files (a DICOM series folder holds its slices)")
    record = open_image(path, body.path, _option(body.modality), _option(body.window))
    return _start(ctx, record)


@router.get("/api/images/{image_id}", response_model=ImageInfo, summary="An open image's description")
def image_info(session: WebSession = Depends(web_session)) -> ImageInfo:
    return ImageInfo(id=session.id, **session.record.info())


@router.delete("/api/images/{image_id}", status_code=204, summary="Close an image and forget everything about it")
def close_image(image_id: str, ctx: ServerContext = Depends(context)) -> Response:
    ctx.store.remove(image_id)
    return Response(status_code=204)


@router.get("/api/images/{image_id}/pixels", summary="One plane's stored values (for display)",
            response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
def plane_pixels(axis: int = Query(0, description="0 axial (z), 1 coronal (y), 2 sagittal (x)"),
                 index: int = Query(0, description="the plane's index along the axis"),
                 session: WebSession = Depends(web_session)) -> Response:
    """Little-endian float32 grey values (``X-Dtype: float32``) or uint8 RGB triplets
    (``X-Dtype: uint8``), row by row; ``X-Shape`` gives rows,columns,channels."""
    plane = session.record.plane(axis, index)
    if plane.ndim == 3:
        data, dtype = np.ascontiguousarray(plane.astype(np.uint8, copy=False)), "uint8"
        shape = plane.shape
    else:
        data, dtype = np.ascontiguousarray(plane, dtype="<f4"), "float32"
        shape = (*plane.shape, 1)
    return Response(data.tobytes(), media_type="application/octet-stream",
                    headers={"X-Shape": ",".join(map(str, shape)), "X-Dtype": dtype, "Cache-Control": "no-store"})


def _data_root(ctx: ServerContext) -> Path:
    if ctx.config.data_dir is None:
        raise InputError(None, "this server has no data folder (start it with medsamkit serve --data DIR)")
    return ctx.config.data_dir


def _option(value: str | None) -> str | None:
    value = None if value is None else value.strip()
    return value or None


def _start(ctx: ServerContext, record: ImageRecord) -> ImageInfo:
    session_id = new_id()
    predictor = ctx.engine.predictor(session_id)
    try:
        session = WebSession(session_id, record, interaction.start(record, predictor))
        ctx.store.add(session)
    except BaseException:
        ctx.engine.forget(session_id)
        raise
    return ImageInfo(id=session_id, **record.info())

