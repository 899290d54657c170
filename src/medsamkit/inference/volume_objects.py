"""The state of one object of a 3D session and the strategy protocol that updates it.

:class:`VolumeObject` (prompt, clicks, per-slice :class:`SliceState`) is what
:class:`~medsamkit.inference.session3d.Session3D` keeps per object; a :class:`VolumeRefiner`
(:class:`~medsamkit.inference.slice_refiner.SliceRefiner`,
:class:`~medsamkit.inference.session3d.PropagatorRefiner`) segments and refines such objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .clicks import Click
from .prompts3d import VolumePrompt
from .refine import MaskResult

#: Called before each slice a propagation visits with ``(slices done, slices planned, slice)``;
#: it may raise to stop the operation, which then leaves the session as it was.
Monitor = Callable[[int, int, int], None]


@dataclass(frozen=True)
class SliceState:
    """One object's result on one slice and the prompt it came from.

    Attributes:
        box: the box decoded on this slice (original pixels), or None.
        clicks: the object's clicks on this slice that were decoded.
        result: mask, logits (and low-resolution logits when the strategy has them).
    """

    box: tuple[float, float, float, float] | None
    clicks: tuple[Click, ...]
    result: MaskResult


@dataclass(frozen=True)
class VolumeObject:
    """One object of a 3D session.

    Attributes:
        obj_id: the session's id of the object.
        label: its value in the label volume.
        box: ``(x0, y0, x1, y1)`` on the key slice, or None (point-only object).
        key_slice: the slice the object starts from.
        z_range: ``(z0, z1)`` inclusive; a foreground click outside it extends it.
        clicks: the clicks so far, in order.
        slices: slice index -> :class:`SliceState` (never modified: updates make a new mapping).
        given_range: the z range the object was given (``z_range`` may have grown since).
        bounded: ``box`` bounds the object on every slice (given as a 3D box).
    """

    obj_id: int
    label: int
    box: tuple[float, float, float, float] | None
    key_slice: int
    z_range: tuple[int, int]
    clicks: tuple[Click, ...]
    slices: Mapping[int, SliceState] = field(default_factory=dict)
    given_range: tuple[int, int] | None = None
    bounded: bool = False

    def prompt(self) -> VolumePrompt:
        """The object as a :class:`VolumePrompt` (box, key slice, range, label, clicks)."""
        return VolumePrompt(self.box, self.key_slice, self.z_range, self.label, self.clicks, bounded=self.bounded)

    def given_prompt(self) -> VolumePrompt:
        """The prompt as the object was given (its first z range) with all its clicks: replaying it
        gives this object again."""
        return VolumePrompt(self.box, self.key_slice, self.given_range or self.z_range, self.label, self.clicks,
                            bounded=self.bounded)

    def clicks_on(self, z: int) -> tuple[Click, ...]:
        return tuple(c for c in self.clicks if c.z == z)

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """The object's own (z, y, x) mask, before overlaps with other objects are resolved."""
        out = np.zeros(tuple(shape), bool)
        for z, s in self.slices.items():
            out[z] = s.result.mask
        return out


class VolumeRefiner(Protocol):
    """A 3D strategy: segment new objects, apply one click to each of several objects, change
    objects' z ranges; ``monitor`` (or None) follows the slices of each operation."""

    monitor: Monitor | None

    def segment(self, objects: Sequence[VolumeObject]) -> list[VolumeObject]: ...

    def refine(self, updates: Sequence[tuple[VolumeObject, Click]]) -> list[VolumeObject]: ...

    def resize(self, updates: Sequence[tuple[VolumeObject, tuple[int, int]]]) -> list[VolumeObject]: ...
