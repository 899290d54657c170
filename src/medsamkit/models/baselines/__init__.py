"""Segmentation networks trained from scratch, the baselines of the fine-tuned SAM family.

Both take the family's normalised (B, 3, S, S) model input and the (B, 4) model-input boxes and
return (B, 1, S, S) logits, so the same data, loss and evaluation serve them and the SAM models:

- ``unet``: a compact standard U-Net (ignores the box: the no-prompt baseline).
- ``prompted-resnet``: a small ResNet encoder with a light convolutional decoder; the box is an
  extra input channel (1 inside, 0 outside).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .prompted_resnet import PromptedResNet, box_channel
from .unet import UNet

#: baseline name -> builder taking the channel width at full resolution
BASELINES: dict[str, Callable[[int], nn.Module]] = {
    "unet": lambda width: UNet(width=width),
    "prompted-resnet": lambda width: PromptedResNet(width=width),
}


def build_baseline(name: str, width: int = 32) -> nn.Module:
    """A randomly initialised baseline by name (see :data:`BASELINES`)."""
    return BASELINES[name](width)


__all__ = ["BASELINES", "PromptedResNet", "UNet", "box_channel", "build_baseline"]
