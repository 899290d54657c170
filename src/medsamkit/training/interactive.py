"""SAM's interactive training loop on cached embeddings, with clicks simulated as the CVPR 2025
protocol places them.

For a batch of samples (embedding, box, target mask), step 0 decodes the box; each of the next
``steps`` adds, per sample, one click at the distance-transform maximum of the largest 8-connected
error component of the current prediction (foreground where the target is, else background;
:func:`medsamkit.evaluation.interactive.next_click`, with a random choice among equal maxima)
and decodes the box, all the clicks so far and, with probability ``mask_prompt``, the previous
step's low-resolution logits (detached) as the mask prompt. A sample whose prediction is already
perfect gets a padding point (label -1: "not a point") for that step. Every step's logits are
returned, so the loss covers the box step and each click step.

With ``backprop="sampled"`` (the cheap variant of SAM's loop: its iterative clicks are sampled
without gradient) only two steps carry gradient: the box step and one click step drawn uniformly
from 1..``steps`` per batch; the click steps before it run under ``torch.no_grad()`` (they only
place the clicks) and the steps after it are not run. On the average a batch costs two decodes
with gradient plus ``(steps - 1) / 2`` without, instead of ``steps + 1`` with gradient.

Coordinates are in the model-input frame (the cache's masks and boxes live there); the errors are
computed inside the valid (unpadded) region only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.interactive import next_click
from ..models.sam import Sam


#: which interactive steps carry gradient (:class:`ClickTraining`)
BACKPROP = ("all", "sampled")


@dataclass(frozen=True)
class ClickTraining:
    """The simulated interaction of each training sample.

    Attributes:
        steps: click steps after the box step (0: box-only training).
        mask_prompt: probability, per batch, that the click steps feed the previous logits back as
            the mask prompt (the CLI and sessions can run either way).
        backprop: ``"all"`` (every step's logits carry gradient and are returned) or
            ``"sampled"`` (the box step and one random click step; module docstring).
    """

    steps: int = 0
    mask_prompt: float = 0.5
    backprop: str = "all"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"click steps must be >= 0, got {self.steps}")
        if not 0.0 <= self.mask_prompt <= 1.0:
            raise ValueError(f"mask_prompt is a probability, got {self.mask_prompt}")
        if self.backprop not in BACKPROP:
            raise ValueError(f"backprop must be one of {', '.join(BACKPROP)}, got {self.backprop!r}")


def simulate_clicks(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                    rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """One protocol click per sample: ((B, 2) x, y in the mask's frame, (B,) labels 1/0/-1).

    Args:
        logits: (B, 1, S, S) logits at the target's size.
        target: (B, 1, S, S) in {0, 1}.
        valid: (B, 2) (h, w) of the image inside the padded square.
    """
    pred = (logits.detach() > 0).cpu().numpy()[:, 0]
    truth = target.detach().cpu().numpy()[:, 0] > 0.5
    points = np.zeros((len(pred), 2), np.float64)
    labels = np.full(len(pred), -1, np.int64)
    for i, (h, w) in enumerate(valid.cpu().numpy()):
        click = next_click(pred[i, :h, :w], truth[i, :h, :w], rng)
        if click is not None:
            y, x = click.index
            points[i] = (x, y)
            labels[i] = int(click.positive)
    return points, labels


def interactive_steps(model: Sam, embeddings: torch.Tensor, boxes: torch.Tensor, target: torch.Tensor,
                      valid: torch.Tensor, config: ClickTraining, rng: np.random.RandomState
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the box step and the click steps; returns the (logits, iou) of each step that carries
    gradient: all ``config.steps + 1`` with ``backprop="all"`` (or under ``torch.no_grad()``), the
    box step and one drawn click step with ``"sampled"``."""
    outputs = [model.decode(embeddings, boxes=boxes)]
    size = target.shape[-2:]
    scale = model.image_size / size[-1]  # mask frame -> model-input frame (1 when they agree)
    use_mask = rng.random_sample() < config.mask_prompt
    sampled = config.backprop == "sampled" and torch.is_grad_enabled()
    last = int(rng.randint(1, config.steps + 1)) if sampled and config.steps else config.steps
    points = torch.zeros((len(boxes), 0, 2), device=boxes.device)
    labels = torch.zeros((len(boxes), 0), dtype=torch.int64, device=boxes.device)
    previous = outputs[0][0]
    for step in range(1, last + 1):
        current = F.interpolate(previous.detach().float(), size=size, mode="bilinear", align_corners=False)
        xy, lab = simulate_clicks(current, target, valid, rng)
        points = torch.cat([points, torch.as_tensor(xy * scale, dtype=points.dtype, device=points.device)[:, None]], 1)
        labels = torch.cat([labels, torch.as_tensor(lab, device=labels.device)[:, None]], 1)
        masks = previous.detach() if use_mask else None
        with torch.set_grad_enabled(torch.is_grad_enabled() and (not sampled or step == last)):
            out = model.decode(embeddings, boxes=boxes, points=(points, labels), masks=masks)
        previous = out[0]
        if not sampled or step == last:
            outputs.append(out)
    return outputs
