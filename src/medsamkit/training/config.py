"""Fine-tuning configuration: typed sections, YAML files layered, dotted command-line overrides.

``load_config(["base.yaml", "more.yaml"], ["--trainer.max_epochs", "3"])`` reads the files in
order (later files win key by key), applies the overrides last, and checks every key and value
against the dataclasses below: an unknown key or a value of the wrong type raises an
:class:`~medsamkit.errors.InputError` that names the file (or the override) and the key, with a
suggestion when the key looks like a typo. Every option and its default is documented here;
``configs/*.yaml`` are examples.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

MODES = ("decoder", "encoder-decoder", "full", "lora", "decoder-lora")
SCHEDULERS = ("cosine", "plateau", "none")


@dataclass
class LoraConfig:
    """LoRA adapters on the image encoder's attention layers (mode ``lora``)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])


@dataclass
class ClicksConfig:
    """SAM's interactive training loop with protocol clicks (:mod:`medsamkit.training.interactive`).

    steps: click steps after the box step, each adding one simulated click per sample at the centre
        of the largest error region (0: box-only training).
    mask_prompt: probability per batch that click steps also get the previous logits as the mask prompt.
    backprop: ``all`` (every step carries gradient) or ``sampled`` (the box step and one random click
        step; the click steps before it run without gradient: about 2.5x cheaper with 5 steps).
    neighbour_mask: probability per sample (0: never, the default) of prompting it as a slice that a
        3D session with ``RefineConfig(carry_mask=True)`` propagates a click's change to: the box grown
        by 3 px from the adjacent slice's mask of the same label (drawn among the two; samples
        without one stay box-prompted) and that mask as the mask prompt of every step; the target is
        the sample's own mask. Needs cached embeddings of a preprocess cache of volumes.
    neighbour_box: probability per sample (0: never, the default) of prompting it as a slice that
        3D propagation reaches: the box grown by 3 px from the adjacent slice's mask of the same
        label, without a mask prompt (the box every propagated slice of ``segment VOLUME`` and of a
        3D session's box step gets). Drawn among the samples not drawn for ``neighbour_mask``.
    click_weight: extra BCE weight of the pixels within ``click_radius`` (mask-frame pixels) of each
        click of a click step (0: none, the default): weights the loss towards answering them
        (docs/refinement.md: on held-out ACDC it answered more clicks but lost more in the box step).
    """

    steps: int = 0
    mask_prompt: float = 0.5
    backprop: str = "all"
    neighbour_mask: float = 0.0
    neighbour_box: float = 0.0
    click_weight: float = 0.0
    click_radius: float = 4.0


@dataclass
class ModelConfig:
    """What is trained.

    name: a registry model (``litemedsam``, ``medsam-vit-b``, ``sam-vit-b`` ...) or a baseline
        trained from scratch (``unet``, ``prompted-resnet``).
    checkpoint: base weights file (default: the registry's weights).
    pretrained: False starts the SAM-family model from random weights (tests, ablations).
    mode: ``decoder`` (image and prompt encoders frozen; embeddings cached), ``encoder-decoder``
        (MedSAM recipe: prompt encoder frozen), ``full``, ``lora`` (adapters on the image encoder),
        ``decoder-lora`` (adapters on the mask decoder's linear layers plus the prompt encoder's
        point and mask embeddings; embeddings cached; the trained part is a small adapter file).
    automatic: train the decoder with no prompt (single-target tasks; segment without a box).
    preprocessing: geometry family framing a baseline's input (SAM-family models use their own).
    width: a baseline's channel count at full resolution.
    """

    name: str = "litemedsam"
    checkpoint: str | None = None
    pretrained: bool = True
    mode: str = "decoder"
    automatic: bool = False
    preprocessing: str = "litemedsam"
    width: int = 32
    lora: LoraConfig = field(default_factory=LoraConfig)
    clicks: ClicksConfig = field(default_factory=ClicksConfig)


