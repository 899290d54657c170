"""Intensity schemes: turn stored pixel values into 0..255 uint8, per modality.

Each scheme is a configured callable (MONAI style): build it once, call it on any array.
They work on arrays of any dimensionality (``H x W`` images, ``H x W x 3`` colour images,
``D x H x W`` volumes) and return a uint8 array of the same shape with values in 0..255.

The rules follow MedSAM's preprocessing (pre_CT_MR.py), summarised in
docs/design.md, section "Intensity preprocessing":

* CT: clip to a window (level/width, in Hounsfield units), scale to 0..255.
* MR, ultrasound and other non-CT grey data: clip to the 0.5-99.5 percentiles of the voxels
  > 0, scale to 0..255, put voxels that were 0 back to 0.
* RGB data already in 0..255: unchanged; anything else: min-max.

Scaling matches MedSAM's arithmetic: ``(x - lo) / (hi - lo) * 255`` in float64, then truncated
to uint8 (``np.uint8`` cast), so a window centre maps to 127, not 128.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medsamkit import choices
from medsamkit.errors import InputError
from medsamkit.io.image2d import KINDS

logger = logging.getLogger(__name__)

Scheme = Callable[[np.ndarray], np.ndarray]

# (level, width) in HU. abdomen L40/W400, chest/lung L-600/W1500 and brain L40/W80 come from
# docs/design.md ("Intensity preprocessing", MedSAM pre_CT_MR.py); liver, bone and mediastinum
# are the usual radiology presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "liver": (80.0, 150.0),
    "lung": (-600.0, 1500.0),
    "chest": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
    "bone": (400.0, 1800.0),
    "mediastinum": (50.0, 350.0),
}

#: Default CT window (design.md: MedSAM's default is abdomen L40/W400 -> clip [-160, 240]).
DEFAULT_CT_WINDOW = "abdomen"

#: Modalities accepted by :func:`select_scheme` (lower case).
MODALITIES: tuple[str, ...] = choices.MODALITIES
_PERCENTILE_MODALITIES = frozenset({"mr", "mri", "us", "pet", "xray", "other", "percentile"})

_BLOCK = 1 << 22  # elements converted to float64 at a time (32 MiB), bounding memory on volumes


def _check_finite(arr: np.ndarray) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(None, "cannot scale intensities: the array contains NaN or inf values")


def _scale_to_uint8(arr: np.ndarray, lo: float, hi: float, keep_zeros: bool = False) -> np.ndarray:
    """Clip ``arr`` to [lo, hi] and map it linearly to 0..255 (truncated, MedSAM's way).

    Requires ``hi > lo``. With ``keep_zeros``, elements that were exactly 0 become 0.
    Works block by block so a large volume never needs a full float64 copy.
    """
    out = np.empty(arr.shape, dtype=np.uint8)
    src, dst = arr.reshape(-1), out.reshape(-1)
    for start in range(0, src.size, _BLOCK):
        raw = src[start:start + _BLOCK]
        block = raw.astype(np.float64)
        np.clip(block, lo, hi, out=block)
        block -= lo
        block /= hi - lo
        block *= 255.0
        scaled = block.astype(np.uint8)
        if keep_zeros:
            scaled[raw == 0] = 0
        dst[start:start + _BLOCK] = scaled
    return out


@dataclass(frozen=True)
class CTWindow:
    """CT windowing: clip to ``[level - width/2, level + width/2]`` HU, scale to 0..255 uint8.

    Example: ``CTWindow(40, 400)`` (abdomen) maps -160 HU and below to 0, 240 HU and above to
    255 and 40 HU to 127. Unlike MedSAM's script, the scale uses the window bounds rather than
    the clipped data's min/max, so every slice of a volume gets the same mapping (identical
    whenever the data reach both bounds, as CT nearly always does).
    """

    level: float
    width: float
    name: str | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.level) and np.isfinite(self.width)) or self.width <= 0:
            raise InputError(None, f"invalid CT window level {self.level}, width {self.width}: "
                                   "the width must be a number > 0")

    @classmethod
    def preset(cls, name: str) -> CTWindow:
        """The named window from :data:`WINDOW_PRESETS` (case-insensitive)."""
        key = name.strip().lower()
        if key not in WINDOW_PRESETS:
            raise InputError(None, f"unknown CT window preset {name!r}; presets: "
                                   f"{', '.join(WINDOW_PRESETS)}")
        level, width = WINDOW_PRESETS[key]
        return cls(level, width, key)

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) HU clip range."""
        return self.level - self.width / 2.0, self.level + self.width / 2.0

    def describe(self) -> str:
        """One line for logs, e.g. ``CT window abdomen L=40 W=400 (clip -160..240 HU)``."""
        lo, hi = self.bounds
        label = f" {self.name}" if self.name else ""
        return f"CT window{label} L={self.level:g} W={self.width:g} (clip {lo:g}..{hi:g} HU)"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Window any-shaped HU array; returns uint8 of the same shape."""
        arr = np.asarray(array)
        _check_finite(arr)
        return _scale_to_uint8(arr, *self.bounds)


def parse_window(text: str) -> tuple[float, float]:
    """Parse a CT window given as a preset name (``"abdomen"``) or ``"L,W"`` (``"-600,1500"``).

    Returns (level, width) in HU. Raises :class:`InputError` listing the presets for anything
    else, and when the width is not > 0.
    """
    key = str(text).strip().lower()
    if key in WINDOW_PRESETS:
        return WINDOW_PRESETS[key]
    parts = key.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        level, width = float(parts[0]), float(parts[1])
    except ValueError:
        presets = ", ".join(WINDOW_PRESETS)
        raise InputError(None, f"cannot read CT window {text!r}: give a preset ({presets}) "
                               "or LEVEL,WIDTH such as 40,400") from None
    CTWindow(level, width)  # validates: finite, width > 0
    return level, width


def _window_from_text(text: str) -> CTWindow:
    key = str(text).strip().lower()
    return CTWindow.preset(key) if key in WINDOW_PRESETS else CTWindow(*parse_window(text))


@dataclass(frozen=True)
class PercentileClip:
    """MedSAM's non-CT rule: percentile clip, scale to 0..255, keep zeros at 0.

    Percentiles ``lower``/``upper`` (in %, numpy's linear method) are computed over the
    elements > 0 when ``nonzero_only`` (over all elements if none is > 0); the array is clipped
    to them and scaled to 0..255; with ``nonzero_only``, elements that were exactly 0 stay 0
    (background outside the field of view). If the two percentiles are equal, elements at or
    above them become 255 and the rest 0.
    """

    lower: float = 0.5
    upper: float = 99.5
    nonzero_only: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower < self.upper <= 100.0:
            raise InputError(None, f"invalid percentiles {self.lower}, {self.upper}: "
                                   "need 0 <= lower < upper <= 100")

    def describe(self) -> str:
        """One line for logs."""
        where = "of voxels > 0, zeros kept" if self.nonzero_only else "of all voxels"
        return f"percentile clip {self.lower:g}-{self.upper:g} % {where}, scaled to 0..255"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Scale any-shaped array; returns uint8 of the same shape."""
        arr = np.asarray(array)
        _check_finite(arr)
        if arr.size == 0:
            return np.zeros(arr.shape, np.uint8)
        values = arr[arr > 0] if self.nonzero_only else arr.reshape(-1)
        keep_zeros = self.nonzero_only and values.size > 0
        if values.size == 0:
            values = arr.reshape(-1)
        lo, hi = (float(v) for v in np.percentile(values, [self.lower, self.upper]))
        if hi > lo:
            return _scale_to_uint8(arr, lo, hi, keep_zeros=keep_zeros)
        out = np.where(arr >= hi, 255, 0).astype(np.uint8)
        if keep_zeros:
            out[arr == 0] = 0
        return out


@dataclass(frozen=True)
class MinMax:
    """Scale the array's own [min, max] to 0..255 uint8; a constant array gives zeros."""

    def describe(self) -> str:
        """One line for logs."""
        return "min-max to 0..255"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Scale any-shaped array; returns uint8 of the same shape."""
        arr = np.asarray(array)
        _check_finite(arr)
        if arr.size == 0:
            return np.zeros(arr.shape, np.uint8)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, np.uint8)
        return _scale_to_uint8(arr, lo, hi)


@dataclass(frozen=True)
class Identity:
    """For data already in 0..255 (rgb8, grey8): uint8 input is returned as is (not copied).

    Other integer or integral float arrays within 0..255 are cast to uint8; anything else
    raises :class:`InputError` (use :class:`MinMax` or :class:`PercentileClip`).
    """

    def describe(self) -> str:
        """One line for logs."""
        return "unchanged (already 0..255)"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Return ``array`` as uint8 of the same shape."""
        arr = np.asarray(array)
        if arr.dtype == np.uint8:
            return arr
        _check_finite(arr)
        if arr.size and (arr.min() < 0 or arr.max() > 255 or np.any(arr != np.round(arr))):
            raise InputError(None, f"{arr.dtype} values span {arr.min()}..{arr.max()}, not "
                                   "integers in 0..255; use min-max or percentile scaling")
        return arr.astype(np.uint8)


class Compose:
    """Apply several schemes (any callables) in order: ``Compose(a, b)(x) == b(a(x))``."""

    def __init__(self, *steps: Scheme) -> None:
        if not all(callable(s) for s in steps):
            raise TypeError("Compose steps must be callables")
        self.steps: tuple[Scheme, ...] = steps

    def describe(self) -> str:
        """One line for logs."""
        parts = []
        for step in self.steps:
            describe = getattr(step, "describe", None)
            parts.append(describe() if callable(describe) else repr(step))
        return " then ".join(parts)

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(s) for s in self.steps)})"

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """Run every step on the output of the previous one."""
        for step in self.steps:
            array = step(array)
        return array


