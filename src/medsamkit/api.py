"""The short Python API: ``medsamkit.load``, ``segment``, ``segment_volume`` and ``Session``.

Each takes an image or volume as a file path or an array, applies the intensity scheme for its
kind (or the ``modality``/``window`` given), and runs the same library code as the CLI:

    import medsamkit

    model = medsamkit.load()                                       # LiteMedSAM on the CPU
    labels = medsamkit.segment("polyp.jpg", boxes=[[39, 6, 429, 337]], model=model)
    labels = medsamkit.segment(ct_slice, boxes=[box], points=[[(120, 80, 0)]], model=model)
    result = medsamkit.segment_volume("mr.nii.gz", boxes=[(60, 80, 40, 110, 130, 70)], model=model)
    result.labels, result.geometry

    session = medsamkit.Session("mr.nii.gz", model=model)           # interactive, 2D or 3D
    obj = session.add_object((60, 80, 40, 110, 130, 70))
    session.add_click(obj, (85, 101, 55, 0))                        # x, y, z, background
    session.undo(); session.label_map()

Coordinates are pixels of the original image (x right, y down), voxel indices on volumes, as on
the command line. Pass ``model=medsamkit.load(...)`` to load the weights once for many calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .inference.clicks import Click
from .inference.predictor import Predictor
from .inference.prompts3d import VolumePrompt
from .inference.session import RefineConfig, Session2D, as_click
from .inference.session3d import Session3D
from .inference.volume3d import VolumeOptions, VolumeSegmentation, volume_kind
from .io.geometry import Geometry

ImageLike = str | os.PathLike | np.ndarray


def load(model: str | None = None, checkpoint: str | os.PathLike | None = None, *, device: str = "auto",
         backend: str = "auto", precision: str | None = None, threads: int | None = None) -> Predictor:
    """A ready predictor: registry ``model`` (default LiteMedSAM) or a ``checkpoint`` file.

    Args:
        backend: the image encoder's engine: ``auto`` (on the CPU the fastest installed engine that
            keeps the masks; see :mod:`medsamkit.inference.engines`), ``torch``, ``onnx``, ``openvino``.
        precision: ``fp32`` or ``bf16`` (default: the backend's fastest that keeps the masks).
        threads: CPU threads for torch and the engines.
    """
    import torch

    from .choices import BACKENDS
    from .inference.factory import make_predictor
    from .models.loader import load_model

    if backend not in BACKENDS:
        raise InputError(None, f"unknown backend {backend!r}: {', '.join(BACKENDS)}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    loaded = load_model(model, checkpoint, device=device)
    return make_predictor(loaded, backend=backend, precision=precision, threads=threads)


def _predictor(model: Predictor | str | None) -> Predictor:
    """A predictor as given (anything with ``embed``/``predict``), or a registry model name loaded."""
    return load(model) if model is None or isinstance(model, str) else model


def _image_rgb(image: ImageLike, modality: str | None, window: str | None) -> np.ndarray:
    """A 2D image (path or array) as H x W x 3 uint8 after its intensity scheme."""
    from .io.image2d import image_2d_from_array, read_image_2d
    from .preprocessing.intensity import select_scheme, to_rgb_uint8

    img = image_2d_from_array(np.asarray(image)) if isinstance(image, np.ndarray) else read_image_2d(image)
    scheme, _ = select_scheme(img.kind, modality, window)
    return to_rgb_uint8(scheme(img.pixels))


def _volume(volume: ImageLike, geometry: Geometry | None) -> tuple[np.ndarray, Geometry, str | None]:
    from .io.volume import read_volume

    if isinstance(volume, np.ndarray):
        return volume, geometry or Geometry.identity(), None
    array, read_geometry = read_volume(volume)
    return array, geometry or read_geometry, str(volume)


def _per_object_points(points: Any, n_boxes: int, dims: int) -> list[tuple[Click, ...]]:
    """``points``: one list of ``(x, y[, z], label)`` per object, or one flat list for a single object."""
    if points is None:
        return [()] * n_boxes
    points = list(points)
    flat = bool(points) and len(points[0]) > 0 and all(np.isscalar(v) for v in points[0])
    groups = [points] if flat else points
    if n_boxes and len(groups) != n_boxes:
        raise InputError(None, f"points for {len(groups)} objects but {n_boxes} boxes: give one list of points "
                               "per box (an empty list for none)")
    return [tuple(as_click(p, dims) for p in group) for group in groups]


def segment(image: ImageLike, boxes: Sequence[Sequence[float]] | None = None, points: Any = None,
            labels: Sequence[int] | None = None, *, model: Predictor | str | None = None,
            modality: str | None = None, window: str | None = None, refine: RefineConfig | None = None
            ) -> np.ndarray:
    """Segment objects on a 2D image; returns the (H, W) label map (objects 1..N or ``labels``).

    Args:
        image: file path or array (H x W, or H x W x 3 RGB).
        boxes: ``(x0, y0, x1, y1)`` per object, original pixels.
        points: clicks ``(x, y, label)`` (1 foreground, 0 background): one list per box, applied in
            order after it; without boxes, each list is a point-only object.
    """
    rgb = _image_rgb(image, modality, window)
    box_list = [tuple(float(v) for v in b) for b in boxes] if boxes is not None else []
    clicks = _per_object_points(points, len(box_list), 2)
    objects = [(b, c) for b, c in zip(box_list, clicks)] if box_list else [(None, c) for c in clicks]
    if not objects:
        raise InputError(None, "give boxes and/or points")
    labels = list(labels) if labels is not None else list(range(1, len(objects) + 1))
    if len(labels) != len(objects):
        raise InputError(None, f"{len(labels)} labels for {len(objects)} objects")
    session = Session2D(_predictor(model), rgb, refine)
    session.add_objects([(b, c, lab) for (b, c), lab in zip(objects, labels)])
    return session.label_map()


def _volume_prompts(boxes: Any, points: Any, labels: Sequence[int] | None, shape: Sequence[int],
                    source: str | None) -> list[VolumePrompt]:
    from .inference.prompts3d import PromptSpec

    box_list = list(boxes) if boxes is not None else []
    clicks = _per_object_points(points, len(box_list), 3)
    prompts = []
    for i in range(max(len(box_list), len(clicks))):
        box = box_list[i] if box_list else None
        pts = clicks[i] if i < len(clicks) else ()
        if isinstance(box, VolumePrompt):
            prompts.append(VolumePrompt(box.box, box.key_slice, box.z_range, box.label, box.points + pts))
            continue
        spec = PromptSpec("points", (), points=pts, origin=f"object {i + 1}") if box is None else \
            PromptSpec("box3d", tuple(float(v) for v in box), points=pts, origin=f"object {i + 1}")
        prompts.append(spec.resolve(shape, None, source))
    if labels is not None:
        if len(labels) != len(prompts):
            raise InputError(None, f"{len(labels)} labels for {len(prompts)} objects")
        prompts = [VolumePrompt(p.box, p.key_slice, p.z_range, int(lab), p.points) for p, lab in zip(prompts, labels)]
    if not prompts:
        raise InputError(source, "give boxes and/or points")
    return prompts


def segment_volume(volume: ImageLike, boxes: Any = None, points: Any = None, labels: Sequence[int] | None = None,
                   *, geometry: Geometry | None = None, model: Predictor | str | None = None,
                   modality: str | None = None, window: str | None = None, options: VolumeOptions | None = None
                   ) -> VolumeSegmentation:
    """Segment objects in a volume; returns ``.labels`` (z, y, x) with ``.geometry``.

    Args:
        volume: file path (NIfTI, MHA, NRRD, DICOM folder) or a ``[z, y, x]`` array.
        boxes: ``(x0, y0, z0, x1, y1, z1)`` voxel indices per object (key slice: the middle one)
            or :class:`~medsamkit.inference.prompts3d.VolumePrompt` objects.
        points: clicks ``(x, y, z, label)``: one list per box, or point-only objects without boxes.
    """
    from dataclasses import replace

    from .inference.volume3d import segment_volume as _segment_volume

    array, geometry, source = _volume(volume, geometry)
    options = options or VolumeOptions()
    if modality is not None or window is not None:
        options = replace(options, modality=modality, window=window)
    prompts = _volume_prompts(boxes, points, labels, array.shape, source)
    return _segment_volume(array, geometry, prompts, _predictor(model), options, source=source)


def Session(image: ImageLike, model: Predictor | str | None = None, *, volume: bool | None = None,  # noqa: N802
            geometry: Geometry | None = None, modality: str | None = None, window: str | None = None,
            config: RefineConfig | None = None, options: VolumeOptions | None = None) -> Session2D | Session3D:
    """An interactive session on an image (:class:`Session2D`) or a volume (:class:`Session3D`).

    A path is a volume when its ending says so (NIfTI, MHA, NRRD, DICOM folder); an array is a
    volume when it is 3D and not H x W x 3/4 RGB(A); ``volume=`` overrides.
    """
    from .io.volume import is_volume_path

    if volume is None:
        if isinstance(image, np.ndarray):
            volume = image.ndim == 3 and image.shape[-1] not in (3, 4)
        else:
            volume = is_volume_path(image)
    predictor = _predictor(model)
    if not volume:
        return Session2D(predictor, _image_rgb(image, modality, window), config)
    from .preprocessing.intensity import select_scheme

    array, geometry, _ = _volume(image, geometry)
    options = options or VolumeOptions()
    scheme, _ = select_scheme(volume_kind(array), modality or options.modality, window or options.window)
    return Session3D(predictor, scheme(array), config or options.refine, options.propagation, overlap=options.overlap)
