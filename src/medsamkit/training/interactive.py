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

With ``click_weight`` > 0 each click step also gets a per-pixel loss weight at the target's size:
1, plus ``click_weight`` on a disk of radius ``click_radius`` around each of the step's clicks
(:func:`click_weights`). A click is a few pixels of a 65 536-pixel loss: unweighted, the loss
barely asks the decoder to answer it (LiteMedSAM, trained with boxes only, answers a lone click
with a blob of a few pixels).

With ``neighbour_mask`` > 0 (3D sessions' ``RefineConfig(carry_mask=True)``: a slice a click's
change propagates to is decoded with the box grown from its neighbour's mask and the neighbour's
new low-resolution logits as the mask prompt) each sample whose batch brings an adjacent slice of
the same label (:class:`NeighbourPrompt`, ``EmbeddingDataset(neighbours=True)``) is, with that
probability, prompted as such a slice: the box is the neighbour's (grown as propagation grows it)
and every step, the box step and the click steps, gets the neighbour's truth as a logits-like
mask prompt (:func:`neighbour_logits`: per sample a random level inside, 3..10, and outside, -8..-25,
about what LiteMedSAM's low-resolution logits hold); the target stays the sample's own mask.
With ``neighbour_box`` > 0 a sample is, with that probability, prompted with the neighbour's
propagation box alone (no mask prompt): the box every slice that propagation reaches is decoded
from, where the key slice gets the user's box.

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
        neighbour_mask: probability, per sample that has an adjacent slice in its batch, of being
            prompted as a propagated slice of a 3D session with ``carry_mask`` (module docstring).
        neighbour_box: probability, per such sample, of being prompted with the box propagation
            takes from the adjacent slice's mask, without a mask prompt; drawn among the samples
            not drawn for ``neighbour_mask`` (the two add up to at most 1).
        click_weight: extra loss weight of the pixels near each click of a click step (0: none).
        click_radius: radius of those disks, pixels of the target's frame.
    """

    steps: int = 0
    mask_prompt: float = 0.5
    backprop: str = "all"
    neighbour_mask: float = 0.0
    neighbour_box: float = 0.0
    click_weight: float = 0.0
    click_radius: float = 4.0

    def __post_init__(self) -> None:
        if self.click_weight < 0 or self.click_radius <= 0:
            raise ValueError(f"click_weight must be >= 0 and click_radius > 0, got {self.click_weight}, "
                             f"{self.click_radius}")
        if self.steps < 0:
            raise ValueError(f"click steps must be >= 0, got {self.steps}")
        if not 0.0 <= self.mask_prompt <= 1.0:
            raise ValueError(f"mask_prompt is a probability, got {self.mask_prompt}")
        for name in ("neighbour_mask", "neighbour_box"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, got {getattr(self, name)}")
        if self.neighbour_mask + self.neighbour_box > 1.0:
            raise ValueError(f"neighbour_mask + neighbour_box must be at most 1, got "
                             f"{self.neighbour_mask} + {self.neighbour_box}")
        if self.backprop not in BACKPROP:
            raise ValueError(f"backprop must be one of {', '.join(BACKPROP)}, got {self.backprop!r}")

    @property
    def uses_neighbours(self) -> bool:
        """Whether training items must bring an adjacent slice (:class:`NeighbourPrompt`)."""
        return self.neighbour_mask > 0 or self.neighbour_box > 0


#: the logits-like values of a mask prompt made from a binary mask without random levels
#: (``ModelGeometry.mask_to_model``)
MASK_LOGIT = 8.0
#: ranges of the random levels inside and outside (:func:`neighbour_logits`)
INSIDE_LOGITS = (3.0, 10.0)
OUTSIDE_LOGITS = (8.0, 25.0)


@dataclass(frozen=True)
class NeighbourPrompt:
    """An adjacent slice of each sample's label, as a 3D propagation would prompt the sample.

    Attributes:
        mask: (B, 1, S, S) the adjacent slice's mask in {0, 1}, in the sample's frame.
        box: (B, 4) the propagation box made from it, model-input pixels.
        present: (B,) bool, whether the sample has such a slice (else ``mask`` and ``box`` are unused).
    """

    mask: torch.Tensor
    box: torch.Tensor
    present: torch.Tensor

    @classmethod
    def from_batch(cls, batch: dict[str, torch.Tensor]) -> NeighbourPrompt | None:
        """The batch's ``neighbour_mask``, ``neighbour_box`` and ``has_neighbour`` (None without them)."""
        if "neighbour_mask" not in batch:
            return None
        return cls(batch["neighbour_mask"], batch["neighbour_box"], batch["has_neighbour"].bool())


def neighbour_logits(mask: torch.Tensor, size: tuple[int, int] | torch.Size,
                     rng: np.random.RandomState | None = None) -> torch.Tensor:
    """(B, 1, S, S) binary masks -> (B, 1, *size) logits-like mask prompts in the decoder's
    low-resolution frame (the padded square, resized as a whole): +/-``MASK_LOGIT``, or with ``rng``
    per sample a level drawn from ``INSIDE_LOGITS`` inside and minus one from ``OUTSIDE_LOGITS``
    outside (the decoder's own logits are about +5 inside, -20 outside)."""
    mask = mask.float()
    if tuple(mask.shape[-2:]) != tuple(size):
        mask = F.interpolate(mask, size=tuple(size), mode="bilinear", align_corners=False)
    inside = mask > 0.5
    if rng is None:
        return torch.where(inside, MASK_LOGIT, -MASK_LOGIT)
    n = len(mask)
    high = torch.as_tensor(rng.uniform(*INSIDE_LOGITS, n), dtype=mask.dtype, device=mask.device)[:, None, None, None]
    low = torch.as_tensor(-rng.uniform(*OUTSIDE_LOGITS, n), dtype=mask.dtype, device=mask.device)[:, None, None, None]
    return torch.where(inside, high, low)


def decode_with_masks(model: Sam, embeddings: torch.Tensor, boxes: torch.Tensor,
                      points: tuple[torch.Tensor, torch.Tensor] | None, masks: torch.Tensor | None,
                      rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.decode`` where only the ``rows`` (B,) bool of the batch take ``masks`` as the mask
    prompt; the others get the prompt encoder's no-mask embedding, as ``masks=None`` gives them."""
    if masks is None or rows is None or bool(rows.all()):
        return model.decode(embeddings, boxes=boxes, points=points, masks=masks)
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=masks)
    _, no_mask = model.prompt_encoder(points=None, boxes=None, masks=None)
    dense = torch.where(rows.to(dense.device)[:, None, None, None], dense, no_mask.to(dense.dtype))
    return model.mask_decoder(image_embeddings=embeddings, image_pe=model.prompt_encoder.get_dense_pe(),
                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                              multimask_output=False)


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


def click_weights(points: torch.Tensor, labels: torch.Tensor, size: tuple[int, int] | torch.Size,
                  weight: float, radius: float) -> torch.Tensor:
    """(B, 1, *size) per-pixel loss weights: 1, plus ``weight`` within ``radius`` of any click.

    Args:
        points: (B, N, 2) x, y in the target's frame; labels: (B, N), -1 marks "no click".
    """
    h, w = int(size[0]), int(size[1])
    ys = torch.arange(h, dtype=torch.float32, device=points.device)[:, None]
    xs = torch.arange(w, dtype=torch.float32, device=points.device)[None, :]
    near = torch.zeros((points.shape[0], h, w), dtype=torch.bool, device=points.device)
    for k in range(points.shape[1]):
        x = points[:, k, 0].float()[:, None, None]
        y = points[:, k, 1].float()[:, None, None]
        real = (labels[:, k] >= 0)[:, None, None]
        near |= real & ((xs - x) ** 2 + (ys - y) ** 2 <= radius * radius)
    return (1.0 + weight * near.float())[:, None]


def interactive_steps(model: Sam, embeddings: torch.Tensor, boxes: torch.Tensor, target: torch.Tensor,
                      valid: torch.Tensor, config: ClickTraining, rng: np.random.RandomState,
                      neighbour: NeighbourPrompt | None = None,
                      weights: list[torch.Tensor] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the box step and the click steps; returns the (logits, iou) of each step that carries
    gradient: all ``config.steps + 1`` with ``backprop="all"`` (or under ``torch.no_grad()``), the
    box step and one drawn click step with ``"sampled"``. With ``neighbour`` and
    ``config.neighbour_mask`` > 0 the drawn samples are prompted from their adjacent slice
    (module docstring). With ``weights`` (a list) and ``config.click_weight`` > 0, the loss weight
    of each returned step is appended to it (module docstring; the box step's is all ones)."""
    carried, rows = None, None
    if neighbour is not None and config.uses_neighbours:
        draw = torch.as_tensor(rng.random_sample(len(boxes)), device=boxes.device)
        present = neighbour.present.to(boxes.device)
        rows = present & (draw < config.neighbour_mask)
        boxed = present & (draw >= config.neighbour_mask) & (draw < config.neighbour_mask + config.neighbour_box)
        if bool((rows | boxed).any()):
            boxes = torch.where((rows | boxed)[:, None], neighbour.box.to(boxes), boxes)
        if bool(rows.any()):
            carried = neighbour_logits(neighbour.mask.to(boxes.device), model.prompt_encoder.mask_input_size,
                                       rng)
        else:
            rows = None
    outputs = [decode_with_masks(model, embeddings, boxes, None, carried, rows)]
    size = target.shape[-2:]
    weighted = weights is not None and config.click_weight > 0
    if weighted:
        weights.append(torch.ones_like(target, dtype=torch.float32))
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
        masks, mask_rows = (previous.detach() if use_mask else None), None
        if carried is not None:  # the neighbour's mask stays the prompt of the samples drawn for it
            if masks is None:
                masks, mask_rows = carried, rows
            else:
                masks = torch.where(rows[:, None, None, None], carried.to(masks.dtype), masks)
        with torch.set_grad_enabled(torch.is_grad_enabled() and (not sampled or step == last)):
            out = decode_with_masks(model, embeddings, boxes, (points, labels), masks, mask_rows)
        previous = out[0]
        if not sampled or step == last:
            outputs.append(out)
            if weighted:
                weights.append(click_weights(points / scale, labels, size, config.click_weight, config.click_radius))
    return outputs
