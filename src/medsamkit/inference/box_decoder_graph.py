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

Only the output upscaling (two transposed convolutions) stays at full size per box. Logits agree
with the torch decoder to float rounding (``tests/inference/test_decoder_engine.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.sam import Sam
from ..models.transformer import Attention


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


def _token_to_image(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attn(q, k, v)`` for B x N tokens against B (or 1) x HW image positions, without projecting
    the HW keys and values: (B, N, C) -> (B, N, C)."""
    h = attn.num_heads
    d = attn.internal_dim // h
    qh = _heads(attn.q_proj(q), h)  # (B, h, N, d)
    wk = attn.k_proj.weight.reshape(h, d, -1)  # (h, d, C)
    qk = qh @ wk  # (B, h, N, C)
    b, _, n, c = qk.shape
    scores = (qk.reshape(b, h * n, c) @ k.transpose(1, 2)) * d ** -0.5  # (B, h*N, HW)
    probs = scores.softmax(-1)
    mixed = (probs @ v).reshape(b, h, n, c)  # (B, h, N, C): the attention-weighted image rows
    wv = attn.v_proj.weight.reshape(h, d, c)
    out = mixed @ wv.transpose(1, 2) + attn.v_proj.bias.reshape(h, 1, d)  # (B, h, N, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


def _image_to_token(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    projected_q: torch.Tensor | None = None) -> torch.Tensor:
    """``attn(q, k, v)`` for HW image positions (B or 1 of them) against B x N tokens without a
    per-box HW x 128 projection (``projected_q``: ``attn.q_proj(q)`` when shared): -> (B, HW, C)."""
    h = attn.num_heads
    d = attn.internal_dim // h
    kh = _heads(attn.k_proj(k), h)  # (B, h, N, d)
    vh = _heads(attn.v_proj(v), h)  # (B, h, N, d)
    b, _, n, _ = kh.shape
    if projected_q is not None:  # (1, HW, h*d), the same for every box
        qh = _heads(projected_q, h)  # (1, h, HW, d)
        scores = qh @ kh.transpose(-1, -2)  # (B, h, HW, N)
    else:
        wq = attn.q_proj.weight.reshape(h, d, -1)  # (h, d, C)
        m = (wq.transpose(1, 2) @ kh.transpose(-1, -2))  # (B, h, C, N)
        c = m.shape[2]
        bias = (attn.q_proj.bias.reshape(h, 1, d) @ kh.transpose(-1, -2))  # (B, h, 1, N)
        scores = (q @ m.transpose(1, 2).reshape(b, c, h * n)).reshape(b, -1, h, n).transpose(1, 2) + bias
    probs = (scores * d ** -0.5).softmax(-1)  # (B, h, HW, N)
    wo = attn.out_proj.weight.reshape(-1, h, d).permute(1, 2, 0)  # (h, d, C)
    vo = vh @ wo  # (B, h, N, C)
    hw = probs.shape[2]
    out = probs.transpose(1, 2).reshape(b, hw, h * n) @ vo.reshape(b, h * n, -1)  # (B, HW, C)
    return out + attn.out_proj.bias


class BoxDecoderGraph(nn.Module):
    """(1, C, h, w) embedding + (N, 4) model-input boxes -> (N, 1, 4h, 4w) logits, (N, 1) IoU."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = model.prompt_encoder, model.mask_decoder

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pe, md = self.prompt_encoder, self.mask_decoder
        tf = md.transformer
        first, *rest = tf.layers
        corners = pe._embed_boxes(boxes)  # (B, 2, C)
        b = corners.shape[0]
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], 0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), corners], 1)  # (B, N, C)
        keys = (embedding + pe.no_mask_embed.weight.reshape(1, -1, 1, 1)).flatten(2).transpose(1, 2)  # (1, HW, C)
        key_pe = pe.get_dense_pe().flatten(2).transpose(1, 2)  # (1, HW, C)

        # first block: its image side is the same for every box
        queries = first.norm1(first.self_attn(tokens, tokens, tokens))
        t2i = first.cross_attn_token_to_image
        kp = _heads(t2i.k_proj(keys + key_pe), t2i.num_heads)  # (1, h, HW, d) once
        vp = _heads(t2i.v_proj(keys), t2i.num_heads)
        qh = _heads(t2i.q_proj(queries + tokens), t2i.num_heads)
        attn = F.scaled_dot_product_attention(qh, kp.expand(b, -1, -1, -1), vp.expand(b, -1, -1, -1))
        queries = first.norm2(queries + t2i.out_proj(attn.transpose(1, 2).reshape(b, tokens.shape[1], -1)))
        queries = first.norm3(queries + first.mlp(queries))
        i2t = first.cross_attn_image_to_token
        shared_q = i2t.q_proj(keys + key_pe)  # (1, HW, h*d) once
        keys = first.norm4(keys + _image_to_token(i2t, keys + key_pe, queries + tokens, queries, shared_q))

        for layer in rest:  # per box, without HW-sized projections
            q = queries + tokens
            queries = layer.norm1(queries + layer.self_attn(q, q, queries))
            queries = layer.norm2(queries + _token_to_image(layer.cross_attn_token_to_image, queries + tokens,
                                                            keys + key_pe, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(keys + _image_to_token(layer.cross_attn_image_to_token, keys + key_pe,
                                                      queries + tokens, queries))
        queries = tf.norm_final_attn(queries + _token_to_image(tf.final_attn_token_to_image, queries + tokens,
                                                               keys + key_pe, keys))

        h, w = pe.image_embedding_size
        src = keys.transpose(1, 2).reshape(b, -1, h, w)
        upscaled = md.output_upscaling(src)  # (B, C/8, 4h, 4w)
        hyper = md.output_hypernetworks_mlps[0](queries[:, 1])  # the single-mask output's token
        masks = (hyper.unsqueeze(1) @ upscaled.flatten(2)).reshape(b, 1, 4 * h, 4 * w)
        iou = md.iou_prediction_head(queries[:, 0])[:, :1]
        return masks, iou