def select_scheme(kind: str, modality: str | None = None,
                  window: str | None = None) -> tuple[Scheme, str]:
    """Choose the intensity scheme for data of ``kind`` (see :data:`medsamkit.io.image2d.KINDS`).

    Rules: a ``window`` (preset or "L,W") always gives that :class:`CTWindow`. Otherwise
    modality ``"ct"`` -> abdomen window; ``mr, mri, us, pet, xray, other, percentile`` ->
    :class:`PercentileClip`; ``rgb, none`` -> :class:`Identity` for uint8 kinds (rgb8, grey8)
    else :class:`MinMax`; ``minmax`` -> :class:`MinMax`; ``None``/``"auto"`` -> by kind: ct ->
    abdomen window, rgb8/grey8 -> Identity, grey16/float -> PercentileClip.

    Returns (scheme, one-line description). Raises :class:`InputError` for an unknown modality
    or a bad window, ValueError for an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {', '.join(KINDS)}")
    mod = "auto" if modality is None else str(modality).strip().lower()
    if mod not in MODALITIES:
        raise InputError(None, f"unknown modality {modality!r}; accepted: {', '.join(MODALITIES)}")
    uint8_kind = kind in ("rgb8", "grey8")
    scheme: CTWindow | PercentileClip | MinMax | Identity
    if window is not None:
        scheme = _window_from_text(window)
    elif mod == "ct" or (mod == "auto" and kind == "ct"):
        scheme = CTWindow.preset(DEFAULT_CT_WINDOW)
    elif mod in _PERCENTILE_MODALITIES or (mod == "auto" and not uint8_kind):
        scheme = PercentileClip()
    elif mod == "minmax" or (mod in ("rgb", "none") and not uint8_kind):
        scheme = MinMax()
    else:
        scheme = Identity()
    description = f"{scheme.describe()} [kind {kind}, modality {mod}" + (
        f", window {window!r}]" if window is not None else "]")
    logger.debug("intensity scheme: %s", description)
    return scheme, description


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Return an ``H x W x 3`` uint8 array from ``H x W``, ``H x W x 1`` or ``H x W x 3`` uint8.

    Grey is repeated into the three channels; an ``H x W x 3`` input is returned as is.
    Raises ValueError for other dtypes or shapes (apply an intensity scheme first).
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"to_rgb_uint8 needs uint8 input (apply an intensity scheme first), "
                         f"got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"to_rgb_uint8 needs H x W or H x W x 3, got shape {arr.shape}")
    return np.repeat(arr[:, :, None], 3, axis=2)
