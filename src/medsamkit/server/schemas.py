"""Request and response bodies of the REST API (pydantic models; they make /docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServerInfo(BaseModel):
    version: str
    model: str
    data: bool = Field(description="whether files can be opened from the server's --data folder")
    max_upload_mb: float
    window_presets: dict[str, list[float]] = Field(description="CT windows: name -> [level, width] in HU")


class FileEntry(BaseModel):
    name: str
    path: str = Field(description="the path to give to /api/images/open or /api/files")
    folder: bool
    size: int | None = None


class FileListing(BaseModel):
    path: str
    entries: list[FileEntry]


class OpenRequest(BaseModel):
    path: str = Field(description="a file or DICOM folder inside the data folder, '/'-separated")
    modality: str | None = Field(None, description="intensity scheme, as medsamkit segment --modality")
    window: str | None = Field(None, description="CT window preset or L,W, as --window")


class ImageInfo(BaseModel):
    id: str = Field(description="the session's secret id: every later call names it")
    name: str
    volume: bool
    shape: list[int] = Field(description="[z, y, x] for a volume, [y, x] for a 2D image")
    channels: int
    dtype: str
    kind: str
    spacing: list[float] = Field(description="mm, in the order z, y, x")
    modality: str | None
    window: str | None
    scheme: str = Field(description="the intensity scheme the model input is made with")
    display_window: list[float] = Field(description="[low, high]: the values the model sees as black and white")
    value_range: list[float]
    ct: bool
    output: str = Field(description="the label map's download name")


Point = list[float]


class SegmentRequest(BaseModel):
    """Prompts in pixels of the original image (voxel indices x, y on a volume's slice)."""

    boxes: list[list[float] | None] = Field(default_factory=list,
                                            description="[x0, y0, x1, y1] per object (null: a points-only object)")
    points: list[list[Point]] | list[Point] = Field(
        default_factory=list,
        description="per object, its clicks [x, y, 1|0] (1 foreground, 0 background); "
                    "a flat list of [x, y, 1|0] belongs to the only object")
    labels: list[int] | None = Field(None, description="the label id of each object (default 1..N)")
    slice: int | None = Field(None, description="volumes: the z slice to segment")


class ObjectRequest(BaseModel):
    box: list[float] | None = Field(None, description="[x0, y0, x1, y1] on the image or on the slice")
    points: list[Point] = Field(default_factory=list, description="clicks [x, y, 1|0] on the same plane")
    label: int | None = Field(None, ge=1, le=65535, description="label id (default: the next free one)")
    name: str | None = Field(None, max_length=80)
    slice: int | None = Field(None, description="volumes: the slice the box and clicks are on")
    z_range: list[int] | None = Field(None, min_length=2, max_length=2,
                                      description="volumes: [z0, z1], the slices to propagate over")


class ClickRequest(BaseModel):
    x: float
    y: float
    positive: bool = Field(True, description="true: foreground (add), false: background (remove)")
    slice: int | None = Field(None, description="volumes: the slice clicked")


class RenameRequest(BaseModel):
    name: str = Field(max_length=80)


class ObjectView(BaseModel):
    id: int
    label: int
    name: str
    box: list[float] | None
    points: list[list[float]] = Field(description="[x, y, label] (2D) or [x, y, z, label] (3D), in order")
    slice: int | None = Field(None, description="volumes: the key slice (where the box is)")
    z_range: list[int] | None = Field(None, description="volumes: the slices segmented so far")
    target: list[int] | None = Field(None, description="volumes: the slices propagation is to cover")
    score: float | None = None


class SessionView(BaseModel):
    id: str
    objects: list[ObjectView]
    can_undo: bool
    can_redo: bool
    job: dict | None = None
    stale: bool = Field(False, description="volumes: objects changed since the last propagation")


class RangeRequest(BaseModel):
    z_range: list[int] = Field(min_length=2, max_length=2, description="[z0, z1]: the slices to propagate over")


class PropagateRequest(BaseModel):
    objects: list[int] | None = Field(None, description="object ids to propagate (default all)")
