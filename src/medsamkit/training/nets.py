"""What the training module trains: a SAM-family model in one fine-tuning mode, or a baseline.

Both adapters take a batch (see :mod:`medsamkit.training.datasets`) and return
``(logits (B, 1, s, s), iou_pred (B, 1) or None)``; they say which state_dict keys are trained
(the only ones a training checkpoint keeps) and give the model to export.

Modes of :class:`SamNet` (``requires_grad`` and train/eval follow them):

=================  ==============  ==============================  ==============
mode               image encoder   prompt encoder                  mask decoder
=================  ==============  ==============================  ==============
decoder            frozen          frozen                          trained
encoder-decoder    trained         frozen                          trained
full               trained         trained                         trained
lora               LoRA adapters   frozen                          trained
decoder-lora       frozen          point and mask embeddings       LoRA adapters
=================  ==============  ==============================  ==============

Frozen parts stay in eval mode (BatchNorm statistics untouched). With ``automatic`` the decoder
sees no prompt (the prompt encoder's no-prompt embeddings), for single-target tasks. With ``clicks``
(steps > 0) each training batch runs SAM's interactive loop with simulated protocol clicks
(:mod:`medsamkit.training.interactive`) and the net returns every step's logits stacked along the
batch (the module repeats the targets), with ``click_weight`` also their per-pixel loss weights as a
third element; in eval mode it returns the last click step's. The IoU
head trains only when a loss uses it (``train_iou_head``): a parameter no loss reaches would
only be decayed by AdamW, and DDP refuses unused trainable parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.sam import Sam
from .config import LoraConfig
from .interactive import ClickTraining, NeighbourPrompt, interactive_steps
from .lora import DECODER_PROMPT_PARTS, add_decoder_lora, add_lora, merged_copy

_TRAINED_PARTS = {
    "decoder": ("mask_decoder.",),
    "encoder-decoder": ("image_encoder.", "mask_decoder."),
    "full": ("image_encoder.", "prompt_encoder.", "mask_decoder."),
    "lora": ("mask_decoder.",),
    "decoder-lora": DECODER_PROMPT_PARTS,
}
#: modes whose image encoder is frozen: their embeddings can be cached
CACHED_MODES = ("decoder", "decoder-lora")


class SamNet(nn.Module):
    """A :class:`~medsamkit.models.sam.Sam` trained in one mode (keys ``model.<official key>``)."""

    def __init__(self, model: Sam, mode: str = "decoder", automatic: bool = False,
                 lora: LoraConfig | None = None, train_iou_head: bool = True,
                 clicks: ClickTraining | None = None, compile: bool = False) -> None:
        super().__init__()
        if mode not in _TRAINED_PARTS:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(_TRAINED_PARTS)}")
        self.model, self.mode, self.automatic = model, mode, automatic
        self.clicks = clicks or ClickTraining()
        if self.clicks.steps and automatic:
            raise ValueError("click training needs boxes: it cannot be combined with automatic mode")
        parts = _TRAINED_PARTS[mode]
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(parts)
        lora = lora or LoraConfig()
        if mode == "lora":
            model.image_encoder = add_lora(model.image_encoder, lora.rank, lora.alpha, lora.dropout, lora.targets)
        if mode == "decoder-lora":
            model.mask_decoder = add_decoder_lora(model.mask_decoder, lora.rank, lora.alpha, lora.dropout)
        if not train_iou_head:
            for name, param in model.mask_decoder.iou_prediction_head.named_parameters():
                param.requires_grad = False
        self.encoder_trains = mode not in CACHED_MODES
        self._rng: np.random.RandomState | None = None  # seeded from torch's RNG on first use
        self.compile = compile

    def is_trained_key(self, key: str) -> bool:
        """Whether ``key`` (relative to this net) is trained, hence kept in training checkpoints."""
        key = key.removeprefix("model.")
        return key.startswith(_TRAINED_PARTS[self.mode]) or (self.mode in ("lora", "decoder-lora") and "lora_" in key)

    def train(self, mode: bool = True) -> SamNet:
        super().train(mode)
        if mode:
            if self.mode in ("decoder", "lora", "decoder-lora"):
                self.model.image_encoder.eval()
            if self.mode != "full":
                self.model.prompt_encoder.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "embedding" in batch:
            embeddings = batch["embedding"]
        else:
            with torch.set_grad_enabled(self.encoder_trains and torch.is_grad_enabled()):
                embeddings = self.model.encode(batch["image"])
        if self.clicks.steps and "mask" in batch:
            if self._rng is None:
                self._rng = np.random.RandomState(int(torch.randint(2**31 - 1, ()).item()))
            # validation: the same clicks and mask-prompt choice every epoch
            rng = self._rng if self.training else np.random.RandomState(int(batch["index"][0]))
            weights: list[torch.Tensor] = []
            steps = interactive_steps(self.model, embeddings, batch["box"], batch["mask"], batch["valid"],
                                      self.clicks, rng, NeighbourPrompt.from_batch(batch), weights=weights)
            if not self.training:  # the score after the last click
                return steps[-1]
            stacked = torch.cat([s[0] for s in steps]), torch.cat([s[1] for s in steps])
            return (*stacked, torch.cat(weights)) if weights else stacked
        if not self.automatic:
            return self._box_decoder()(embeddings, boxes=batch["box"])
        n = embeddings.shape[0]
        sparse, dense = self.model.prompt_encoder(points=None, boxes=None, masks=None)
        return self.model.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.expand(n, -1, -1),
            dense_prompt_embeddings=dense.expand(n, -1, -1, -1),
            multimask_output=False,
        )

    def _box_decoder(self):
        """The box-prompted decoder: ``model.decode`` rearranged (:class:`~medsamkit.inference.
        box_decoder_graph.BoxDecoderGraph`: the same logits, IoU and gradients, 1.4-1.5x faster per
        training step, docs/benchmarks.md) when the decoder is the plain SAM one, else
        ``model.decode``; with ``compile`` its ``torch.compile``d version. Made on first use (again
        if the model's prompt encoder or decoder, or what :func:`supports` says, changes) and kept outside the module's
        attributes, so state_dict keys, copies and exports are the model's own."""
        from ..inference.box_decoder_graph import BoxDecoderGraph, supports

        parts = (self.model.prompt_encoder, self.model.mask_decoder, supports(self.model))
        kept = self.__dict__.get("_box_decode")
        if kept is not None and kept[0] == parts:
            return kept[1]
        decoder = BoxDecoderGraph(self.model, every_parameter=True) if parts[2] else self.model.decode
        if self.compile:
            _import_inductor()
            decoder = torch.compile(decoder, dynamic=False)
        self.__dict__["_box_decode"] = (parts, decoder)
        return decoder

    def __getstate__(self) -> dict:  # pickling/deepcopy (DDP spawn): the decoder is remade on the copy
        state = self.__dict__.copy()
        state.pop("_box_decode", None)
        return state

    def export_model(self) -> nn.Module:
        """The model in the official layout (LoRA adapters merged into a copy)."""
        return merged_copy(self.model)


def _import_inductor() -> None:
    """Import torch.compile's inductor under a UTF-8 character locale: it reads its kernel templates
    with the locale's encoding, which fails under an ASCII locale (``LANG=C``, common in containers)."""
    import locale

    if locale.getpreferredencoding(False).replace("-", "").lower() == "utf8":
        return
    previous = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        import torch._inductor.compile_fx  # noqa: F401 - the import that reads the templates
    except locale.Error:  # no C.UTF-8 here: torch.compile raises its own error below
        pass
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)


class BaselineNet(nn.Module):
    """A from-scratch network (:mod:`medsamkit.models.baselines`): everything is trained."""

    automatic = False

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.uses_box = bool(getattr(net, "uses_box", False))

    def is_trained_key(self, key: str) -> bool:
        return True

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, None]:
        return self.net(batch["image"], batch["box"] if self.uses_box else None), None

    def export_model(self) -> nn.Module:
        return self.net