@dataclass
class AugmentConfig:
    """Augmentations of image modes; boxes are recomputed from the transformed masks.

    Probabilities ``hflip``/``vflip``; ``rotate_deg`` and ``scale`` are maximum magnitudes
    (0 switches them off); ``intensity`` the maximum brightness/contrast change (fraction).
    With cached embeddings (decoder mode) the ranges apply only to ``data.embedding_warps``, the
    warped copies of each image encoded once.
    """

    hflip: float = 0.5
    vflip: float = 0.0
    rotate_deg: float = 10.0
    scale: float = 0.1
    intensity: float = 0.1


@dataclass
class DataConfig:
    """Where samples come from and how they are fed.

    cache: a ``medsamkit preprocess`` cache folder (its train/val splits are used).
    box_jitter: each box side pushed outward by 0..N model-input pixels per step (MedSAM: 20).
    embeddings: decoder mode: compute the image embeddings once and reuse them (False
        re-encodes every step; only useful to measure the difference).
    embedding_dir: where embedding caches live (default ``<cache>/embeddings``).
    embedding_dtype: ``float16`` (half the disk, see docs/benchmarks.md) or ``float32``.
    embedding_backend: ``auto`` (the default: OpenVINO on a CPU where it is installed, else ONNX
        Runtime, else torch; torch on a GPU), ``torch``, ``onnx`` (ONNX Runtime, CPU only: about 3x
        faster to build) or ``openvino`` (OpenVINO fp32, CPU only: faster still, the same numbers
        to ~4e-6).
    embedding_flips: extra cached variants, any of ``hflip``, ``vflip`` (flip augmentation in
        decoder mode; each costs one more encoder pass per image).
    embedding_warps: N more cached variants, each image rotated, scaled and changed in intensity
        within ``augment``'s ranges (one fixed draw per image and variant; one more encoder pass
        per image each). A training step draws one of all the variants for each sample.
    max_train_samples / max_val_samples: use only the first N (quick runs).
    clip_length: SAM2-family models: frames per training clip, consecutive slices of one label
        of one volume starting on a slice where it is present (2D samples are single frames).
    prompt: SAM2 clips: ``box`` or ``click`` (a random foreground pixel) on the first frame.
    prompt_every: SAM2 clips: also prompt every k-th frame where the object is present
        (Medical-SAM2's prompt frequency; 0: the first frame only).
    clip_reverse: SAM2 clips: probability that a training clip runs towards lower slices.
    """

    cache: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 4
    num_workers: int = 0
    box_jitter: int = 20
    embeddings: bool = True
    embedding_dir: str | None = None
    embedding_dtype: str = "float16"
    embedding_backend: str = "auto"
    embedding_flips: list[str] = field(default_factory=list)
    embedding_warps: int = 0
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    clip_length: int = 8
    prompt: str = "box"
    prompt_every: int = 0
    clip_reverse: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class LossConfig:
    """Weights of Dice (sigmoid, squared denominators), BCE-with-logits and the IoU-head MSE.

    SAM2-family models: ``kind: sam2`` (the default for them) is MedSAM2's / SAM2's loss, mask
    focal ``focal`` (20), Dice ``dice`` (1), IoU-head L1 ``iou`` (1) and object-score BCE
    ``object_score`` (1), on the best of the multimask outputs; ``kind: dice-bce`` is Dice +
    BCE on the chosen mask plus the object-score BCE. ``auto``: sam2 for SAM2 models, dice-bce
    otherwise (SAM v1 models only have dice-bce).
    """

    dice: float = 1.0
    bce: float = 1.0
    iou_mse: float = 0.0
    kind: str = "auto"
    focal: float = 20.0
    iou: float = 1.0
    object_score: float = 1.0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay, or ReduceLROnPlateau on val Dice."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    scheduler: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    plateau_factor: float = 0.9
    plateau_patience: int = 5


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (``precision: auto`` is bf16-mixed on a GPU that has it,
    16-mixed on other GPUs, 32-true on the CPU; ``bf16-mixed`` also runs on CPUs with bf16).

    compile: ``torch.compile`` the box-prompted decoder step of SAM-family nets (``decoder``,
        ``decoder-lora``, ``encoder-decoder`` ... without clicks or automatic mode). It needs a C++
        compiler on the CPU; the first step of each batch size compiles (tens of seconds), later
        steps are faster (docs/benchmarks.md, "Training speed").
    keep_freed_memory: keep the memory each step frees for the next one, instead of glibc handing
        large blocks back and the kernel zero-filling them again (:mod:`medsamkit.training.memory`;
        a quarter of a CPU decoder step on cached embeddings). Linux with glibc only; restored after
        the fit.
    """

    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    compile: bool = False
    keep_freed_memory: bool = True
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    seed: int = 0
    deterministic: bool = False
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0


@dataclass
class OutputConfig:
    """Where a run writes: ``dir/checkpoints`` (best by val Dice and last), ``dir/logs``
    (TensorBoard, CSV), ``dir/<export>`` (the tuned model, official layout) with its JSON.

    resume: continue from ``dir/checkpoints/last.ckpt`` when it exists.
    save_every_n_steps: also rewrite last.ckpt every N optimiser steps (long epochs); default:
        at the end of every epoch.
    """

    dir: str = "runs/fit"
    resume: bool = True
    export: str = "model.pth"
    save_every_n_steps: int | None = None
    tensorboard: bool = True
    csv: bool = True
    wandb: bool = False
    wandb_project: str = "medsamkit"
    progress_bar: bool = True


@dataclass
class FitConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ layering
def read_yaml(path: str | Path) -> dict[str, Any]:
    """One config file as a dict (empty file -> {})."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "config file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read the config: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, f"a config file holds a mapping of sections, not a {type(data).__name__}")
    return data


