"""Tiny models and synthetic samples shared by the training tests (not a test module).

``tiny_sam()`` is a SAM-family model built from the real parts (ViT encoder with windowed and
global attention, prompt encoder, two-way transformer decoder) at 64 px with a 32-channel,
16 x 16 embedding: a training step takes milliseconds. ``TinyGeometry`` is LiteMedSAM's
geometry at 64 px. ``make_samples`` draws images with one bright ellipse each (the target) on
textured backgrounds of varied sizes, framed by the geometry exactly as the preprocess cache does.
"""

from __future__ import annotations

import cv2
import numpy as np

from medsamkit.data.samples import Sample
from medsamkit.models.image_encoder_vit import ImageEncoderViT
from medsamkit.models.mask_decoder import MaskDecoder
from medsamkit.models.prompt_encoder import PromptEncoder
from medsamkit.models.sam import Sam
from medsamkit.models.transformer import TwoWayTransformer
from medsamkit.preprocessing.geometry import LiteMedSAMGeometry, ModelGeometry
from medsamkit.preprocessing.labels import box_from_mask

TINY_SIZE = 64


class TinyGeometry(LiteMedSAMGeometry):
    input_size = TINY_SIZE


def tiny_sam() -> Sam:
    encoder = ImageEncoderViT(img_size=TINY_SIZE, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
                              out_chans=32, window_size=4, global_attn_indexes=(1,))
    prompt = PromptEncoder(embed_dim=32, image_embedding_size=(16, 16), input_image_size=(TINY_SIZE, TINY_SIZE),
                           mask_in_chans=4)
    decoder = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64,
                                                                             num_heads=2),
                          num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=32)
    return Sam(encoder, prompt, decoder)


def synthetic_image(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 image, H x W uint8 0/1 mask of its bright ellipse)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.normal(70, 20, (h, w, 3)).clip(0, 255).astype(np.uint8), (5, 5), 0)
    mask = np.zeros((h, w), np.uint8)
    centre = (int(rng.integers(w // 3, 2 * w // 3)), int(rng.integers(h // 3, 2 * h // 3)))
    axes = (int(rng.integers(w // 8, w // 4)), int(rng.integers(h // 8, h // 4)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    image[mask > 0] = np.clip(image[mask > 0].astype(int) + 110, 0, 255).astype(np.uint8)
    return image, mask


def make_samples(n: int, geometry: ModelGeometry | None = None, seed: int = 0, case: str = "case") -> list[Sample]:
    """``n`` samples in the model-input frame of ``geometry`` (default :class:`TinyGeometry`)."""
    geometry = geometry or TinyGeometry()
    samples = []
    for i in range(n):
        h, w = (90, 120) if i % 2 else (110, 80)
        image, mask = synthetic_image(seed * 1000 + i, h, w)
        resized, frame = geometry.resize_image(image)
        size = geometry.input_size
        padded = np.zeros((size, size, 3), np.uint8)
        padded[: resized.shape[0], : resized.shape[1]] = resized
        box = geometry.boxes_to_model(np.array([box_from_mask(mask)], dtype=np.float64), frame)[0]
        samples.append(Sample(image=padded, mask=geometry.resize_mask(mask, frame), box=tuple(float(v) for v in box),
                              valid_size=frame.resized_size, case_id=f"{case}{i}"))
    return samples


def batch_of(samples: list[Sample], geometry: ModelGeometry | None = None) -> dict:
    """All ``samples`` as one un-augmented image batch (see medsamkit.training.datasets)."""
    import torch

    from medsamkit.training.datasets import ImageDataset

    dataset = ImageDataset(samples, geometry or TinyGeometry())
    items = [dataset[i] for i in range(len(dataset))]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def eval_loss(net, samples: list[Sample], geometry: ModelGeometry | None = None) -> float:
    """Dice + BCE of ``net`` (eval mode, exact boxes) on ``samples``."""
    import torch
    import torch.nn.functional as F

    from medsamkit.training.losses import SegmentationLoss

    batch = batch_of(samples, geometry)
    was = net.training
    net.eval()
    with torch.no_grad():
        logits = net(batch)[0]
    net.train(was)
    logits = F.interpolate(logits, size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
    return SegmentationLoss()(logits, batch["mask"])["loss"].item()


def quick_config(out_dir, *overrides: str):
    """A config for a few-second run on tiny data (no TensorBoard, no progress bar)."""
    from medsamkit.training.config import load_config

    return load_config([], ["--model.pretrained", "false", "--output.dir", str(out_dir), "--data.batch_size", "4",
                            "--data.embedding_backend", "torch",  # tiny encoders: no engine export per test
                            "--output.progress_bar", "false", "--output.tensorboard", "false",
                            "--optim.lr", "3e-3", "--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "1",
                            *overrides])


class Boxed:
    """A Sam model as a net for :func:`eval_loss`: encode the images, decode their boxes."""

    def __init__(self, model) -> None:
        self.model = model
        self.training = model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __call__(self, batch: dict):
        return self.model(batch["image"], boxes=batch["box"])
