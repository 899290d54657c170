"""Downloads: the label map (PNG, or the volume's format with its geometry) and the prompts file."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Response

from . import interaction
from .routes_objects import png_response
from .store import WebSession
from .context import web_session

router = APIRouter(tags=["export"])


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}


@router.get("/api/images/{image_id}/download", response_class=Response,
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}},
            summary="The current label map: PNG for a 2D image, the volume's format with its geometry")
def download_labels(session: WebSession = Depends(web_session)) -> Response:
    record = session.record
    session.check_idle()
    labels = interaction.label_volume(session)
    name = record.output_name()
    if not record.volume:
        response = png_response(labels)
        response.headers.update(_attachment(name))
        return response
    from ..io.volume import write_volume

    with tempfile.TemporaryDirectory(prefix="medsamkit-download-") as tmp:
        path = Path(tmp) / f"labels{record.output_suffix}"
        write_volume(path, labels, record.geometry, mask=True)
        data = path.read_bytes()
    return Response(data, media_type="application/octet-stream", headers=_attachment(name))


@router.get("/api/images/{image_id}/prompts", summary="The prompts as a file medsamkit segment --boxes-file replays",
            response_class=Response, responses={200: {"content": {"application/json": {}}}})
def download_prompts(session: WebSession = Depends(web_session)) -> Response:
    with session.changing():
        prompts = interaction.prompts_file(session)
    stem = session.record.output_name().rsplit("_labels", 1)[0]
    body = ("[\n" + ",\n".join("  " + json.dumps(p) for p in prompts) + "\n]\n").encode("utf-8")
    return Response(body, media_type="application/json", headers=_attachment(f"{stem}_prompts.json"))
