"""Build and run a fine-tuning (or from-scratch) training run from a :class:`FitConfig`.

``fit(config)`` opens the preprocess cache named by ``data.cache`` (its train/val splits),
builds the net for ``model.*``, the data module, the Lightning Trainer (checkpoints: best by val
Dice and last; TensorBoard/CSV logs; W&B when asked; DDP from ``trainer.strategy/devices/
num_nodes``), resumes from ``<output.dir>/checkpoints/last.ckpt`` when it exists, trains, and
exports the best weights in the official layout (:mod:`medsamkit.training.export`). Sources,
model and geometry can be injected (tests, notebooks).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import nn

from ..data.cache import EMBEDDINGS
from ..errors import InputError
from ..models.baselines import BASELINES, build_baseline
from ..models.registry import get_spec
from ..preprocessing.geometry import ModelGeometry, geometry_for
from .augment import WarpRanges, build_augmenter
from .config import FitConfig
from .datamodule import DataSources, LoaderSettings, SampleDataModule
from .datasets import head
from .embedding_cache import EmbeddingCacheSpec, variant_names
from .export import export_net
from .losses import SegmentationLoss
from .module import SegmentationModule, check_trained_state
from .interactive import ClickTraining
from .nets import CACHED_MODES, BaselineNet, SamNet

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Where a finished run put things, and how it did."""

    out_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    export_path: Path | None
    best_val_dice: float | None
    epochs: int
    seconds: float
    processes: int = 1


# ------------------------------------------------------------------------------ parts
def config_geometry(config: FitConfig) -> ModelGeometry:
    """The geometry framing the model's input: the registry model's family, or a baseline's
    ``model.preprocessing``."""
    m = config.model
    return geometry_for(m.preprocessing if m.name in BASELINES else get_spec(m.name).preprocessing)


def build_net(config: FitConfig, model: nn.Module | None = None) -> nn.Module:
    """The adapter to train; ``model`` replaces the registry's weights or the baseline (injection)."""
    m = config.model
    if config.trainer.compile and (m.name in BASELINES or is_sam2(config) or m.automatic or m.clicks.steps):
        log.warning("trainer.compile only compiles the box-prompted decoder step of SAM-family nets; "
                    "it does nothing for %s", "automatic mode" if m.automatic else
                    "click training" if m.clicks.steps and m.name not in BASELINES else m.name)
    if m.name in BASELINES:
        return BaselineNet(model if model is not None else build_baseline(m.name, m.width))
    if model is None:
        if m.pretrained:
            from ..models.loader import load_model

            model = load_model(m.name, m.checkpoint, device="cpu").model
        else:
            model = get_spec(m.name).build()
    if is_sam2(config):
        from .sam2_module import Sam2Net

        return Sam2Net(model, m.mode)
    if config.trainer.compile:
        check_compiler()
    return SamNet(model, m.mode, m.automatic, m.lora, train_iou_head=config.loss.iou_mse > 0,
                  clicks=ClickTraining(m.clicks.steps, m.clicks.mask_prompt, m.clicks.backprop,
                                       m.clicks.neighbour_mask, m.clicks.neighbour_box,
                                       m.clicks.click_weight, m.clicks.click_radius),
                  compile=config.trainer.compile)


def check_compiler() -> None:
    """``trainer.compile`` on the CPU needs a C++ compiler (torch.compile's inductor builds kernels)."""
    import shutil

    if torch.cuda.is_available():
        return
    if not any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        raise InputError(None, "trainer.compile: true needs a C++ compiler on the CPU (g++, c++ or clang++ "
                               "on PATH; e.g. apt-get install g++), or set trainer.compile: false")


def is_sam2(config: FitConfig) -> bool:
    """Whether ``model.name`` is a SAM2-family model (trained on clips, :mod:`.sam2_module`)."""
    return config.model.name not in BASELINES and get_spec(config.model.name).family == "sam2"


def open_sources(config: FitConfig, geometry: ModelGeometry) -> DataSources:
    """Train/val subsets of the preprocess cache ``data.cache``, checked against the geometry."""
    from ..data.cache import PreprocessedCache

    d = config.data
    if not d.cache:
        raise InputError(None, "no training data: set data.cache to a folder written by medsamkit preprocess")
    cache = PreprocessedCache(d.cache)
    cache.check_model(geometry.family, geometry.input_size)
    train = cache.subset(d.train_split)
    val = cache.subset(d.val_split) if d.val_split in cache.splits else None
    if val is None:
        log.warning("%s has no %r split: no validation, the last checkpoint is exported", d.cache, d.val_split)
    return DataSources(train, val)


