"""The LightningModule: loss, validation Dice, optimiser and schedule around an injected net
(:class:`~medsamkit.training.nets.SamNet` or :class:`~medsamkit.training.nets.BaselineNet`).

The decoder's 256 x 256 logits are upsampled (bilinear) to the mask's size S before the loss,
as MedSAM does at 1024. A net may return per-pixel loss weights as a third output (click
training's ``click_weight``); they weight the BCE. Validation Dice is per sample on the valid
(unpadded) region of the model-input frame, ``logits > 0``, averaged over the samples whose mask or prediction is
non-empty, and reduced over all processes. Training checkpoints keep only the trained weights
(the decoder alone in decoder mode, adapters and decoder in LoRA mode) and a hash of the frozen
ones, so resuming onto other base weights is refused.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..errors import CheckpointError
from .config import OptimConfig
from .losses import SegmentationLoss, batch_dice


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.01):
    """LR factor per step: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        span = max(total_steps - warmup_steps, 1)
        progress = min((step - warmup_steps) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class SegmentationModule(L.LightningModule):
    """Args:
        net: the adapter being trained.
        loss: the loss callable.
        optim: optimiser and schedule settings.
        monitor: ("val_dice", "max"), or ("train_loss_epoch", "min") when there is no validation set.
        hparams: the run's configuration, saved in checkpoints and logs.
    """

    def __init__(self, net: torch.nn.Module, loss: SegmentationLoss, optim: OptimConfig,
                 monitor: tuple[str, str] = ("val_dice", "max"), hparams: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net, self.loss, self.optim, self.monitor = net, loss, optim, monitor
        self.strict_loading = False  # checkpoints hold only the trained weights
        if hparams is not None:
            self.save_hyperparameters(hparams)
        self._frozen_hash: str | None = None
        self._dice_sum = torch.zeros(())
        self._dice_count = torch.zeros(())

    # --- steps ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Lightning leaves modules in the mode they come in (a loaded model is in eval mode);
        # the net puts the trained parts in train mode and keeps the frozen ones in eval
        self.net.train()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits at the mask size (B, 1, S, S) and the IoU predictions (or None)."""
        return self._outputs(batch)[:2]

    def _outputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Logits at the mask size, IoU predictions and the net's per-pixel loss weights (or None)."""
        logits, iou, *extra = self.net(batch)
        size = batch["mask"].shape[-2:]
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits, iou, (extra[0] if extra else None)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits, iou, weight = self._outputs(batch)
        parts = self.loss(logits, _repeat(batch["mask"], logits), iou, weight)
        n = batch["mask"].shape[0]
        self.log("train_loss", parts["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        for key in ("dice", "bce", "iou_mse"):
            if key in parts:
                self.log(f"train_{key}", parts[key], on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return parts["loss"]

    def on_validation_epoch_start(self) -> None:
        self._dice_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._dice_count = torch.zeros((), device=self.device, dtype=torch.float64)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits, iou = self(batch)
        parts = self.loss(logits, batch["mask"], iou)
        self.log("val_loss", parts["loss"], on_epoch=True, batch_size=batch["mask"].shape[0], sync_dist=True)
        dice = batch_dice(logits.float(), batch["mask"], batch["valid"])
        counted = ~torch.isnan(dice)
        self._dice_sum += dice[counted].double().sum()
        self._dice_count += counted.sum()

    def on_validation_epoch_end(self) -> None:
        total = self.trainer.strategy.reduce(self._dice_sum.clone(), reduce_op="sum")
        count = self.trainer.strategy.reduce(self._dice_count.clone(), reduce_op="sum")
        value = (total / count).float() if count > 0 else torch.tensor(float("nan"), device=self.device)
        self.log("val_dice", value, prog_bar=True, sync_dist=False)

    # --- optimisation -----------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.net.parameters() if p.requires_grad]
        # the fused kernel: one pass over all parameters (2.5 ms against 10-14 ms per step for the
        # LiteMedSAM decoder on 2 CPU threads, docs/benchmarks.md); the same update up to rounding
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
        opt = torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay, fused=fused or None)
        if self.optim.scheduler == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, warmup_cosine(self.optim.warmup_steps, total, self.optim.min_lr_ratio))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if self.optim.scheduler == "plateau":
            name, mode = self.monitor
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode=mode, factor=self.optim.plateau_factor, patience=self.optim.plateau_patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": name, "interval": "epoch"}}
        return opt

    # --- checkpoints ------------------------------------------------------------------
    def trained_state_keys(self) -> set[str]:
        return {k for k in self.state_dict() if self.net.is_trained_key(k.removeprefix("net."))}

    def frozen_hash(self) -> str:
        """SHA-256 of the weights that are not trained (computed once: they do not change)."""
        if self._frozen_hash is None:
            h = hashlib.sha256()
            trained = self.trained_state_keys()
            for key, tensor in sorted(self.state_dict().items()):
                if key not in trained:
                    h.update(key.encode())
                    h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._frozen_hash = h.hexdigest()
        return self._frozen_hash

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trained = self.trained_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
        checkpoint["medsamkit"] = {"frozen_sha256": self.frozen_hash(), "mode": getattr(self.net, "mode", "baseline")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_trained_state(self, checkpoint)


def _repeat(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The targets repeated when the net returns several predictions per sample (click steps,
    stacked along the batch)."""
    k = logits.shape[0] // target.shape[0]
    return target if k == 1 else target.repeat(k, *([1] * (target.dim() - 1)))


def check_trained_state(module: SegmentationModule, checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
    """Refuse a training checkpoint whose trained keys or frozen base weights differ from the module's."""
    expected, found = module.trained_state_keys(), set(checkpoint.get("state_dict", {}))
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise CheckpointError(
            f"{source} does not fit this run: {len(missing)} trained weights missing ({', '.join(missing[:3])}), "
            f"{len(extra)} unexpected ({', '.join(extra[:3])}); was it written with another model.mode or model?")
    saved = checkpoint.get("medsamkit", {}).get("frozen_sha256")
    if saved is not None and saved != module.frozen_hash():
        raise CheckpointError(f"{source} was trained on other base weights than this run's "
                              "(model.name/model.checkpoint changed); use a new output.dir")
