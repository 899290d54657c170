"""SAM2-family fine-tuning: the trained net over clips and its LightningModule.

:class:`Sam2Net` runs a clip (:mod:`.clips`) frame by frame with
:func:`~medsamkit.models.sam2.tracking.track_step`, gradients flowing through the memories:
prompted frames are conditioning frames (segmented without memory), the others attend to the
clip's memories so far, as SAM2's and MedSAM2's trainers do. Modes:

- ``decoder`` (the default; "image encoder frozen"): the image encoder and the decoder's
  ``conv_s0``/``conv_s1`` (which feed the cached features) are frozen; the prompt encoder, mask
  decoder, memory attention, memory encoder, object-pointer heads and the learned embeddings
  train. The frozen part's features are cached per slice.
- ``full``: everything trains; images are encoded every step.

:class:`Sam2Module` is :class:`~medsamkit.training.module.SegmentationModule` (optimiser, schedule,
checkpoints with only the trained weights and the frozen weights' hash) with SAM2's loss
(:class:`~medsamkit.training.losses.Sam2FrameLoss`, summed over frames, divided by objects) and
validation Dice per frame.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models.sam2.base import FrameFeatures, HeadsOutput, SAM2Base
from ..models.sam2.tracking import MemoryBank, PointPrompt, track_step
from .clips import FrameEncoder
from .config import OptimConfig
from .losses import Sam2FrameLoss, batch_dice
from .module import SegmentationModule

SAM2_MODES = ("decoder", "full")
_FROZEN = {"decoder": ("image_encoder.", "sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1."), "full": ()}


class Sam2Net(nn.Module):
    """A :class:`~medsamkit.models.sam2.base.SAM2Base` trained on clips in one mode."""

    uses_box = True  # prompted (the export's metadata: not an automatic model)
    automatic = False

    def __init__(self, model: SAM2Base, mode: str = "decoder") -> None:
        super().__init__()
        if mode not in SAM2_MODES:
            raise InputError(None, f"model.mode {mode!r} is not available for SAM2-family models; modes: "
                                   "decoder (image encoder frozen, features cached; the default) or full")
        self.model, self.mode = model, mode
        for name, param in model.named_parameters():
            param.requires_grad = not self._frozen(name)
        self.encoder_trains = mode == "full"
        # shares the model's modules; kept out of the module tree (no duplicate state_dict keys)
        object.__setattr__(self, "frame_encoder", FrameEncoder(model))

    def _frozen(self, key: str) -> bool:
        prefixes = _FROZEN[self.mode]
        return bool(prefixes) and key.startswith(prefixes)

    def is_trained_key(self, key: str) -> bool:
        """Whether ``key`` (relative to this net) is trained, hence kept in training checkpoints."""
        return key.startswith("model.") and not self._frozen(key.removeprefix("model."))

    def train(self, mode: bool = True) -> Sam2Net:
        super().train(mode)
        if mode and not self.encoder_trains:
            self.model.image_encoder.eval()
        return self

    def _features(self, clip: dict[str, torch.Tensor]) -> FrameFeatures:
        """The clip's frames' features, batch T."""
        if "features" in clip:
            vision, s0, s1 = self.frame_encoder.unpack(clip["features"].float())
            return FrameFeatures(vision, (s0, s1))
        with torch.set_grad_enabled(self.encoder_trains and torch.is_grad_enabled()):
            return self.model.frame_features(clip["image"])

    def forward_clip(self, clip: dict[str, torch.Tensor]) -> list[HeadsOutput]:
        """One clip (the item's tensors without the batch axis) -> each valid frame's heads."""
        n = int(clip["frame_valid"].sum())
        features = self._features({k: v[:n] for k, v in clip.items() if k in ("features", "image")})
        bank = MemoryBank(num_frames=n)
        outs = []
        for t in range(n):
            frame = FrameFeatures(features.vision[t:t + 1], tuple(f[t:t + 1] for f in features.high_res))
            prompted = bool(clip["is_prompt"][t])
            points = PointPrompt(clip["prompt_coords"][t:t + 1], clip["prompt_labels"][t:t + 1].int()) \
                if prompted else None
            if points is not None and int(points.labels[0, 1]) == -1:  # a click: drop the padding point
                points = PointPrompt(points.coords[:, :1], points.labels[:, :1])
            step = track_step(self.model, frame, bank, t, points=points, is_cond=prompted or t == 0,
                              run_memory_encoder=t < n - 1)
            (bank.cond if prompted or t == 0 else bank.tracked)[t] = step.memory
            outs.append(step.heads)
        return outs

    def export_model(self) -> nn.Module:
        """The model in the official layout (``save_checkpoint`` writes ``{"model": state_dict}``)."""
        return self.model


def _clip(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i] for k, v in batch.items()}


class Sam2Module(SegmentationModule):
    """The training module of :class:`Sam2Net` (see the module docstring)."""

    def __init__(self, net: Sam2Net, loss: Sam2FrameLoss, optim: OptimConfig,
                 monitor: tuple[str, str] = ("val_dice", "max"), hparams: dict[str, Any] | None = None) -> None:
        super().__init__(net, loss, optim, monitor, hparams)  # type: ignore[arg-type]

    def _clip_losses(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Loss parts summed over frames and clips, divided by the clips; and per-clip Dice (frames)."""
        totals: dict[str, torch.Tensor] = {}
        dices = []
        n_clips = batch["mask"].shape[0]
        for i in range(n_clips):
            clip = _clip(batch, i)
            heads = self.net.forward_clip(clip)
            for t, h in enumerate(heads):
                target = clip["mask"][t:t + 1]
                size = target.shape[-2:]
                multimask = F.interpolate(h.multimask_logits, size=size, mode="bilinear", align_corners=False)
                chosen = F.interpolate(h.low_res, size=size, mode="bilinear", align_corners=False)
                parts = self.loss(multimask, chosen, h.ious, h.object_score, target)
                for key, value in parts.items():
                    totals[key] = totals.get(key, 0) + value / n_clips
                dices.append(batch_dice(chosen.detach().float(), target, clip["valid"][None]))
        return totals, dices

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        parts, _ = self._clip_losses(batch)
        n = batch["mask"].shape[0]
        self.log("train_loss", parts["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=n, sync_dist=True)
        for key in ("focal", "dice", "iou", "bce", "object_score"):
            if key in parts:
                self.log(f"train_{key}", parts[key], on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return parts["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        parts, dices = self._clip_losses(batch)
        self.log("val_loss", parts["loss"], on_epoch=True, batch_size=batch["mask"].shape[0], sync_dist=True)
        dice = torch.cat(dices)
        counted = ~torch.isnan(dice)
        self._dice_sum += dice[counted].double().sum()
        self._dice_count += counted.sum()
