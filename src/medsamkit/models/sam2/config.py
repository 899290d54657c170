"""The SAM2 configurations: a registry of sizes and one builder.

Each configuration is its numbers only (facebookresearch/sam2 at 2b90b9f, ``configs/sam2/`` and
``configs/sam2.1/``; MedSAM2 = bowang-lab/MedSAM2 ``sam2/configs/sam2.1_hiera_t512.yaml``):

====================  =======  ======================  ====================  =====
configuration         width    stages                  global blocks         size
====================  =======  ======================  ====================  =====
hiera-t               96 / 1   1, 2, 7, 2              5, 7, 9               1024
hiera-s               96 / 1   1, 2, 11, 2             7, 10, 13             1024
hiera-b+              112 / 2  2, 3, 16, 3             12, 16, 20            1024
hiera-l               144 / 2  2, 6, 36, 4             23, 33, 43            1024
MedSAM2 (2.1 hiera-t) 96 / 1   1, 2, 7, 2              5, 7, 9               512
====================  =======  ======================  ====================  =====

SAM2.1 differs from SAM2 by three switches (:class:`~.base.SAM2Options`): the projected
temporal encoding of object pointers (``obj_ptr_tpos_proj``) and the spatial no-object embedding
(``no_obj_embed_spatial``). MedSAM2 differs from SAM2.1-tiny only by its input size (512) and so
its rotary grid (32 x 32); its keys are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..prompt_encoder import PromptEncoder
from .base import SAM2Base, SAM2Options
from .hiera import FpnNeck, Hiera, HieraSize, ImageEncoder
from .mask_decoder import SAM2MaskDecoder, StabilityFallback, two_way_transformer
from .memory_attention import build_memory_attention
from .memory_encoder import Fuser, MaskDownSampler, MemoryEncoder

HIERA_SIZES: dict[str, HieraSize] = {
    "t": HieraSize(96, 1, (1, 2, 7, 2), (5, 7, 9), pos_embed_grid=(7, 7)),
    "s": HieraSize(96, 1, (1, 2, 11, 2), (7, 10, 13), pos_embed_grid=(7, 7)),
    "b+": HieraSize(112, 2, (2, 3, 16, 3), (12, 16, 20)),
    "l": HieraSize(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8), pos_embed_grid=(7, 7)),
}


@dataclass(frozen=True)
class SAM2Config:
    """One buildable configuration: a Hiera size (a name of :data:`HIERA_SIZES`, or a
    :class:`HieraSize` for small test models), the version and the input size."""

    hiera: str | HieraSize
    version: str = "2.1"
    image_size: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.hiera, HieraSize) and self.hiera not in HIERA_SIZES:
            raise ValueError(f"unknown Hiera size {self.hiera!r}; known: {', '.join(HIERA_SIZES)}")
        if self.version not in ("2", "2.1"):
            raise ValueError(f"SAM2 version must be '2' or '2.1', got {self.version!r}")
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {self.image_size}")

    @property
    def options(self) -> SAM2Options:
        v21 = self.version == "2.1"
        return SAM2Options(image_size=self.image_size, temporal_pointer_encoding=v21, no_object_spatial_embedding=v21)


#: architecture name (medsamkit's registry) -> configuration
SAM2_ARCHITECTURES: dict[str, SAM2Config] = {
    **{f"sam2-hiera-{h}": SAM2Config(h, "2") for h in HIERA_SIZES},
    **{f"sam2.1-hiera-{h}": SAM2Config(h, "2.1") for h in HIERA_SIZES},
    "sam2.1-hiera-t-512": SAM2Config("t", "2.1", 512),
}


def build_sam2(config: SAM2Config, hidden: int = 256, mem_dim: int = 64, dropout: float = 0.1,
               drop_path_rate: float = 0.0, stability: StabilityFallback | None = None) -> SAM2Base:
    """A randomly initialised SAM2 of ``config`` (load weights with
    :func:`medsamkit.models.checkpoint.load_state_dict_strict`).

    ``hidden`` and ``mem_dim`` are 256 and 64 in every official configuration (smaller values
    make small test models); ``dropout`` is the memory attention's (active in training only),
    ``drop_path_rate`` Hiera's stochastic depth (0 in the official configurations)."""
    size = config.hiera if isinstance(config.hiera, HieraSize) else HIERA_SIZES[config.hiera]
    grid = config.image_size // 16
    image_encoder = ImageEncoder(Hiera(size, drop_path_rate), FpnNeck(hidden, size.channels), scalp=1)
    prompt_encoder = PromptEncoder(embed_dim=hidden, image_embedding_size=(grid, grid),
                                   input_image_size=(config.image_size, config.image_size), mask_in_chans=16)
    mask_decoder = SAM2MaskDecoder(two_way_transformer(hidden), hidden, stability=stability)
    memory_attention = build_memory_attention(hidden, mem_dim, 4, (grid, grid), dropout)
    memory_encoder = MemoryEncoder(MaskDownSampler(hidden), Fuser(2, hidden), hidden, mem_dim)
    return SAM2Base(image_encoder, prompt_encoder, mask_decoder, memory_attention, memory_encoder, config.options)


def build_architecture(name: str) -> SAM2Base:
    """Build a registered architecture by name (``sam2.1-hiera-t``, ``sam2.1-hiera-t-512``...)."""
    try:
        return build_sam2(SAM2_ARCHITECTURES[name])
    except KeyError:
        raise ValueError(f"unknown SAM2 architecture {name!r}; known: {', '.join(SAM2_ARCHITECTURES)}") from None


#: A very small Hiera for fast tests and examples (not a released model): 4 one-block stages.
TEST_HIERA = HieraSize(8, 1, (1, 1, 1, 1), (3,), window_spec=(4, 2, 2, 1), pos_embed_grid=(4, 4))


def build_test_model(image_size: int = 64, version: str = "2.1", hidden: int = 32, mem_dim: int = 16) -> SAM2Base:
    """A randomly initialised SAM2 with every part of the real ones but tiny widths (tests)."""
    return build_sam2(SAM2Config(TEST_HIERA, version, image_size), hidden=hidden, mem_dim=mem_dim)
