"""The SAM mask decoder for box prompts, rearranged for many boxes on one image (the graph the
decoder engine exports; :mod:`medsamkit.inference.decoder_engine`).

The same function as ``Sam.decode(embedding, boxes=...)`` with one mask per box, computed in
another order so that most of the per-box work is gone:

- the first two-way block's image-side projections (token->image keys and values, image->token
  queries) do not depend on the box: they are computed once per call and shared by all boxes;
- the attentions between the 7 tokens and the 4096 image positions are reassociated so that no
  4096 x 256 -> 128 projection is made per box: ``q (x Wk^T)^T = (q Wk) x^T`` and
  ``A (x Wv^T + bv) = (A x) Wv^T + bv`` (the rows of A sum to 1), and on the image side
  ``(x Wq^T + bq) k^T`` and ``A v Wo^T`` are taken through the 7 tokens. The key bias of a
  token->image attention adds the same number to every score of a query, which the softmax
  removes, so it is left out.

Only the output upscaling (two transposed convolutions) stays at full size per box; it runs
channels-last as per-pixel matrix products, with no transpose of the feature maps. Logits agree
with the torch decoder to float rounding (``tests/inference/test_decoder_engine.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.sam import Sam
from ..models.transformer import Attention

#: part of the exported file's name: a changed graph is exported anew, not read from an old cache
GRAPH_VERSION = 3


def supports(model: Sam) -> bool:
    """True when the decoder is the plain SAM one that this graph rearranges: every attention
    projection an ``nn.Linear`` itself (a wrapped layer, e.g. an unmerged LoRA, adds to its
    output what reading its weight would miss)."""
    from ..models.mask_decoder import MaskDecoder
    from ..models.transformer import TwoWayTransformer

    md = model.mask_decoder
    if type(md) is not MaskDecoder or type(md.transformer) is not TwoWayTransformer:
        return False
    return all(type(getattr(m, name)) is nn.Linear for m in md.transformer.modules() if isinstance(m, Attention)
               for name in ("q_proj", "k_proj", "v_proj", "out_proj"))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., n, h*d) -> (..., h, n, d)."""
    *lead, n, c = x.shape
    return x.reshape(*lead, n, heads, c // heads).transpose(-3, -2)


def _token_to_image(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_bias: bool = False) -> torch.Tensor:
    """``attn(q, k, v)`` for B x N tokens against B (or 1) x HW image positions, without projecting
    the HW keys and values: (B, N, C) -> (B, N, C). ``key_bias``: add the key bias's term too (the
    softmax removes it; training adds it so that every parameter takes part)."""
    h = attn.num_heads
    d = attn.internal_dim // h
    qh = _heads(attn.q_proj(q), h)  # (B, h, N, d)
    wk = attn.k_proj.weight.reshape(h, d, -1)  # (h, d, C)
    qk = qh @ wk  # (B, h, N, C)
    b, _, n, c = qk.shape
    scores = qk.reshape(b, h * n, c) @ k.transpose(1, 2)  # (B, h*N, HW)
    if key_bias:
        scores = scores + (qh @ attn.k_proj.bias.reshape(h, d, 1)).reshape(b, h * n, 1)
    scores = scores * d ** -0.5
    probs = scores.softmax(-1)
    mixed = (probs @ v).reshape(b, h, n, c)  # (B, h, N, C): the attention-weighted image rows
    wv = attn.v_proj.weight.reshape(h, d, c)
    out = mixed @ wv.transpose(1, 2) + attn.v_proj.bias.reshape(h, 1, d)  # (B, h, N, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


def _image_to_token(attn: Attention, q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
                    projected_q: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``attn(q, k, v)`` for HW image positions (B or 1 of them) against B x N tokens without a
    per-box HW x 128 projection (``projected_q``: ``attn.q_proj(q)`` when shared).

    Returns the attention probabilities (B, HW, h*N) and the tokens' values through the output
    projection (B, h*N, C): the output is ``probs @ values + attn.out_proj.bias``. The scores are
    made in that (HW, heads, tokens) layout, so no HW-sized tensor is transposed."""
    h = attn.num_heads
    d = attn.internal_dim // h
    kh = _heads(attn.k_proj(k), h)  # (B, h, N, d)
    vh = _heads(attn.v_proj(v), h)  # (B, h, N, d)
    b, _, n, _ = kh.shape
    if projected_q is not None:  # (1, HW, h*d), the same for every box: block-diagonal keys (B, h*d, h*N)
        eye = torch.eye(h, dtype=kh.dtype).reshape(1, h, 1, h, 1)
        keys = (kh.transpose(-1, -2).unsqueeze(3) * eye).reshape(b, h * d, h * n)
        scores = projected_q @ keys  # (B, HW, h*N)
    else:
        assert q is not None, "the image positions' queries, or projected_q"
        wq = attn.q_proj.weight.reshape(h, d, -1)  # (h, d, C)
        m = (wq.transpose(1, 2) @ kh.transpose(-1, -2))  # (B, h, C, N)
        c = m.shape[2]
        bias = (attn.q_proj.bias.reshape(h, 1, d) @ kh.transpose(-1, -2))  # (B, h, 1, N)
        scores = q @ m.transpose(1, 2).reshape(b, c, h * n) + bias.reshape(b, 1, h * n)  # (B, HW, h*N)
    hw = scores.shape[1]
    probs = (scores.reshape(b, hw, h, n) * d ** -0.5).softmax(-1).reshape(b, hw, h * n)
    wo = attn.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # (h, d, C)
    vo = vh @ wo  # (B, h, N, C)
    return probs, vo.reshape(b, h * n, -1)


def _shared_token_to_image(attn: Attention, q: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` for B x N tokens against one image's keys and values already projected
    (``kp``, ``vp``: (1, heads, HW, d)): every box's tokens attend in one call, with no expand."""
    b, n, _ = q.shape
    qh = attn.q_proj(q).reshape(1, b * n, attn.num_heads, -1).transpose(1, 2)  # (1, h, B*N, d)
    out = F.scaled_dot_product_attention(qh, kp, vp)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class ImageSide(nn.Module):
    """The part of the box decoder that does not depend on the box, computed once per image:
    (1, C, h, w) embedding -> the image tokens with the dense prompt (1, HW, C), the first block's
    token->image keys and values (1, heads, HW, d) and image->token queries (1, HW, heads*d)."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = model.prompt_encoder, model.mask_decoder

    def keys(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) embedding -> (B, HW, C) image tokens with the dense (no-mask) prompt."""
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return (embedding + no_mask).flatten(2).transpose(1, 2)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pe, md = self.prompt_encoder, self.mask_decoder
        tf = md.transformer
        first = tf.layers[0]
        keys = self.keys(embedding)
        key_pe = pe.get_dense_pe().flatten(2).transpose(1, 2)
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        kp = _heads(t2i.k_proj(keys + key_pe), t2i.num_heads)
        vp = _heads(t2i.v_proj(keys), t2i.num_heads)
        shared_q = i2t.q_proj(keys + key_pe)
        return keys, kp, vp, shared_q


class BoxSide(nn.Module):
    """The per-box part: :class:`ImageSide`'s outputs (of one image; or only its ``keys``, of one
    image per box) + (N, 4) model-input boxes -> (N, 1, 4h, 4w) logits, (N, 1) IoU.

    ``every_parameter`` (training): every decoder parameter takes part, as in ``Sam.decode`` (the
    key biases' terms, all the mask tokens' hypernetworks), so DDP and optimisers see the same
    parameters with gradients; the outputs are the same."""

    def __init__(self, model: Sam, every_parameter: bool = False) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = model.prompt_encoder, model.mask_decoder
        self.every_parameter = every_parameter

    def forward(self, keys: torch.Tensor, kp: torch.Tensor | None, vp: torch.Tensor | None,
                shared_q: torch.Tensor | None, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``kp``, ``vp`` and ``shared_q`` None: the first block is reassociated too (one embedding
        per box, as in training: the projections would be made per box, so none is made)."""
        pe, md = self.prompt_encoder, self.mask_decoder
        tf = md.transformer
        first = tf.layers[0]
        corners = pe._embed_boxes(boxes)  # (B, 2, C)
        b = corners.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], 0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), corners], 1)  # (B, N, C)
        key_pe = pe.get_dense_pe().flatten(2).transpose(1, 2)  # (1, HW, C)

        queries = first.norm1(first.self_attn(tokens, tokens, tokens))
        if kp is None or vp is None:
            queries = first.norm2(queries + _token_to_image(first.cross_attn_token_to_image, queries + tokens,
                                                            keys + key_pe, keys, self.every_parameter))
        else:
            queries = first.norm2(queries + _shared_token_to_image(first.cross_attn_token_to_image,
                                                                   queries + tokens, kp, vp))
        queries = first.norm3(queries + first.mlp(queries))
        for i, layer in enumerate(tf.layers):
            # the first block's image->token queries are shared_q when given
            with_pe = keys + key_pe if i or shared_q is None else None
            if i:  # the first block's self- and token->image attention are above
                q = queries + tokens
                queries = layer.norm1(queries + layer.self_attn(q, q, queries))
                queries = layer.norm2(queries + _token_to_image(layer.cross_attn_token_to_image, queries + tokens,
                                                                with_pe, keys, self.every_parameter))
                queries = layer.norm3(queries + layer.mlp(queries))
            i2t = layer.cross_attn_image_to_token
            probs, values = _image_to_token(i2t, with_pe, queries + tokens, queries, None if i else shared_q)
            keys = layer.norm4(keys + probs @ values + i2t.out_proj.bias)
        queries = tf.norm_final_attn(queries + _token_to_image(tf.final_attn_token_to_image, queries + tokens,
                                                               keys + key_pe, keys, self.every_parameter))

        mlps = md.output_hypernetworks_mlps if self.every_parameter else md.output_hypernetworks_mlps[:1]
        hyper = torch.stack([mlp(queries[:, 1 + i]) for i, mlp in enumerate(mlps)], 2)  # (B, C/8, 1 or K)
        masks = _upscaled_mask(md.output_upscaling, keys, hyper, pe.image_embedding_size)
        iou = md.iou_prediction_head(queries[:, 0])[:, :1]
        return masks, iou


class BoxDecoderGraph(nn.Module):
    """(1 or N, C, h, w) embeddings + (N, 4) model-input boxes -> (N, 1, 4h, 4w) logits, (N, 1) IoU:
    :class:`ImageSide` then :class:`BoxSide` (the engine exports and runs the two apart; decoder
    training on cached embeddings runs it whole, with gradients and ``every_parameter``)."""

    def __init__(self, model: Sam, every_parameter: bool = False) -> None:
        super().__init__()
        self.image_side, self.box_side = ImageSide(model), BoxSide(model, every_parameter)

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if embedding.shape[0] == 1:  # one image for every box: its projections are shared
            return self.box_side(*self.image_side(embedding), boxes)
        # one embedding per box (training): projecting each one's 4096 positions costs more than
        # the reassociated attention (about 4% of a bf16 training step, docs/benchmarks.md)
        return self.box_side(self.image_side.keys(embedding), None, None, None, boxes)


def _per_pixel(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A kernel-2 stride-2 transposed convolution as a per-pixel linear map: weight (Cin, 4 * Cout)
    with outputs ordered (dy, dx, channel), and the bias repeated for the 4 sub-pixels."""
    cin, cout = conv.in_channels, conv.out_channels  # ints, constants in the export
    return conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout), conv.bias.repeat(4)


def _upscaled_mask(upscaling: nn.Sequential, keys: torch.Tensor, hyper: torch.Tensor,
                   size: tuple[int, int]) -> torch.Tensor:
    """``hyper[..., 0] . upscaling(keys as an image)`` -> (B, 1, 4h, 4w) (hyper: (B, C/8, K), the
    first the single-mask output's), channels last: each transposed
    convolution (kernel 2, stride 2) is a matrix product per pixel, the layer norm and GELUs act
    per pixel, and the sub-pixels are put in place once, on the single-channel mask."""
    conv1, norm, act1, conv2, act2 = upscaling
    b = keys.shape[0]
    h, w = size
    w1, b1 = _per_pixel(conv1)
    x = (keys @ w1 + b1).reshape(b, h * w * 4, -1)  # (B, HW * 4 sub-pixels, C/4)
    x = act1(F.layer_norm(x, (conv1.out_channels,), norm.weight, norm.bias, norm.eps))
    w2, b2 = _per_pixel(conv2)
    x = act2((x @ w2 + b2).reshape(b, h * w * 16, -1))  # (B, HW * 16, C/8)
    m = (x @ hyper)[..., :1].reshape(b, h, w, 2, 2, 2, 2)  # the single-mask output (B, i, j, dy1, dx1, dy2, dx2)
    return m.permute(0, 1, 3, 5, 2, 4, 6).reshape(b, 1, 4 * h, 4 * w)
