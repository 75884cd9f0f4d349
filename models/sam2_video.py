"""SAM2 / SAM2.1 video modules (memory attention, memory encoder), written for export, official key names.

The official modules (``sam2.modeling.memory_attention`` / ``memory_encoder`` / ``sam.transformer.RoPEAttention``)
with our own forward passes. ``Sam2Image`` (``models/sam2.py``) holds them as ``memory_attention`` and
``memory_encoder`` so official checkpoints still load strictly; the three export wrappers at the end of
this file are the graphs of ``samdeploy export --video`` (names and shapes in ``contract.py``, section
"SAM2 video graphs"). h = w = S/16, T = h*w tokens per frame in raster order (``index = y*w + x``).

memory_attention.onnx  (``MemoryAttentionGraph``; ``_prepare_memory_conditioned_features`` after the
memory bank has been assembled)::

    image_embeddings [1,256,h,w]   the IMAGE encoder's output (64x64 level + no_mem_embed); the graph
                                   subtracts no_mem_embed to get the raw vision feature ``curr``
    memory           [B,R,T,64]    stored maskmem features (channels last), R frames per object
    memory_time      [B,R,7]       one-hot over maskmem_tpos_enc's index k (6: conditioning frame,
                                   t_rel - 1 for the frame t_rel frames back), i.e. num_maskmem - t_pos - 1
    memory_valid     [B,R]         1 / 0 (0: padding slot, when objects with different R share a batch)
    obj_ptrs         [B,P,256]     object pointers
    obj_ptr_tpos     [B,P]         signed frame distance / t_diff_max (SAM2.1); ignored by SAM2.0
                                   (add_tpos_enc_to_obj_ptrs = False: zero pointer position)
    obj_ptr_valid    [B,P]         1 / 0
    -> conditioned_embeddings [B,256,h,w]   (pix_feat_with_mem)

    R >= 1 and P >= 1 (shapes; the runtime pads with valid = 0), and at least one valid slot per
    object. Inside: curr_pos = the neck's sine encoding of the h x w level, memory_pos = the memory
    encoder's sine encoding + maskmem_tpos_enc via memory_time; each pointer is split into 4 tokens of
    64 (pointer-major) sharing the pointer's position and excluded from RoPE; invalid keys are zeroed
    and get an additive ``MASK_BIAS`` (-3e4: exp underflows to exactly 0 in float32, representable in
    float16) so a padded batch gives the unpadded answer.

memory_encoder.onnx  (``MemoryEncoderGraph``; ``_encode_new_memory``)::

    image_embeddings [1,256,h,w], mask_logits [B,1,4h,4w] (the selected low-res logits, -1024 where the
    object is absent), object_score_logits [B,1], binarize [B] (1: (high_res > 0), 0: sigmoid)
    -> maskmem_features [B,T,64]

track_decoder.onnx  (``TrackDecoderGraph``; ``_forward_sam_heads`` without the selection)::

    conditioned_embeddings [B,256,h,w], high_res_feats_0 [1,32,4h,4w], high_res_feats_1 [1,64,2h,2w],
    point_coords [B,N,2], point_labels [B,N], mask_input [B,1,4h,4w], has_mask_input [B]
    -> iou_predictions [B,4] (sigmoid), low_res_masks [B,4,4h,4w] (raw logits), object_score_logits [B,1],
       obj_ptrs [B,4,256] (obj_ptr_proj of each mask token's output, mixed with no_obj_ptr by
       (object_score_logits > 0) as fixed_no_obj_ptr does)

How the forward passes are written (same mathematics as the official code, re-associated):

- RoPE with real arithmetic: the rotation pairs channels (2i, 2i+1) (``view_as_complex``). The q and k
  projections' output channels are permuted to [even..., odd...] (the same permutation on q and k leaves
  every logit unchanged), and each projection is computed together with its half-swapped copy (one
  Linear with twice the outputs), so ``rot(x) = y1 * [cos, cos] + y2 * [-sin, sin]``: no strided slices,
  no complex ops. The keys of the R memory frames reuse the T-position table (``rope_k_repeat``) by
  broadcasting; pointer tokens are not rotated (``num_k_exclude_rope``).
- 1/sqrt(256) = 1/16 is folded into q (a power of two: exact).
- Values: ``out_proj(v_proj(x))`` is affine and softmax rows sum to 1, so the attention averages the raw
  64-d memory tokens and one fused 64->256 Linear follows: a quarter of the value work.
- Queries are split into static chunks (``torch.split`` -> ONNX Split/Concat, exact) so the largest
  attention tensor is at most ``ATTN_CHUNK_BYTES`` (64 MiB) per object for R = num_maskmem, P = 16
  (S = 1024: 8 chunks of 512 queries x 28736 keys; S = 512: one). More frames (several conditioning
  frames) make the chunks proportionally larger.
- The invalid-key bias is one more key channel (q = [q, 1], k = [k; bias]), so it costs no elementwise
  pass over the logits and no extra logit-sized tensor.
- Layer 0's self-attention sees the same input for every object: computed once per call (batch 1).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import LayerNorm2d

__all__ = [
    "RoPEAttention", "MemoryAttentionLayer", "MemoryAttention", "MaskDownSampler", "CXBlock", "Fuser",
    "MemoryEncoder", "sine_position_encoding", "axial_rope_tables", "get_1d_sine_pe",
    "MemoryAttentionGraph", "MemoryEncoderGraph", "TrackDecoderGraph", "video_examples", "video_constants",
    "MASK_BIAS", "ATTN_CHUNK_BYTES", "attention_chunks", "check_image_size",
]

MASK_BIAS = -30000.0  # additive logit bias of invalid (padding) keys
ATTN_CHUNK_BYTES = 64 * 2**20  # largest attention-logit tensor per object (float32)
MAX_PTR_TOKENS = 16 * 4  # max_obj_ptrs_in_encoder pointers x 4 tokens (chunk sizing only)


def check_image_size(size: int) -> int:
    """S must be a multiple of 32 (Hiera: stride-4 patches tiled by the 8x8 window position embedding,
    three 2x poolings, the FPN's nearest 2x; the memory encoder's four stride-2 convolutions need 16)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 256 or size > 4096 or size % 32:
        raise ValueError(f"SAM2 image size must be a multiple of 32 in 256..4096, got {size!r}")
    return size