def parse_overrides(tokens: list[str]) -> list[tuple[str, Any]]:
    """``["--trainer.max_epochs", "3", "--model.mode=lora"]`` -> [(dotted key, YAML value)]."""
    import yaml

    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) < 3:
            raise InputError(None, f"unexpected argument {token!r}: overrides look like --section.key VALUE")
        key, eq, text = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise InputError(None, f"--{key} needs a value")
            text = tokens[i + 1]
            i += 1
        i += 1
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        out.append((key, value))
    return out


def _merge(base: dict[str, Any], top: dict[str, Any], origin: dict[str, str], source: str,
           prefix: str = "") -> None:
    for key, value in top.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, source, dotted + ".")
        else:
            base[key] = value
            origin[dotted] = source


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(None, f"--{key}: {part!r} is a value, not a section")
    node[parts[-1]] = value


def load_config(paths: list[str | Path] = (), overrides: list[str] = ()) -> FitConfig:
    """Layer the YAML ``paths`` (later wins), then the overrides (``--section.key VALUE``
    tokens, see :func:`parse_overrides`), onto the defaults; validate."""
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in paths:
        _merge(tree, read_yaml(path), origin, str(path))
    for key, value in parse_overrides(list(overrides)):
        patch: dict[str, Any] = {}
        _set_dotted(patch, key, value)
        _merge(tree, patch, origin, f"--{key}")
    return _build(FitConfig, tree, origin, "")


def config_from_dict(tree: dict[str, Any]) -> FitConfig:
    """A validated config from a nested dict (e.g. one saved in a checkpoint)."""
    return _build(FitConfig, tree, {}, "")


# ------------------------------------------------------------------------------ validation
def _source(origin: dict[str, str], dotted: str) -> str | None:
    while dotted:
        if dotted in origin:
            return origin[dotted]
        dotted = dotted.rpartition(".")[0]
    return None


