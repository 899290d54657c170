"""SAM2 memory propagation through a volume: MedSAM2's 3D inference behind the
:class:`~medsamkit.inference.propagate.Propagator` protocol.

Slices are video frames (bowang-lab/MedSAM2 ``medsam2_infer_3D_CT.py`` with
``SAM2VideoPredictorNPZ``). Per object:

1. every prompted slice (the box's key slice, slices with clicks) is a *conditioning* frame,
   segmented like SAM with no memory (a box is two points labelled 2 and 3, then the clicks);
   its output is hole-filled and its memory is encoded from the binarised mask;
2. an upward sweep tracks from the key slice to the top of the z range, a downward sweep from
   the key slice to the bottom, each starting afresh from the conditioning frames (MedSAM2 resets
   the predictor between its forward and reverse passes; the key slice's output is the same in
   both, so it is computed once). Each tracked slice attends to the conditioning memories, the 6
   slices just behind it and the object pointers of up to 15 slices behind it;
3. outputs are the low-resolution logits with background holes of at most ``fill_hole_area``
   pixels (8-connected) set to 0.1, resized straight to the slice.

As the official predictor, spatial memories are stored in bfloat16. Unlike it, all objects share
one image encoding per slice (each object still has its own memory), and memory is bounded:
tracked frames that can no longer be selected are dropped, and a slice's features are kept only
until its last visit (in memory up to ``max_cached_features``, on disk beyond). The union of the
two sweeps and MedSAM2's largest 3D component are left to
:func:`~medsamkit.inference.volume3d.segment_volume` (``Cleanup``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..models.sam2.base import FrameFeatures
from ..models.sam2.tracking import FrameMemory, MemoryBank, PointPrompt, track_step
from ..preprocessing.geometry import Frame, SAM2FrameGeometry
from .prompts3d import VolumePrompt
from .propagate import ObjectState, PropagationState, SliceResult, SliceSource
from .sam2_predictor import SAM2Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryConfig:
    """Options of :class:`MemoryPropagator` (defaults: the official video predictor's).

    Attributes:
        fill_hole_area: background holes of at most this many low-resolution pixels are filled
            in the outputs (``build_sam2_video_predictor``'s ``fill_hole_area=8``); 0 turns it off.
        memory_dtype: dtype spatial memories are stored in (the official predictor: bfloat16;
            None keeps float32).
        max_cached_features: slice features kept in memory until their next visit; more go to a
            temporary folder (at 512 px each is 4 MiB, at 1024 px 16 MiB).
    """

    fill_hole_area: int = 8
    memory_dtype: torch.dtype | None = torch.bfloat16
    max_cached_features: int = 8

    def __post_init__(self) -> None:
        if self.fill_hole_area < 0 or self.max_cached_features < 0:
            raise ValueError("fill_hole_area and max_cached_features must be >= 0")


def fill_small_holes(low_res: torch.Tensor, max_area: int) -> torch.Tensor:
    """(B, 1, h, w) logits with 8-connected background (<= 0) regions of at most ``max_area``
    pixels set to 0.1 (foreground), as the official CUDA post-processing does."""
    if max_area <= 0:
        return low_res
    out = low_res.clone()
    structure = np.ones((3, 3), bool)
    for b in range(low_res.shape[0]):
        background = (low_res[b, 0] <= 0).cpu().numpy()
        labels, count = ndimage.label(background, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = (sizes <= max_area)
        small[0] = False
        holes = small[labels]
        if holes.any():
            out[b, 0][torch.from_numpy(holes).to(out.device)] = 0.1
    return out


@dataclass
class CondOutput:
    """A conditioning frame's result: hole-filled low-resolution logits (1, 1, h, w) and memory."""

    low_res: torch.Tensor
    memory: FrameMemory


@dataclass
class MemoryObjectState(ObjectState):
    """An object's propagation: its prompts per slice (model-input pixels), its conditioning
    frames' results, and the memory of the sweep under way."""

    prompts: dict[int, PointPrompt] = field(default_factory=dict)
    cond: dict[int, CondOutput] = field(default_factory=dict)
    bank: MemoryBank | None = None


class FeatureStore:
    """Slice features computed once and kept until their last planned use."""

    def __init__(self, uses: dict[int, int], encode: Callable[[int], FrameFeatures], max_in_memory: int) -> None:
        self.uses = dict(uses)
        self.encode = encode
        self.max_in_memory = max_in_memory
        self._memory: dict[int, FrameFeatures] = {}
        self._disk: dict[int, Path] = {}
        self._folder: tempfile.TemporaryDirectory | None = None
        self.encoder_calls = 0
        self.spilled = 0

    def get(self, z: int) -> FrameFeatures:
        if z in self._memory:
            features = self._memory.pop(z)
        elif z in self._disk:
            path = self._disk.pop(z)
            vision, s0, s1 = torch.load(path, weights_only=True)
            path.unlink()
            features = FrameFeatures(vision, (s0, s1))
        else:
            features = self.encode(z)
            self.encoder_calls += 1
        self.uses[z] = self.uses.get(z, 1) - 1
        if self.uses[z] > 0:
            self._keep(z, features)
        return features

    def _keep(self, z: int, features: FrameFeatures) -> None:
        if len(self._memory) < self.max_in_memory:
            self._memory[z] = features
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="medsamkit-sam2-features-")
        path = Path(self._folder.name) / f"{z}.pt"
        torch.save((features.vision.cpu(), features.high_res[0].cpu(), features.high_res[1].cpu()), path)
        self._disk[z] = path
        self.spilled += 1

    def close(self) -> None:
        self._memory.clear()
        self._disk.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


class MemoryPropagator:
    """SAM2/MedSAM2 memory propagation (see the module docstring).

    Args:
        predictor: a :class:`SAM2Predictor`; its model and encoder are used, with the frames
            prepared as the video predictors load them (:class:`SAM2FrameGeometry`).
        config: hole filling, memory dtype, feature cache size.
    """

    #: MedSAM2 keeps the largest 3D component of the result (segment_volume's default cleanup)
    keeps_largest_component = True

    def __init__(self, predictor: SAM2Predictor, config: MemoryConfig | None = None) -> None:
        self.predictor = predictor
        self.model = predictor.model
        self.config = config or MemoryConfig()
        self.geometry = SAM2FrameGeometry(predictor.geometry.input_size)

    # ------------------------------------------------------------------------------ state
    def init_state(self, slices: SliceSource, prompts: Sequence[VolumePrompt]) -> PropagationState:
        """One object per prompt; a 2D box without an explicit z range covers the whole volume,
        as MedSAM2 propagates through the whole video."""
        nz, h, w = slices.shape
        frame = self.geometry.frame((h, w))
        objects = []
        for i, p in enumerate(prompts):
            z0, z1 = p.z_range if getattr(p, "z_range_given", True) else (0, nz - 1)
            prompts_by_slice = self._point_prompts(p, frame)
            z0, z1 = min([z0, *prompts_by_slice]), max([z1, *prompts_by_slice])
            box = tuple(float(v) for v in p.box) if p.box is not None else (0.0, 0.0, 0.0, 0.0)
            objects.append(MemoryObjectState(i, box, int(p.key_slice), (int(z0), int(z1)),  # type: ignore[arg-type]
                                             prompts=prompts_by_slice))
        return PropagationState(slices, objects)

    def _point_prompts(self, prompt: VolumePrompt, frame: Frame) -> dict[int, PointPrompt]:
        """Per prompted slice: the box as two points labelled 2, 3 (key slice), then the clicks."""
        coords: dict[int, list[np.ndarray]] = {}
        labels: dict[int, list[int]] = {}
        if prompt.box is not None:
            corners = np.asarray(prompt.box, dtype=np.float64).reshape(2, 2)
            coords.setdefault(int(prompt.key_slice), []).extend(corners)
            labels.setdefault(int(prompt.key_slice), []).extend([2, 3])
        for click in getattr(prompt, "points", ()):
            z = int(click.z)
            coords.setdefault(z, []).append(np.array([click.x, click.y], dtype=np.float64))
            labels.setdefault(z, []).append(int(click.label))
        out = {}
        for z in coords:
            pts = self.geometry.points_to_model(np.stack(coords[z])[None], frame)
            out[z] = PointPrompt(pts, torch.tensor([labels[z]], dtype=torch.int32))
        return out

    # ------------------------------------------------------------------------------ run
    def propagate(self, state: PropagationState) -> Iterator[SliceResult]:
        """Conditioning frames first, then the upward and the downward sweep (one result per
        planned slice, as :class:`~medsamkit.inference.propagate.BoxPropagator`)."""
        objects: list[MemoryObjectState] = state.objects  # type: ignore[assignment]
        up, down = state.plan()
        store = FeatureStore(self._uses(objects, up, down), lambda z: self._encode(state, z),
                             self.config.max_cached_features)
        dev = self.predictor.device
        try:
            for z in sorted({z for o in objects for z in o.prompts}):
                features = store.get(z)
                for obj in objects:
                    if z in obj.prompts:
                        obj.cond[z] = self._condition(state, obj, z, features)
            later = set(down)
            for reverse, plan in ((False, up), (True, down)):
                for obj in objects:
                    obj.bank = MemoryBank(state.slices.shape[0], {z: c.memory for z, c in obj.cond.items()})
                for z in plan:
                    active = [o for o in objects if (o.down_active(z) if reverse else o.up_active(z))]
                    tracked = [o for o in active if z not in o.cond]
                    features = store.get(z) if tracked else None
                    outputs = []
                    for obj in active:
                        if z in obj.cond:
                            outputs.append(obj.cond[z].low_res.to(dev))
                        else:
                            outputs.append(self._track(state, obj, z, features, reverse))
                    yield self._result(state, z, active, outputs, final=reverse or z not in later)
        finally:
            state.encoder_calls += store.encoder_calls
            state.spilled += store.spilled
            store.close()

    @staticmethod
    def _uses(objects: list[MemoryObjectState], up: list[int], down: list[int]) -> dict[int, int]:
        """How many times each slice's features will be read: once as a conditioning frame (any
        object prompted there), once per sweep in which some object tracks it."""
        uses: dict[int, int] = {}
        for z in {z for o in objects for z in o.prompts}:
            uses[z] = uses.get(z, 0) + 1
        for plan, reverse in ((up, False), (down, True)):
            for z in plan:
                if any((o.down_active(z) if reverse else o.up_active(z)) and z not in o.prompts for o in objects):
                    uses[z] = uses.get(z, 0) + 1
        return uses

    def _encode(self, state: PropagationState, z: int) -> FrameFeatures:
        with torch.inference_mode():
            tensor, _ = self.geometry.prepare_image(state.slices.rgb(z))
            return self.predictor.encode_tensor(tensor)

    def _store(self, memory: FrameMemory) -> FrameMemory:
        dtype = self.config.memory_dtype
        maskmem = memory.maskmem if dtype is None or memory.maskmem is None else memory.maskmem.to(dtype)
        return FrameMemory(maskmem, memory.obj_ptr)

    def _condition(self, state: PropagationState, obj: MemoryObjectState, z: int, features: FrameFeatures) -> CondOutput:
        """A prompted slice: SAM-style output, hole-filled; memory from the binarised output."""
        model, dev = self.model, self.predictor.device
        prompt = obj.prompts[z]
        with torch.inference_mode():
            step = track_step(model, features, MemoryBank(state.slices.shape[0]), z,
                              points=PointPrompt(prompt.coords.to(dev), prompt.labels.to(dev)), is_cond=True,
                              run_memory_encoder=False)
            low_res = fill_small_holes(step.heads.low_res, self.config.fill_hole_area)
            size = (model.image_size, model.image_size)
            high_res = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
            maskmem = model.encode_memory(features.vision, high_res, step.heads.object_score, binarize=True)
        state.decoder_calls += 1
        return CondOutput(low_res, self._store(FrameMemory(maskmem, step.heads.obj_ptr)))

    def _track(self, state: PropagationState, obj: MemoryObjectState, z: int, features: FrameFeatures,
               reverse: bool) -> torch.Tensor:
        """A slice segmented from the object's memory; its own memory joins the bank."""
        bank = obj.bank
        assert bank is not None
        with torch.inference_mode():
            step = track_step(self.model, features, bank, z, reverse=reverse)
            low_res = fill_small_holes(step.heads.low_res, self.config.fill_hole_area)
        bank.tracked[z] = self._store(step.memory)
        opts = self.model.options
        # the next slice reads at most max_obj_ptrs - 1 pointers and num_maskmem - 1 memories back
        bank.forget_before(z, reverse, keep=max(opts.num_maskmem, opts.max_obj_ptrs) - 2)
        state.decoder_calls += 1
        return low_res

    def _result(self, state: PropagationState, z: int, active: list[MemoryObjectState],
                outputs: list[torch.Tensor], final: bool) -> SliceResult:
        _, h, w = state.slices.shape
        if not active:
            return SliceResult(z, (), np.zeros((0, h, w), bool), np.zeros((0, h, w), np.float32), final)
        frame = self.geometry.frame((h, w))
        with torch.inference_mode():
            logits = self.geometry.logits_to_original(torch.cat(outputs).float(), frame)[:, 0].cpu().numpy()
        for obj, lg in zip(active, logits):
            obj.slices += 1
            obj.empty_slices += int(not (lg > 0).any())
        return SliceResult(z, tuple(o.obj_id for o in active), logits > 0, logits, final)
