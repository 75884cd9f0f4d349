"""The mask decoder's arithmetic, re-associated so that no work over the 4096 image tokens is done
once per *prompt* when it can be done once per *call* (one image, B prompts).

Same parameters and the same mathematics as :meth:`MaskDecoder.predict_masks` (which stays the
readable reference; tests compare both with the official code). Three rewrites:

1. **Prompt-independent projections once per call.** In the first two-way layer the image tokens are
   ``src_b = E + dense_b``. Without a mask input ``dense_b`` is the constant ``no_mask_embed``, so the
   first layer's projections of the image tokens (k, v of tokens->image; q of image->tokens) are the
   same for every prompt: ``K0 = W_k(E + nme + P) + b_k`` etc. are computed once. With a mask input
   the difference is low-rank: the mask path ends in a 1x1 conv from 16 channels, so
   ``W_k (dense_b - nme) = has_b * ((W_k W_c) h16_b + W_k (c - nme))`` costs 16-channel work.
2. **Small-rank attention.** A prompt has T = 5 + N tokens (T ~ 7), far fewer than the 128-dim
   projections. Tokens->image: ``q_h (W_k,h x)^T = (q_h W_k,h) x^T`` and ``A_h (x W_v,h^T) = (A_h x) W_v,h^T``
   (rows of A sum to 1, so the v bias passes through); the k bias shifts every score of a row
   equally and cancels in the softmax. Image->tokens: ``(x W_q,h^T) k_h^T = x (W_q,h^T k_h^T)`` and
   ``out_proj(concat_h A_h v_h) = A_cat (v W_o)``. The 4096-row projections become products with
   8*T (~56) columns.
3. **Channels-last upscaling.** ``ConvTranspose2d(k=2, s=2)`` has no overlapping taps, so it is a
   MatMul into 4 sub-pixels (depth-to-space). The image tokens stay [B, pixels, C] through both
   transposed convolutions, LayerNorm2d becomes a LayerNormalization over the last axis, and the
   single spatial re-ordering is applied to the 4 mask planes at the end instead of to 256/64/32
   channel feature maps.

ONNX: MatMul/Add/Softmax/LayerNormalization/Reshape/Transpose only; tensors have at most 7 dims
(TensorRT allows 8); the image embedding has batch 1 and is broadcast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import Attention, TwoWayTransformer

__all__ = ["factored_decode", "factored_two_way"]


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, n, heads*d] -> [B, heads, n, d]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _tokens_to_image(attn: Attention, q_tokens: Tensor, k_img: Tensor, v_img: Tensor) -> Tensor:
    """Tokens attend to image tokens given *un-projected* image keys/values [B|1, HW, C]."""
    h, d = attn.num_heads, attn.head_dim
    q = _split_heads(attn.q_proj(q_tokens), h)  # [B,h,T,d]
    qk = q @ attn.k_proj.weight.unflatten(0, (h, d))  # [B,h,T,C]   (k bias: softmax-invariant)
    scores = (qk.flatten(1, 2) @ k_img.transpose(1, 2)) / math.sqrt(d)  # [B,hT,HW]
    pooled = torch.softmax(scores, dim=-1) @ v_img  # [B,hT,C]
    wv = attn.v_proj.weight.unflatten(0, (h, d))  # [h,d,C]
    out = pooled.unflatten(1, (h, -1)) @ wv.transpose(1, 2) + attn.v_proj.bias.reshape(h, 1, d)  # [B,h,T,d]
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _image_to_tokens(attn: Attention, q_img: Tensor, k_tokens: Tensor, v_tokens: Tensor) -> Tensor:
    """Image tokens [B,HW,C] (un-projected) attend to prompt tokens; returns the attention output
    after out_proj [B,HW,C] without ever projecting the HW image tokens."""
    h, d = attn.num_heads, attn.head_dim
    k = _split_heads(attn.k_proj(k_tokens), h)  # [B,h,T,d]
    v = _split_heads(attn.v_proj(v_tokens), h)  # [B,h,T,d]
    wq = attn.q_proj.weight.unflatten(0, (h, d))  # [h,d,C]
    m = (wq.transpose(1, 2) @ k.transpose(-2, -1)).permute(0, 2, 1, 3).flatten(2)  # [B,C,hT]
    bias = (attn.q_proj.bias.reshape(h, 1, d) @ k.transpose(-2, -1)).transpose(1, 2).flatten(2)  # [B,1,hT]
    scores = q_img @ m + bias  # [B,HW,hT]
    probs = torch.softmax((scores / math.sqrt(d)).unflatten(-1, (h, -1)), dim=-1).flatten(2)  # [B,HW,hT]
    wo = attn.out_proj.weight.unflatten(1, (h, d)).permute(1, 2, 0)  # [h,d,C]
    # Each head's probabilities sum to 1, so adding bias/h to every row of v@W_o adds the bias once.
    vw = (v @ wo + attn.out_proj.bias / h).flatten(1, 2)  # [B,hT,C]
    return probs @ vw


def _t2i_layer0(attn: Attention, q_tokens: Tensor, k0: Tensor, v0: Tensor, x17: Tensor, w17: Tensor) -> Tensor:
    """Layer 0 tokens->image. k0/v0 [1,h,HW,d]: projections of the mask-free image tokens (once per
    call); the mask input adds ``x17 @ w17`` to the image tokens, i.e. ``x17 @ (w17 W^T)`` to k/v."""
    h, d = attn.num_heads, attn.head_dim
    q = _split_heads(attn.q_proj(q_tokens), h)  # [B,h,T,d]
    ak = (w17[:-1] @ attn.k_proj.weight.t()).reshape(-1, h, d).permute(1, 2, 0)  # [h,d,16]
    # the constant row of w17 shifts every score of a row equally (softmax-invariant): dropped
    scores = q @ k0.transpose(-2, -1) + (q @ ak) @ x17[..., :-1].unsqueeze(1).transpose(-2, -1)
    probs = torch.softmax(scores / math.sqrt(d), dim=-1)  # [B,h,T,HW]
    av = (w17 @ attn.v_proj.weight.t()).reshape(-1, h, d).transpose(0, 1)  # [h,17,d]
    out = probs @ v0 + (probs @ x17.unsqueeze(1)) @ av  # rows of probs sum to 1: has-column passes through
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def _i2t_layer0(attn: Attention, k_tokens: Tensor, v_tokens: Tensor, q0: Tensor, x17: Tensor, w17: Tensor) -> Tensor:
    """Layer 0 image->tokens, plus the mask input's contribution to the image tokens, in one product:
    returns ``attention_out + x17 @ w17`` [B,HW,C]; q0 [1,HW,h*d] is the mask-free q projection."""
    h, d = attn.num_heads, attn.head_dim
    k = _split_heads(attn.k_proj(k_tokens), h)  # [B,h,T,d]
    v = _split_heads(attn.v_proj(v_tokens), h)
    # block-diagonal [B, h*d, h*T]: head g's q columns only meet head g's keys
    eye = torch.eye(h, dtype=k.dtype, device=k.device).reshape(1, 1, h, h, 1)
    kbd = (k.transpose(-2, -1).unsqueeze(3) * eye.transpose(1, 2)).flatten(1, 2).flatten(2)  # [B,hd,hT]
    scores = q0 @ kbd + x17 @ ((w17 @ attn.q_proj.weight.t()) @ kbd)  # [B,HW,hT]
    probs = torch.softmax((scores / math.sqrt(d)).unflatten(-1, (h, -1)), dim=-1).flatten(2)
    wo = attn.out_proj.weight.unflatten(1, (h, d)).permute(1, 2, 0)  # [h,d,C]
    vw = (v @ wo + attn.out_proj.bias / h).flatten(1, 2)  # [B,hT,C]
    rhs = torch.cat([vw, w17.unsqueeze(0) + vw[:, :1, :1] * 0.0], dim=1)  # [B,hT+17,C]
    return torch.cat([probs, x17], dim=-1) @ rhs


def _upscale_channels_last(dec: MaskDecoder, keys: Tensor) -> Tensor:
    """output_upscaling on image tokens [B, h*w, C] -> features [B, 16*h*w, C/8], rows ordered
    (i, j, di, dj, ei, ej) for output pixel (4i + 2di + ei, 4j + 2dj + ej)."""
    ct1, ln, _, ct2, _ = dec.output_upscaling
    c, hw = keys.shape[-1], keys.shape[-2]
    c1, c2 = ct1.out_channels, ct2.out_channels
    # 2-D products with the bias (tiled over the 4 sub-pixels) inside the GEMM (ONNX Gemm)
    w1 = ct1.weight.permute(2, 3, 1, 0).reshape(4 * c1, c)  # [(di, dj, Cout), Cin]
    x = F.linear(keys.reshape(-1, c), w1, torch.cat([ct1.bias] * 4)).reshape(-1, 4, c1)  # [B*HW, 4, C1]
    x = F.gelu(F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps))
    w2 = ct2.weight.permute(2, 3, 1, 0).reshape(4 * c2, c1)
    x = F.gelu(F.linear(x.reshape(-1, c1), w2, torch.cat([ct2.bias] * 4)))  # [B*4HW, 4*C2]
    return x.reshape(-1, 16 * hw, c2)  # [B, 16HW, C2]


def factored_two_way(
    prompt_encoder: PromptEncoder,
    tf: TwoWayTransformer,
    image_embeddings: Tensor,
    tokens: Tensor,
    mask_input: Tensor,
    has_mask_input: Tensor,
) -> tuple[Tensor, Tensor]:
    """The two-way transformer, factored (rewrites 1 and 2 of the module docstring): tokens [B,T,C]
    (output + prompt tokens), one image [1,C,h,w] -> (tokens [B,T,C], image tokens [B,HW,C]).
    Shared by SAM's, HQ-SAM's and SAM2's decoders."""
    layer0, rest = tf.layers[0], list(tf.layers[1:])
    query_pe = tokens
    md = prompt_encoder.mask_downscaling
    h16 = md[:-1](mask_input).flatten(2).transpose(1, 2)  # [B,HW,16]
    has = has_mask_input.reshape(-1, 1, 1)
    nme = prompt_encoder.no_mask_embed.weight  # [1,C]

    emb = image_embeddings.flatten(2).transpose(1, 2)  # [1,HW,C]
    pe = prompt_encoder.get_dense_pe().flatten(2).transpose(1, 2)  # [1,HW,C]
    src0 = emb + nme
    t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
    k0 = _split_heads(t2i.k_proj(src0 + pe), t2i.num_heads)  # once per call
    v0 = _split_heads(t2i.v_proj(src0), t2i.num_heads)
    q0 = i2t.q_proj(src0 + pe)
    # the mask input as 17 columns per prompt: has * (dense - nme) = x17 @ w17
    x17 = torch.cat([h16 * has, has + h16[..., :1] * 0.0], dim=-1)  # [B,HW,17]
    w17 = torch.cat([md[-1].weight.flatten(1).t(), (md[-1].bias - nme[0]).unsqueeze(0)], dim=0)  # [17,C]

    queries = layer0.norm1(layer0.self_attn(q=tokens, k=tokens, v=tokens))  # skip_first_layer_pe
    queries = layer0.norm2(queries + _t2i_layer0(t2i, queries + query_pe, k0, v0, x17, w17))
    queries = layer0.norm3(queries + layer0.mlp(queries))
    keys = layer0.norm4(src0 + _i2t_layer0(i2t, queries + query_pe, queries, q0, x17, w17))
    for layer in rest:
        q = queries + query_pe
        queries = layer.norm1(queries + layer.self_attn(q=q, k=q, v=queries))
        keys_pe = keys + pe
        queries = layer.norm2(queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, keys_pe, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(keys + _image_to_tokens(layer.cross_attn_image_to_token, keys_pe, queries + query_pe, queries))
    queries = tf.norm_final_attn(queries + _tokens_to_image(tf.final_attn_token_to_image, queries + query_pe, keys + pe, keys))
    return queries, keys


def factored_decode(
    prompt_encoder: PromptEncoder,
    dec: MaskDecoder,
    image_embeddings: Tensor,
    point_coords: Tensor,
    point_labels: Tensor,
    mask_input: Tensor,
    has_mask_input: Tensor,
) -> tuple[Tensor, Tensor]:
    """Same contract as ``Sam.decode``: -> (iou_predictions [B,4], low_res_masks [B,4,256,256])."""
    tf = dec.transformer
    _, c, h, w = image_embeddings.shape

    # ---- prompts --------------------------------------------------------------------------------
    sparse = prompt_encoder.embed_points(point_coords, point_labels)  # [B,N,C]
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)  # [5,C]
    # The prompt batch comes from has_mask_input [B], which exists even when N = 0 points.
    per_prompt = has_mask_input.reshape(-1, 1, 1) * 0.0  # [B,1,1]
    tokens = torch.cat([tokens.unsqueeze(0) + per_prompt, sparse], dim=1)  # [B,5+N,C]
    queries, keys = factored_two_way(prompt_encoder, tf, image_embeddings, tokens, mask_input, has_mask_input)

    # ---- heads -------------------------------------------------------------------------------------------
    iou_pred = dec.iou_prediction_head(queries[:, 0, :])
    mask_tokens = queries[:, 1 : 1 + dec.num_mask_tokens, :]
    hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    feats = _upscale_channels_last(dec, keys)  # [B,16HW,C/8]
    planes = hyper @ feats.transpose(1, 2)  # [B,4,16HW], columns ordered (i, j, di, dj, ei, ej)
    n = dec.num_mask_tokens
    planes = planes.reshape(-1, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)  # (i, di, ei, j, dj, ej)
    masks = planes.reshape(-1, n, 4 * h, 4 * w)
    return iou_pred, masks
