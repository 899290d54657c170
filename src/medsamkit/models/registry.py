"""A plain registry of named models: architecture, preprocessing family and weights.

Adding a model size is one entry: each builder passes only its numbers to one private
builder. Facts: ../shared/docs/design.md (encoder sizes, prompt encoder and decoder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from torch import nn

from .. import choices
from .image_encoder_vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

EMBED_DIM = 256
EMBED_GRID = 64


def _sam_heads(image_encoder: nn.Module, input_size: int) -> Sam:
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_GRID, EMBED_GRID),
        input_image_size=(input_size, input_size),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=EMBED_DIM,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return Sam(image_encoder, prompt_encoder, mask_decoder)


def _build_vit(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: Sequence[int]) -> Sam:
    encoder = ImageEncoderViT(
        img_size=1024,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        out_chans=EMBED_DIM,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=tuple(global_attn_indexes),
    )
    return _sam_heads(encoder, 1024)


def _build_tinyvit() -> Sam:
    return _sam_heads(TinyViT(img_size=256), 256)


build_vit_b = partial(_build_vit, 768, 12, 12, (2, 5, 8, 11))
build_vit_l = partial(_build_vit, 1024, 24, 16, (5, 11, 17, 23))
build_vit_h = partial(_build_vit, 1280, 32, 16, (7, 15, 23, 31))

def _build_sam2(architecture: str) -> nn.Module:
    from .sam2.config import build_architecture  # SAM2 modules load only when one is built

    return build_architecture(architecture)


#: SAM2 architectures: Hiera sizes t, s, b+, l of SAM2 and SAM2.1, and MedSAM2 (2.1-t at 512)
SAM2_ARCHITECTURES = tuple(f"sam2{v}-hiera-{h}" for v in ("", ".1") for h in ("t", "s", "b+", "l")) + (
    "sam2.1-hiera-t-512",)

#: encoder architecture name -> builder of the whole (randomly initialised) model
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "tinyvit": _build_tinyvit,
    "vit-b": build_vit_b,
    "vit-l": build_vit_l,
    "vit-h": build_vit_h,
    **{name: partial(_build_sam2, name) for name in SAM2_ARCHITECTURES},
}

#: architectures whose checkpoints have the same keys and shapes as another's
SAME_KEYS_AS = {"sam2.1-hiera-t-512": "sam2.1-hiera-t"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run one named model.

    Attributes:
        name: registry name (CLI ``--model``).
        architecture: key of :data:`ARCHITECTURES`.
        preprocessing: geometry family, one of "litemedsam", "medsam", "sam", "sam2", "medsam2"
            (see :func:`medsamkit.preprocessing.geometry.geometry_for`).
        weights: key of :data:`medsamkit.models.zoo.WEIGHTS`.
        description: one line for ``medsamkit models``.
        family: "sam" (SAM, MedSAM, LiteMedSAM: :class:`~medsamkit.models.sam.Sam`) or "sam2"
            (SAM2, SAM2.1, MedSAM2: :class:`~medsamkit.models.sam2.base.SAM2Base`); picks the
            predictor and the 3D propagation strategy.
        adapter_of: for a model whose weights file is an adapter (:mod:`.adapters`) merged into
            another registry model's weights at load, that model's name; None for full checkpoints
            (only those are candidates when a checkpoint's architecture is recognised from its keys).
        grow_px: how many model-input pixels 3D box propagation grows the previous slice's mask box
            by (LiteMedSAM's reference: 3); a model trained with smaller box jitter wants less
            (``litemedsam-clicks``, docs/refinement.md). ``--grow`` / ``PropagationConfig`` override it.
        keep_topology: 3D box propagation decodes a slice again when the object's mask turns from
            solid into a ring or back (:mod:`medsamkit.inference.topology`): for a decoder that
            draws rings from a box (``litemedsam-clicks``). ``--keep-topology`` /
            ``PropagationConfig`` override it.
    """

    name: str
    architecture: str
    preprocessing: str
    weights: str
    description: str
    family: str = "sam"
    adapter_of: str | None = None
    grow_px: int = 3
    keep_topology: bool = False

    def build(self) -> nn.Module:
        return ARCHITECTURES[self.architecture]()

    @property
    def key_layout(self) -> str:
        """The architecture whose checkpoint keys this model has (MedSAM2 has SAM2.1-tiny's)."""
        return SAME_KEYS_AS.get(self.architecture, self.architecture)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("litemedsam", "tinyvit", "litemedsam", "litemedsam",
                  "LiteMedSAM: TinyViT at 256 px, 9.8M parameters, CPU-friendly (default)"),
        ModelSpec("litemedsam-clicks", "tinyvit", "litemedsam", "litemedsam-clicks",
                  "LiteMedSAM with a 1.8 MB decoder adapter taught to use clicks (box + clicks refinement; "
                  "trained on 3 ACDC cardiac MR patients, docs/refinement.md)", adapter_of="litemedsam",
                  grow_px=1, keep_topology=True),
        ModelSpec("medsam-vit-b", "vit-b", "medsam", "medsam-vit-b",
                  "MedSAM: SAM ViT-B tuned on 1.5M medical image/mask pairs, 1024 px"),
        ModelSpec("sam-vit-b", "vit-b", "sam", "sam-vit-b", "SAM ViT-B (natural images), 1024 px"),
        ModelSpec("sam-vit-l", "vit-l", "sam", "sam-vit-l", "SAM ViT-L (natural images), 1024 px"),
        ModelSpec("sam-vit-h", "vit-h", "sam", "sam-vit-h", "SAM ViT-H (natural images), 1024 px"),
        ModelSpec("medsam2", "sam2.1-hiera-t-512", "medsam2", "medsam2",
                  "MedSAM2: SAM2.1 Hiera-T at 512 px tuned on 455K 3D medical image/mask pairs (3D memory "
                  "propagation)", family="sam2"),
        *(
            ModelSpec(f"sam2{v}-hiera-{size}", f"sam2{v}-hiera-{short}", "sam2", f"sam2{v}-hiera-{size}",
                      f"SAM{2 if not v else 2.1} Hiera-{label} (natural images and videos), 1024 px", family="sam2")
            for v in ("", ".1")
            for size, short, label in (("tiny", "t", "T"), ("small", "s", "S"), ("base-plus", "b+", "B+"),
                                       ("large", "l", "L"))
        ),
    )
}

DEFAULT_MODEL = choices.DEFAULT_MODEL


def get_spec(name: str) -> ModelSpec:
    from ..errors import InputError

    try:
        return MODELS[name]
    except KeyError:
        raise InputError(None, f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
