"""Segment a 3D volume from box prompts: array -> intensity scheme -> propagation -> label map.

:func:`segment_volume` is the Python API behind ``medsamkit segment VOLUME``; it works on an
array and its :class:`~medsamkit.io.geometry.Geometry` and returns the label volume with that
same geometry. The intensity scheme is computed once on the whole volume (percentiles or window
volume-wide, as MedSAM's pre_CT_MR.py does); slices then go through the model one by one.
Prompts with clicks (or point-only objects) go through an interactive
:class:`~medsamkit.inference.session3d.Session3D` (the clicks replayed in order, as if clicked);
box-only prompts through the streaming :class:`~medsamkit.inference.propagate.BoxPropagator`,
which gives the same masks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import choices
from ..errors import InputError
from ..io.geometry import Geometry
from ..io.image2d import check_pixel_values
from ..io.volume import read_volume
from ..preprocessing.intensity import Scheme, select_scheme
from ..preprocessing.labels import fill_holes, largest_connected_component
from .memory_propagate import MemoryConfig
from .predictor import Predictor
from .prompts3d import VolumePrompt, check_prompt, prompts_from_labels
from .propagate import BoxPropagator, PropagationConfig, Propagator, SliceResult, VolumeSlices
from .session import RefineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cleanup:
    """Optional 3D cleanup of each object of a label volume.

    Attributes:
        keep_largest: keep only each label's largest 26-connected component (MedSAM2 does this);
            None: the propagation strategy's default (on for SAM2 memory propagation, as MedSAM2,
            off for LiteMedSAM box propagation).
        fill_holes: fill each label's enclosed holes in 3D (only where the background is).
    """

    keep_largest: bool | None = None
    fill_holes: bool = False

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        out = labels
        if self.keep_largest:
            out = out.copy()
            for value in np.unique(out):
                if value == 0:
                    continue
                this = out == value
                out[this & ~largest_connected_component(this)] = 0
        if self.fill_holes:
            out = fill_holes(out)
        return out


#: How a voxel claimed by several objects is labelled (:class:`LabelAssembler`), and the default.
OVERLAP_RULES = choices.OVERLAP_RULES
DEFAULT_OVERLAP = choices.DEFAULT_OVERLAP


@dataclass(frozen=True)
class VolumeOptions:
    """Everything about a volume run except the model and the prompts.

    Attributes:
        modality, window: intensity scheme (see :func:`~medsamkit.preprocessing.intensity.select_scheme`).
        propagation: box growth and stopping rule (LiteMedSAM-style box propagation).
        memory: SAM2 memory propagation options (SAM2, SAM2.1, MedSAM2).
        cleanup: 3D post-processing of each object.
        overlap: who gets a voxel several objects claim: ``"last"`` (default: the object given
            last, as in the official LiteMedSAM script; give an inner object after the one
            around it), ``"logit"`` (the highest logit) or ``"smallest"`` (the object with the
            smaller mask on that slice); see :class:`LabelAssembler`. The default was chosen by
            measurement (docs/benchmarks.md, "3D propagation": on ACDC the highest logit gives
            the LV cavity to the myocardium's filled disc).
        progress: show a progress bar over slices.
        refine: how clicks update an object (prompts with points).
    """

    modality: str | None = None
    window: str | None = None
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    cleanup: Cleanup = field(default_factory=Cleanup)
    overlap: str = DEFAULT_OVERLAP
    progress: bool = False
    refine: RefineConfig = field(default_factory=RefineConfig)

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {self.overlap!r}")


@dataclass(frozen=True)
class VolumeSegmentation:
    """The result of :func:`segment_volume`.

    Attributes:
        labels: ``[z, y, x]`` label map (0 background), the input's shape; uint8, or uint16 for
            label ids above 255.
        geometry: the input's geometry, unchanged (write the labels with it).
        label_ids: the value of each prompt's object, in prompt order.
        encoder_calls, decoder_calls: model calls made (one encoder call per slice visited).
        slices_visited: slices on which at least one object was segmented.
        spilled: embeddings written to disk between the sweeps.
        scheme: the intensity scheme used, in words.
        seconds: wall time of the propagation.
    """

    labels: np.ndarray
    geometry: Geometry
    label_ids: tuple[int, ...]
    encoder_calls: int
    decoder_calls: int
    slices_visited: int
    spilled: int
    scheme: str
    seconds: float


class LabelAssembler:
    """Writes :class:`SliceResult` masks into a label volume.

    A voxel claimed by several objects goes, with ``overlap="last"`` (the default), to the object
    given last (the LiteMedSAM script writes objects one after the other, so later ones overwrite
    earlier ones); with ``"logit"``, to the object with the highest logit there (as the 2D label
    maps do); with ``"smallest"``, to the object whose mask on that slice is smallest (nested
    structures: the inner one keeps its voxels). This holds across the two visits a slice can
    get: the scores of a slice that will be visited again are kept until then.
    """

    def __init__(self, shape: Sequence[int], label_ids: Sequence[int], overlap: str = DEFAULT_OVERLAP) -> None:
        if overlap not in OVERLAP_RULES:
            raise ValueError(f"overlap must be one of {OVERLAP_RULES}, got {overlap!r}")
        top = max(label_ids, default=0)
        dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
        self.volume = np.zeros(tuple(shape), dtype)
        self.label_ids = np.asarray(label_ids, dtype=dtype)
        self.overlap = overlap
        self._best: dict[int, np.ndarray] = {}  # slice -> best score so far, for slices seen again

    def _scores(self, result: SliceResult) -> np.ndarray:
        """(N, H, W) score of each object where its mask is, -inf elsewhere."""
        if self.overlap == "logit":
            values = result.logits
        elif self.overlap == "smallest":
            values = -result.masks.sum(axis=(1, 2), dtype=np.float32)[:, None, None]
        else:
            values = np.asarray(result.obj_ids, np.float32)[:, None, None]
        return np.where(result.masks, values, np.float32(-np.inf))

    def add(self, result: SliceResult) -> None:
        z = result.z
        previous = self._best.pop(z, None)
        if result.obj_ids:
            scores = self._scores(result)
            best = scores.max(axis=0)
            winner = self.label_ids[np.asarray(result.obj_ids)][scores.argmax(axis=0)]
            claim = best > -np.inf
            if previous is not None:
                claim &= best > previous
                best = np.maximum(best, previous)
            self.volume[z][claim] = winner[claim]
        else:
            best = previous
        if not result.final and best is not None:
            self._best[z] = best


def volume_kind(array: np.ndarray, ct: bool = False) -> str:
    """The :data:`~medsamkit.io.image2d.KINDS` name of a volume for the intensity scheme.

    ``ct`` (a DICOM series whose Modality is CT) -> ``"ct"``; else by dtype: uint8 ->
    ``"grey8"``, other integers -> ``"grey16"``, floats -> ``"float"``.
    """
    if ct:
        return "ct"
    if np.issubdtype(array.dtype, np.floating):
        return "float"
    return "grey8" if array.dtype == np.uint8 else "grey16"


def _as_prompt(prompt: VolumePrompt | Sequence[float]) -> VolumePrompt:
    if isinstance(prompt, VolumePrompt):
        return prompt
    values = tuple(prompt)
    if len(values) != 6:
        raise InputError(None, f"a volume box is 6 numbers x0, y0, z0, x1, y1, z1, got {values!r}")
    return VolumePrompt.from_box3d(values)


def segment_volume(
    array: np.ndarray,
    geometry: Geometry,
    prompts: Sequence[VolumePrompt | Sequence[float]],
    predictor: Predictor,
    options: VolumeOptions | None = None,
    *,
    scheme: Scheme | None = None,
    propagator: Propagator | None = None,
    source: str | os.PathLike | None = None,
) -> VolumeSegmentation:
    """Segment the objects given by ``prompts`` in a ``[z, y, x]`` volume.

    Args:
        array: the volume as read (any numeric dtype; ``read_volume`` gives it).
        geometry: its geometry; returned unchanged with the labels.
        prompts: :class:`VolumePrompt` objects or 6-number boxes ``(x0, y0, z0, x1, y1, z1)``
            (voxel indices; key slice = middle slice).
        predictor: the model with its geometry (encodes slices, decodes boxes); its family
            picks the propagation strategy (:func:`default_propagator`).
        options: intensity scheme, propagation rule, cleanup, progress bar.
        scheme: an intensity scheme to use instead of the one ``options`` selects (e.g. for a
            DICOM CT, ``select_scheme("ct")[0]``).
        propagator: replaces the family's propagator (same interface).
        source: the volume's file, named in errors.

    Raises:
        InputError: naming ``source`` for a volume that is not 3D, holds NaN or infinite values
            (the message gives their count), is constant, has no prompt, or a prompt that does
            not fit the volume.
    """
    options = options or VolumeOptions()
    array = np.asarray(array)
    if array.ndim != 3 or 0 in array.shape:
        raise InputError(source, f"a volume must be a non-empty 3D [z, y, x] array, got shape {array.shape}")
    prompts = [_as_prompt(p) for p in prompts]
    if not prompts:
        raise InputError(source, "no box given for this volume")
    for i, p in enumerate(prompts):
        check_prompt(p, array.shape, source, where=f"box {i + 1} ({p.describe()})")
    label_ids = tuple(p.label if p.label is not None else i + 1 for i, p in enumerate(prompts))
    check_pixel_values(array, source, noun="volume", unit="voxel")  # NaN/inf (with the count), constant

    if scheme is None:
        scheme, description = select_scheme(volume_kind(array), options.modality, options.window)
    else:
        description = getattr(scheme, "describe", lambda: repr(scheme))()
    log.info("intensity scheme (whole volume): %s", description)
    slices = VolumeSlices(scheme(array))

    assembler = LabelAssembler(array.shape, label_ids, options.overlap)
    memory_family = getattr(predictor, "family", "sam") == "sam2"  # SAM2 memories take clicks themselves
    if propagator is None and not memory_family and any(p.points or p.box is None for p in prompts):
        return _segment_with_session(slices, prompts, predictor, options, assembler, geometry, label_ids,
                                     description, source)
    propagator = propagator or default_propagator(predictor, options)
    state = propagator.init_state(slices, prompts)
    up, down = state.plan()
    visited: set[int] = set()
    start = time.perf_counter()
    # one tick per slice: a slice both sweeps visit ticks on its last visit (result.final)
    with tqdm(total=len(set(up) | set(down)), desc="propagate", unit="slice", disable=not options.progress) as bar:
        for result in propagator.propagate(state):
            assembler.add(result)
            if result.obj_ids:
                visited.add(result.z)
            if result.final:
                bar.update(1)
    seconds = time.perf_counter() - start
    log.info("%d objects over %d slices: %d encoder calls, %d batched decoder calls, %.1f s",
             len(prompts), len(visited), state.encoder_calls, state.decoder_calls, seconds)
    cleanup = options.cleanup
    if cleanup.keep_largest is None:
        cleanup = replace(cleanup, keep_largest=bool(getattr(propagator, "keeps_largest_component", False)))
    labels = cleanup(assembler.volume)
    return VolumeSegmentation(labels, geometry, label_ids, state.encoder_calls, state.decoder_calls,
                              len(visited), state.spilled, description, seconds)


def default_propagator(predictor: Predictor, options: VolumeOptions) -> Propagator:
    """The model family's 3D strategy: SAM2 memory propagation (SAM2, SAM2.1, MedSAM2) or
    LiteMedSAM-style box propagation (SAM, MedSAM, LiteMedSAM)."""
    if getattr(predictor, "family", "sam") == "sam2":
        from .memory_propagate import MemoryPropagator

        return MemoryPropagator(predictor, options.memory)  # type: ignore[arg-type]
    return BoxPropagator(predictor, options.propagation)


def _segment_with_session(slices: VolumeSlices, prompts: list[VolumePrompt], predictor: Predictor,
                          options: VolumeOptions, assembler: LabelAssembler, geometry: Geometry,
                          label_ids: tuple[int, ...], description: str, source) -> VolumeSegmentation:
    """Prompts with clicks: a :class:`Session3D` adds the objects, then replays their clicks."""
    from dataclasses import replace

    from .session3d import Session3D

    start = time.perf_counter()
    session = Session3D(predictor, slices, options.refine, options.propagation)
    session.add_objects([replace(p, label=lab) for p, lab in zip(prompts, label_ids)], source=source)
    objects = session.objects
    visited = sorted({z for o in objects for z in o.slices})
    for z in visited:
        present = [(i, o.slices[z].result) for i, o in enumerate(objects) if z in o.slices]
        assembler.add(SliceResult(z, tuple(i for i, _ in present), np.stack([r.mask for _, r in present]),
                                  np.stack([r.logits for _, r in present]), final=True))
    seconds = time.perf_counter() - start
    refiner = session.refiner
    encoder_calls = getattr(getattr(refiner, "embeddings", None), "encoder_calls", 0)
    decoder_calls = getattr(refiner, "decoder_calls", 0)
    log.info("%d objects with clicks over %d slices: %d encoder calls, %d decoder calls, %.1f s",
             len(prompts), len(visited), encoder_calls, decoder_calls, seconds)
    labels = options.cleanup(assembler.volume)
    return VolumeSegmentation(labels, geometry, label_ids, encoder_calls, decoder_calls, len(visited), 0,
                              description, seconds)


def read_label_prompts(path: str | os.PathLike, shape: Sequence[int], labels: Sequence[int] | None = None
                       ) -> list[VolumePrompt]:
    """Prompts from a label volume file (``--boxes-from-labels``) for an image of ``shape``.

    Raises :class:`InputError` naming ``path`` when it cannot be read, its shape differs from the
    image's, or a requested label is absent.
    """
    label_array, _ = read_volume(path)
    if tuple(label_array.shape) != tuple(shape):
        raise InputError(path, f"label volume has shape {tuple(label_array.shape)} but the image has "
                               f"{tuple(shape)} (z, y, x)")
    return prompts_from_labels(label_array, labels, source=path)


def is_dicom_ct(path: str | os.PathLike) -> bool:
    """True for a folder whose single DICOM series has Modality CT (then the default scheme is a
    CT window, as for 2D DICOM CT slices)."""
    from ..io.dicom_series import list_dicom_series

    p = Path(path)
    if not p.is_dir():
        return False
    series = list_dicom_series(p)
    return len(series) == 1 and series[0].modality.upper() == "CT"