def _build(cls: type, tree: Any, origin: dict[str, str], prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(tree, dict):
        raise InputError(_source(origin, prefix.rstrip(".")), f"{where} must be a section (a mapping)")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise InputError(_source(origin, dotted), f"unknown key {dotted!r}{hint}; "
                             f"keys of {where}: {', '.join(known)}")
        kind = hints[key]
        if is_dataclass(kind):
            kwargs[key] = _build(kind, value, origin, dotted + ".")
        else:
            kwargs[key] = _check_type(value, kind, dotted, origin)
    config = cls(**kwargs)
    _check_choices(config, origin, prefix)
    return config


def _allowed(kind: Any) -> tuple[type, ...]:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return tuple(t for a in args for t in _allowed(a))
    if kind is type(None):
        return (type(None),)
    origin = typing.get_origin(kind)
    return (origin,) if origin is not None else (kind,)


def _check_type(value: Any, kind: Any, dotted: str, origin: dict[str, str]) -> Any:
    allowed = _allowed(kind)
    if isinstance(value, str) and float in allowed and str not in allowed:
        try:  # PyYAML reads 1e-4 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    elif float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in allowed else value
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise InputError(_source(origin, dotted), f"{dotted} must be {names}, got {value!r}")
    return value


def _check_choices(config: Any, origin: dict[str, str], prefix: str) -> None:
    def bad(key: str, value: Any, choices: tuple[str, ...]) -> None:
        if value not in choices:
            dotted = prefix + key
            raise InputError(_source(origin, dotted), f"{dotted} must be one of {', '.join(choices)}; got {value!r}")

    if isinstance(config, ModelConfig):
        bad("mode", config.mode, MODES)
    elif isinstance(config, ClicksConfig):
        if config.steps < 0:
            raise InputError(_source(origin, prefix + "steps"), f"{prefix}steps must be >= 0; got {config.steps}")
        if not 0.0 <= config.mask_prompt <= 1.0:
            raise InputError(_source(origin, prefix + "mask_prompt"),
                             f"{prefix}mask_prompt is a probability (0..1); got {config.mask_prompt}")
        for name in ("neighbour_mask", "neighbour_box"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise InputError(_source(origin, prefix + name),
                                 f"{prefix}{name} is a probability (0..1); got {getattr(config, name)}")
        if config.neighbour_mask + config.neighbour_box > 1.0:
            raise InputError(_source(origin, prefix + "neighbour_box"),
                             f"{prefix}neighbour_mask + {prefix}neighbour_box must be at most 1; got "
                             f"{config.neighbour_mask} + {config.neighbour_box}")
        if config.click_weight < 0:
            raise InputError(_source(origin, prefix + "click_weight"),
                             f"{prefix}click_weight must be >= 0; got {config.click_weight}")
        if config.click_radius <= 0:
            raise InputError(_source(origin, prefix + "click_radius"),
                             f"{prefix}click_radius must be > 0; got {config.click_radius}")
    elif isinstance(config, LossConfig):
        bad("kind", config.kind, ("auto", "sam2", "dice-bce"))
    elif isinstance(config, OptimConfig):
        bad("scheduler", config.scheduler, SCHEDULERS)
    elif isinstance(config, DataConfig):
        bad("embedding_dtype", config.embedding_dtype, ("float16", "float32"))
        bad("embedding_backend", config.embedding_backend, ("auto", "torch", "onnx", "openvino"))
        for flip in config.embedding_flips:
            bad("embedding_flips", flip, ("hflip", "vflip"))
        if config.embedding_warps < 0:
            raise InputError(_source(origin, prefix + "embedding_warps"),
                             f"{prefix}embedding_warps must be >= 0; got {config.embedding_warps}")
        bad("prompt", config.prompt, ("box", "click"))
        for key in ("clip_length", "prompt_every"):
            if getattr(config, key) < (1 if key == "clip_length" else 0):
                raise InputError(_source(origin, prefix + key), f"{prefix}{key} must be at least "
                                 f"{1 if key == 'clip_length' else 0}; got {getattr(config, key)}")
        if not 0.0 <= config.clip_reverse <= 1.0:
            raise InputError(_source(origin, prefix + "clip_reverse"),
                             f"{prefix}clip_reverse is a probability (0..1); got {config.clip_reverse}")
        if config.batch_size < 1:
            raise InputError(_source(origin, prefix + "batch_size"), f"{prefix}batch_size must be at least 1")