# ---- constants: positional encodings (float32, computed exactly as the official code does) ------------
@lru_cache(maxsize=16)
def _sine_pe(num_pos_feats: int, h: int, w: int, temperature: float = 10000.0) -> Tensor:
    """``PositionEmbeddingSine(num_pos_feats, normalize=True)`` of an h x w map: [1, num_pos_feats, h, w]."""
    npf = num_pos_feats // 2
    scale = 2 * math.pi
    y_embed = torch.arange(1, h + 1, dtype=torch.float32).view(1, -1, 1).repeat(1, 1, w)
    x_embed = torch.arange(1, w + 1, dtype=torch.float32).view(1, 1, -1).repeat(1, h, 1)
    eps = 1e-6
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(npf, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / npf)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).contiguous()


def sine_position_encoding(num_pos_feats: int, h: int, w: int) -> Tensor:
    """[1, C, h, w] (a copy of the cached constant)."""
    return _sine_pe(num_pos_feats, h, w).clone()


@lru_cache(maxsize=16)
def _rope(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``compute_axial_cis(dim, end_x, end_y, theta)`` as (cos, sin), each [end_x*end_y, dim // 2]."""
    freqs_x = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    freqs_y = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x).float()
    t_y = torch.div(t, end_x, rounding_mode="floor").float()
    angles = torch.cat([torch.outer(t_x, freqs_x), torch.outer(t_y, freqs_y)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def axial_rope_tables(dim: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """(cos2, sin2) [h*w, dim] for the permuted layout: ``[cos, cos]`` and ``[-sin, sin]``."""
    cos, sin = _rope(dim, w, h)
    return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)


def get_1d_sine_pe(pos: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """``sam2_utils.get_1d_sine_pe``: pos [...] -> [..., dim] (sin half, cos half)."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32)
    dim_t = (temperature ** (2 * (dim_t // 2) / pe_dim)).to(pos.device)
    pe = pos.unsqueeze(-1) / dim_t
    return torch.cat([pe.sin(), pe.cos()], dim=-1)


def attention_chunks(rows: int, cols: int, limit: int = ATTN_CHUNK_BYTES) -> int:
    """How many query chunks keep a float32 [rows/n, cols] logit tensor at or below ``limit``
    (n divides rows)."""
    n = max(1, math.ceil(rows * cols * 4 / limit))
    while rows % n:
        n += 1
    return n


def _even_odd(dim: int) -> Tensor:
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


# ---- memory attention ------------------------------------------------------------------------------
class RoPEAttention(nn.Module):
    """``RoPEAttention`` (one head; keys ``q_proj``/``k_proj``/``v_proj``/``out_proj``). Parameters only:
    the arithmetic lives in :class:`MemoryAttention` (it needs the whole memory layout)."""

    def __init__(self, dim: int = 256, kv_in_dim: int = 256) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_in_dim, dim)
        self.v_proj = nn.Linear(kv_in_dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def rotary_weights(self, which: str, scale: float = 1.0) -> tuple[Tensor, Tensor]:
        """(weight [2D, in], bias [2D]) of ``which`` ('q' | 'k') with permuted output channels
        [even, odd] followed by the half-swapped copy [odd, even] (see the module docstring)."""
        lin = self.q_proj if which == "q" else self.k_proj
        d = lin.out_features
        perm = _even_odd(d).to(lin.weight.device)
        swap = torch.cat([perm[d // 2:], perm[: d // 2]])
        w = torch.cat([lin.weight[perm], lin.weight[swap]], dim=0) * scale
        b = torch.cat([lin.bias[perm], lin.bias[swap]], dim=0) * scale
        return w, b

    def permuted_k(self) -> tuple[Tensor, Tensor]:
        """k_proj with the [even, odd] output order of :meth:`rotary_weights` and no rotation (keys
        excluded from RoPE must live in the same channel order as the rotated queries)."""
        d = self.k_proj.out_features
        perm = _even_odd(d).to(self.k_proj.weight.device)
        return self.k_proj.weight[perm], self.k_proj.bias[perm]

    def fused_value_out(self) -> tuple[Tensor, Tensor]:
        """out_proj(v_proj(x)) as one affine map: (weight [D, kv_in], bias [D])."""
        w = self.out_proj.weight @ self.v_proj.weight
        b = self.out_proj.weight @ self.v_proj.bias + self.out_proj.bias
        return w, b


def _rotate(x: Tensor, w: Tensor, b: Tensor, cos2: Tensor, sin2: Tensor, d: int) -> Tensor:
    """Projection + rotary encoding: x [..., T, in] -> [..., T, d] (``w`` has 2d rows)."""
    y = F.linear(x, w, b)
    first, second = torch.split(y, d, dim=-1)
    return first * cos2 + second * sin2


def _attend(q: Tensor, k_t: Tensor, v: Tensor, rows: int, chunks: int) -> Tensor:
    """softmax(q k^T) v with the ``rows`` queries in ``chunks`` static pieces: q [B,rows,D] (scaled),
    k_t [B,D,K], v [B,K,E] -> [B,rows,E]. (A key bias travels as one more channel: q = [q, 1],
    k_t = [k_t; bias], so no [rows, K] tensor is added to.)"""
    outs = []
    for part in (torch.split(q, rows // chunks, dim=1) if chunks > 1 else (q,)):
        outs.append(torch.softmax(part @ k_t, dim=-1) @ v)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class MemoryAttentionLayer(nn.Module):
    """Official keys: ``self_attn``, ``cross_attn_image`` (kv_in_dim 64), ``linear1``/``linear2`` (FFN 2048,
    ReLU), ``norm1..3``. Pre-norm; no positional encoding on the self-attention or cross-attention queries,
    memory_pos on the cross-attention keys."""

    def __init__(self, d_model: int = 256, mem_dim: int = 64, ffn: int = 2048) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model)
        self.cross_attn_image = RoPEAttention(d_model, mem_dim)
        self.linear1 = nn.Linear(d_model, ffn)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)


class MemoryAttention(nn.Module):
    """``memory_attention``: 4 layers + final ``norm``; see :meth:`forward`."""

    def __init__(self, d_model: int = 256, num_layers: int = 4, mem_dim: int = 64) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(MemoryAttentionLayer(d_model, mem_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    @torch.no_grad()
    def prepared(self) -> list[dict[str, Tensor]]:
        """Per layer, the derived weights the forward pass multiplies with (detached; the export wrapper
        keeps them as buffers so the graph stores them once as initializers): rotary q/k projections
        (q scaled by 1/sqrt(d)), the un-rotated permuted k of the pointer tokens, fused value+output maps."""
        scale = 1.0 / math.sqrt(self.d_model)  # one head of d_model channels
        out = []
        for layer in self.layers:
            sa, ca = layer.self_attn, layer.cross_attn_image
            parts = {"sa_q": sa.rotary_weights("q", scale), "sa_k": sa.rotary_weights("k"), "sa_vo": sa.fused_value_out(),
                     "ca_q": ca.rotary_weights("q", scale), "ca_k": ca.rotary_weights("k"), "ca_kp": ca.permuted_k(),
                     "ca_vo": ca.fused_value_out()}
            out.append({f"{k}_{n}": t.detach().clone() for k, (w, b) in parts.items() for n, t in (("w", w), ("b", b))})
        return out

    def forward(self, curr: Tensor, curr_pos: Tensor, cos2: Tensor, sin2: Tensor, mem_k: Tensor, mem_v: Tensor,
                ptr_k: Tensor, ptr_v: Tensor, bias: Tensor, cross_chunks: int = 1, self_chunks: int = 1,
                weights: list[dict[str, Tensor]] | None = None, rows: int | None = None) -> Tensor:
        """curr [1|B, T, C] (raw vision tokens), curr_pos [1, T, C], RoPE tables cos2 / sin2 [T, C]
        (:func:`axial_rope_tables`); mem_k / mem_v [B, R, T, 64] (memory + pos / memory, zero where invalid),
        ptr_k / ptr_v [B, 4P, 64] (likewise), bias [B, 1, R*T + 4P] -> [B, T, C] (after the final norm).
        ``weights``: :meth:`prepared` (computed here when not given); ``rows``: T as a Python int (export)."""
        d = self.d_model
        rows = int(curr_pos.shape[-2]) if rows is None else rows
        weights = self.prepared() if weights is None else weights
        tgt = curr + 0.1 * curr_pos
        values = torch.cat([mem_v.flatten(1, 2), ptr_v], dim=1)  # [B, K, 64]: the same for every layer
        for layer, wt in zip(self.layers, weights):
            # self-attention (RoPE on q and k, v = the normed tokens)
            x = layer.norm1(tgt)
            q = _rotate(x, wt["sa_q_w"], wt["sa_q_b"], cos2, sin2, d)
            k = _rotate(x, wt["sa_k_w"], wt["sa_k_b"], cos2, sin2, d)
            tgt = tgt + F.linear(_attend(q, k.transpose(1, 2), x, rows, self_chunks), wt["sa_vo_w"], wt["sa_vo_b"])
            # cross-attention to the memories (RoPE, repeated per frame) and pointers (no RoPE)
            x = layer.norm2(tgt)
            q = _rotate(x, wt["ca_q_w"], wt["ca_q_b"], cos2, sin2, d)
            km = _rotate(mem_k, wt["ca_k_w"], wt["ca_k_b"], cos2, sin2, d).flatten(1, 2)  # [B, R*T, C]
            kp = F.linear(ptr_k, wt["ca_kp_w"], wt["ca_kp_b"])  # [B, 4P, C], not rotated
            keys_t = torch.cat([torch.cat([km, kp], dim=1).transpose(1, 2), bias], dim=1)  # [B, C+1, K]
            q = torch.cat([q, q[..., :1] * 0.0 + 1.0], dim=-1)  # [B|1, T, C+1]: the bias channel
            tgt = tgt + F.linear(_attend(q, keys_t, values, rows, cross_chunks), wt["ca_vo_w"], wt["ca_vo_b"])
            # feed-forward
            tgt = tgt + layer.linear2(F.relu(layer.linear1(layer.norm3(tgt))))
        return self.norm(tgt)


# ---- memory encoder -----------------------------------------------------------------------------------
class MaskDownSampler(nn.Module):
    """``mask_downsampler.encoder``: 4 x (Conv k3 s2 p1, LayerNorm2d, GELU) 1->4->16->64->256, Conv 1x1."""

    def __init__(self, embed_dim: int = 256) -> None:
        super().__init__()
        chans = [1, 4, 16, 64, 256]
        mods: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            mods += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), LayerNorm2d(cout), nn.GELU()]
        mods.append(nn.Conv2d(chans[-1], embed_dim, 1))
        self.encoder = nn.Sequential(*mods)  # indices 0..12 as in the official MaskDownSampler

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm2d (eps 1e-6), Linear 4x, GELU, Linear, layer scale ``gamma``."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """``memory_encoder``: mask_downsampler, pix_feat_proj, fuser (2 CXBlocks), out_proj (256 -> 64)."""

    def __init__(self, d_model: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(d_model)
        self.pix_feat_proj = nn.Conv2d(d_model, d_model, 1)
        self.fuser = Fuser(d_model)
        self.out_proj = nn.Conv2d(d_model, out_dim, 1)

    def forward(self, pix_feat: Tensor, masks: Tensor) -> Tensor:
        """pix_feat [1|B, 256, h, w], masks [B, 1, S, S] (already scaled: skip_mask_sigmoid) -> [B, 64, h, w]."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        return self.out_proj(self.fuser(x))


# ---- the exported graphs ---------------------------------------------------------------------------------
class _VideoGraph(nn.Module):
    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam
        self.training = sam.training  # a wrapper is only as eval as the model it wraps
        self.size = int(sam.image_size)
        self.h = self.w = self.size // 16


class MemoryAttentionGraph(_VideoGraph):
    """memory_attention.onnx (see the module docstring). The constants (positional encodings, RoPE
    tables, derived weights) are (persistent: the TorchScript exporter inlines non-persistent buffers
    once per use) buffers of this wrapper, so each is one initializer of the graph."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__(sam)
        h, w, c, m = self.h, self.w, sam.hidden_dim, sam.mem_dim
        dev = sam.no_mem_embed.device
        t = h * w
        self.register_buffer("curr_pos", _sine_pe(c, h, w).flatten(2).transpose(1, 2).contiguous().to(dev))
        self.register_buffer("mem_pos", _sine_pe(m, h, w).flatten(2).transpose(1, 2).unsqueeze(0).contiguous().to(dev),
                             persistent=False)  # [1,1,T,64]
        cos2, sin2 = axial_rope_tables(c, h, w)
        self.register_buffer("cos2", cos2.to(dev))
        self.register_buffer("sin2", sin2.to(dev))
        self.register_buffer("zeros_t", torch.zeros(t, device=dev))
        self.register_buffer("zeros_p", torch.zeros(c // m, device=dev))
        self._names: list[dict[str, str]] = []
        for i, wt in enumerate(sam.memory_attention.prepared()):
            names = {}
            for k, v in wt.items():
                names[k] = f"layer{i}_{k}"
                self.register_buffer(names[k], v.to(dev))
            self._names.append(names)
        self.cross_chunks = attention_chunks(t, sam.num_maskmem * t + MAX_PTR_TOKENS)
        self.self_chunks = attention_chunks(t, t)

    def forward(self, image_embeddings: Tensor, memory: Tensor, memory_time: Tensor, memory_valid: Tensor,
                obj_ptrs: Tensor, obj_ptr_tpos: Tensor, obj_ptr_valid: Tensor) -> Tensor:
        sam, h, w = self.sam, self.h, self.w
        c, mem_dim = sam.hidden_dim, sam.mem_dim
        curr = (image_embeddings - sam.no_mem_embed.reshape(1, -1, 1, 1)).flatten(2).transpose(1, 2)  # [1,T,C]
        tpos = memory_time @ sam.maskmem_tpos_enc.reshape(sam.num_maskmem, mem_dim)  # [B,R,64]
        mvalid = memory_valid.unsqueeze(-1).unsqueeze(-1)  # [B,R,1,1]
        mem_k = (memory + self.mem_pos + tpos.unsqueeze(2)) * mvalid
        mem_v = memory * mvalid
        # pointers: 4 tokens of 64 each (pointer-major), the pointer's temporal position on each
        split = c // mem_dim
        ptr_tok = obj_ptrs.unflatten(-1, (split, mem_dim))  # [B,P,4,64]
        if sam.sam2_1:  # add_tpos_enc_to_obj_ptrs + proj_tpos_enc_in_obj_ptrs
            ptr_pos = sam.obj_ptr_tpos_proj(get_1d_sine_pe(obj_ptr_tpos, c)).unsqueeze(2)  # [B,P,1,64]
        else:  # SAM2.0: zero pointer positions
            ptr_pos = obj_ptr_tpos.unsqueeze(-1).unsqueeze(-1) * 0.0
        pvalid = obj_ptr_valid.unsqueeze(-1).unsqueeze(-1)  # [B,P,1,1]
        ptr_k = ((ptr_tok + ptr_pos) * pvalid).flatten(1, 2)  # [B,4P,64]
        ptr_v = (ptr_tok * pvalid).flatten(1, 2)
        # additive bias of the invalid keys, in key order [R frames x T, 4P pointer tokens]
        bias_m = ((memory_valid - 1.0) * -MASK_BIAS).unsqueeze(-1) + self.zeros_t  # [B,R,T]
        bias_p = ((obj_ptr_valid - 1.0) * -MASK_BIAS).unsqueeze(-1) + self.zeros_p  # [B,P,4]
        bias = torch.cat([bias_m.flatten(1), bias_p.flatten(1)], dim=1).unsqueeze(1)  # [B,1,K]
        weights = [{k: getattr(self, n) for k, n in names.items()} for names in self._names]
        out = sam.memory_attention(curr, self.curr_pos, self.cos2, self.sin2, mem_k, mem_v, ptr_k, ptr_v, bias,
                                   cross_chunks=self.cross_chunks, self_chunks=self.self_chunks, weights=weights,
                                   rows=h * w)
        return out.transpose(1, 2).unflatten(-1, (h, w))  # [B,C,h,w]


class MemoryEncoderGraph(_VideoGraph):
    """memory_encoder.onnx (see the module docstring)."""

    def forward(self, image_embeddings: Tensor, mask_logits: Tensor, object_score_logits: Tensor,
                binarize: Tensor) -> Tensor:
        sam = self.sam
        pix = image_embeddings - sam.no_mem_embed.reshape(1, -1, 1, 1)
        high = F.interpolate(mask_logits, size=(self.size, self.size), mode="bilinear", align_corners=False)
        b = binarize.reshape(-1, 1, 1, 1)
        mask = b * (high > 0).to(high.dtype) + (1.0 - b) * torch.sigmoid(high)
        mask = mask * sam.sigmoid_scale_for_mem_enc + sam.sigmoid_bias_for_mem_enc
        feats = sam.memory_encoder(pix, mask)  # [B,64,h,w]
        if sam.sam2_1:  # no_obj_embed_spatial where the object is absent
            absent = 1.0 - (object_score_logits > 0).to(feats.dtype)  # [B,1]
            feats = feats + absent.unsqueeze(-1).unsqueeze(-1) * sam.no_obj_embed_spatial.reshape(1, -1, 1, 1)
        else:  # SAM2.0 has no no_obj_embed_spatial; the input stays part of the graph's interface
            feats = feats + (object_score_logits * 0.0).unsqueeze(-1).unsqueeze(-1)
        return feats.reshape(-1, sam.mem_dim, self.h * self.w).transpose(1, 2)  # [B,T,64] (static T)


class TrackDecoderGraph(_VideoGraph):
    """track_decoder.onnx: ``Sam2Image.track_decode``."""

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        return self.sam.track_decode(*inputs)


def video_examples(sam: nn.Module, role: str) -> tuple[Tensor, ...]:
    """Traced examples: every dynamic axis with a size != 1 and distinct from the others."""
    g = torch.Generator().manual_seed(0)
    s = int(sam.image_size)
    h = s // 16
    t = h * h
    emb = torch.randn(1, 256, h, h, generator=g)
    if role == "memory_attention":
        b, r, p = 2, 3, 5
        time = torch.zeros(b, r, sam.num_maskmem)
        time[:, 0, sam.num_maskmem - 1] = 1.0
        time[:, 1:, 0] = 1.0
        return (emb, torch.randn(b, r, t, sam.mem_dim, generator=g), time, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
                torch.randn(b, p, 256, generator=g), torch.rand(b, p, generator=g),
                torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0] * 5]))
    if role == "memory_encoder":
        b = 2
        return (emb, torch.randn(b, 1, 4 * h, 4 * h, generator=g) * 10.0, torch.tensor([[1.0], [-1.0]]),
                torch.tensor([1.0, 0.0]))
    if role == "track_decoder":
        b, n = 2, 3
        return (torch.randn(b, 256, h, h, generator=g), torch.randn(1, 32, 4 * h, 4 * h, generator=g),
                torch.randn(1, 64, 2 * h, 2 * h, generator=g), torch.rand(b, n, 2, generator=g) * s,
                torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, -1.0]]), torch.randn(b, 1, 4 * h, 4 * h, generator=g),
                torch.tensor([1.0, 0.0]))
    raise ValueError(f"unknown video graph {role!r}")


@torch.no_grad()
def video_constants(sam: nn.Module) -> dict[str, "object"]:
    """video_constants.npz: float32 NumPy arrays the runtime needs besides the graphs."""
    return {
        "no_mem_embed": sam.no_mem_embed.detach().reshape(-1).float().cpu().numpy(),
        "no_obj_ptr": sam.no_obj_ptr.detach().reshape(-1).float().cpu().numpy(),
        "mask_downsample_weight": sam.mask_downsample.weight.detach().float().cpu().numpy().reshape(1, 1, 4, 4),
        "mask_downsample_bias": sam.mask_downsample.bias.detach().float().cpu().numpy().reshape(1),
    }