def resolve_precision(trainer_precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on a GPU with bf16, 16-mixed on other GPUs, 32-true otherwise."""
    if trainer_precision != "auto":
        return trainer_precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _loggers(config: FitConfig, out: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    o = config.output
    loggers: list = []
    if o.tensorboard:
        loggers.append(TensorBoardLogger(out, name="tensorboard"))
    if o.csv:
        loggers.append(CSVLogger(out, name="csv"))
    if o.wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(project=o.wandb_project, save_dir=str(out)))
        except (ImportError, ModuleNotFoundError):
            raise InputError(None, "output.wandb: true needs the wandb package (pip install wandb)") from None
    return loggers


def build_trainer(config: FitConfig, out: Path, has_val: bool) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    t = config.trainer
    strategy = t.strategy
    if strategy == "ddp" and config.model.name not in BASELINES and (config.model.mode == "full" or is_sam2(config)):
        # box prompts leave the point/mask embeddings (SAM2: also mask_downsample) unused
        strategy = "ddp_find_unused_parameters_true"
    # Lightning's save_last only follows a new best; a separate callback rewrites last.ckpt
    # every epoch (or every output.save_every_n_steps steps) so an interruption loses little
    every = config.output.save_every_n_steps
    last = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False, every_n_train_steps=every,
                           every_n_epochs=None if every else 1)
    callbacks: list = [last]
    if t.keep_freed_memory:
        from .memory import KeepFreedMemory

        callbacks.append(KeepFreedMemory())
    if has_val:
        callbacks.insert(0, ModelCheckpoint(dirpath=out / "checkpoints", filename="best-{epoch:03d}-{val_dice:.4f}",
                                            monitor="val_dice", mode="max", save_top_k=1,
                                            auto_insert_metric_name=False))
    loggers = _loggers(config, out)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return L.Trainer(
        default_root_dir=out, max_epochs=t.max_epochs, max_steps=t.max_steps, accelerator=t.accelerator,
        devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic, check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches if has_val else 0, callbacks=callbacks,
        logger=loggers or False, enable_progress_bar=config.output.progress_bar, num_sanity_val_steps=0,
    )


def build_datamodule(config: FitConfig, net: nn.Module, geometry: ModelGeometry, sources: DataSources,
                     embedding_root: Path) -> SampleDataModule:
    d = config.data
    sources = DataSources(head(sources.train, d.max_train_samples),
                          None if sources.val is None else head(sources.val, d.max_val_samples))
    neighbours = isinstance(net, SamNet) and net.clicks.steps > 0 and net.clicks.uses_neighbours
    loader = LoaderSettings(d.batch_size, d.num_workers, d.box_jitter, neighbours)
    if getattr(net, "frame_encoder", None) is not None:  # a SAM2-family net: clips
        from .clips import ClipDataModule, ClipSettings

        clips = ClipSettings(d.clip_length, d.prompt, d.prompt_every, d.clip_reverse, d.box_jitter)
        frozen = not net.encoder_trains and d.embeddings
        spec = EmbeddingCacheSpec(embedding_root, d.embedding_dtype, (), progress=config.output.progress_bar)
        return ClipDataModule(sources, geometry, loader, clips, encoder=net.frame_encoder if frozen else None,
                              cache_spec=spec)
    cached = isinstance(net, SamNet) and net.mode in CACHED_MODES and d.embeddings
    if cached:
        a = d.augment
        spec = EmbeddingCacheSpec(embedding_root, d.embedding_dtype, variant_names(d.embedding_flips, d.embedding_warps),
                                  progress=config.output.progress_bar, backend=d.embedding_backend,
                                  warp=WarpRanges(a.rotate_deg, a.scale, a.intensity) if d.embedding_warps else None)
        return SampleDataModule(sources, geometry, loader, encoder=net.model.image_encoder, cache_spec=spec)
    a = d.augment
    return SampleDataModule(sources, geometry, loader,
                            augment=build_augmenter(a.hflip, a.vflip, a.rotate_deg, a.scale, a.intensity))


def build_module(config: FitConfig, net: nn.Module, monitor: tuple[str, str]) -> SegmentationModule:
    """The LightningModule: SAM2's clip module with its loss, or the segmentation module."""
    lc = config.loss
    if is_sam2(config):
        from .losses import Sam2FrameLoss
        from .sam2_module import Sam2Module

        kind = "sam2" if lc.kind == "auto" else lc.kind
        loss = Sam2FrameLoss(kind, lc.focal, lc.dice, lc.iou, lc.object_score, lc.bce)
        return Sam2Module(net, loss, config.optim, monitor, hparams=config.to_dict())
    if lc.kind == "sam2":
        raise InputError(None, "loss.kind sam2 is for SAM2-family models; SAM models use dice-bce (or auto)")
    loss = SegmentationLoss(lc.dice, lc.bce, lc.iou_mse)
    return SegmentationModule(net, loss, config.optim, monitor, hparams=config.to_dict())


# ------------------------------------------------------------------------------ run
def _export(config: FitConfig, module: SegmentationModule, best: Path | None, out: Path,
            geometry: ModelGeometry, best_dice: float | None) -> Path:
    if best is not None:
        checkpoint = torch.load(best, map_location="cpu", weights_only=False)
        check_trained_state(module, checkpoint, str(best))
        module.load_state_dict(checkpoint["state_dict"], strict=False)
    net = module.net
    m = config.model
    info = {"model": m.name, "family": geometry.family, "input_size": geometry.input_size,
            "mode": getattr(net, "mode", "scratch"), "automatic": bool(m.automatic) if isinstance(net, SamNet)
            else not getattr(net, "uses_box", False), "width": m.width if m.name in BASELINES else None,
            "base_checkpoint": m.checkpoint, "val_dice": best_dice,
            "source_checkpoint": str(best) if best else None, "data": config.data.cache,
            "click_steps": m.clicks.steps if isinstance(net, SamNet) else 0}
    path = export_net(net, out / config.output.export, info)
    if isinstance(net, SamNet) and net.mode == "decoder-lora":  # also the small adapter alone
        from ..models.adapters import save_adapter
        from .lora import DECODER_PROMPT_PARTS

        adapter = save_adapter(net.model, path.with_name(path.stem + ".adapter.pt"), m.name, m.lora.rank,
                               m.lora.alpha, DECODER_PROMPT_PARTS, info)
        log.info("exported the adapter alone: %s (%.0f kB)", adapter, adapter.stat().st_size / 1024)
    return path


def fit(config: FitConfig, sources: DataSources | None = None, model: nn.Module | None = None,
        geometry: ModelGeometry | None = None) -> FitResult:
    """Train as configured; return where the checkpoints and the exported model are.

    Args:
        sources: train/val samples (default: the cache named by ``data.cache``).
        model: the model to tune (default: the registry's ``model.name``; a baseline's network).
        geometry: overrides the model family's geometry (tests with tiny models).
    """
    start = time.perf_counter()
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    geometry = geometry or config_geometry(config)
    sources = sources if sources is not None else open_sources(config, geometry)
    net = build_net(config, model)
    out = Path(config.output.dir)
    has_val = sources.val is not None and len(sources.val) > 0
    if config.optim.scheduler == "plateau" and not has_val:
        log.warning("optim.scheduler plateau without validation data: it follows the training loss")
    embedding_root = Path(config.data.embedding_dir) if config.data.embedding_dir else \
        (Path(config.data.cache) / EMBEDDINGS if config.data.cache else out / EMBEDDINGS)
    datamodule = build_datamodule(config, net, geometry, sources, embedding_root)
    monitor = ("val_dice", "max") if has_val else ("train_loss_epoch", "min")
    module = build_module(config, net, monitor)
    trainer = build_trainer(config, out, has_val)
    last = out / "checkpoints" / "last.ckpt"
    resume = last if config.output.resume and last.is_file() else None
    if resume is not None:
        log.info("resuming from %s", resume)
    with warnings.catch_warnings():
        # frozen parts are in eval mode on purpose; a resumed run reuses its checkpoint folder
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    last_cb = next(c for c in trainer.checkpoint_callbacks if c.filename == "last")
    best_cb = next((c for c in trainer.checkpoint_callbacks if c is not last_cb), None)
    best = Path(best_cb.best_model_path) if best_cb and best_cb.best_model_path else None
    score = best_cb.best_model_score if best_cb is not None else None
    best_dice = float(score) if score is not None else None
    last_path = Path(last_cb.best_model_path) if last_cb.best_model_path else None
    export_path = None
    if trainer.is_global_zero:
        export_path = _export(config, module, best or last_path, out, geometry, best_dice)
        log.info("exported %s", export_path)
    return FitResult(out, best, last_path, export_path, best_dice, trainer.current_epoch,
                     time.perf_counter() - start, trainer.world_size)
