"""HQ-SAM (Ke et al., "Segment Anything in High Quality", NeurIPS 2023; SysCV/sam-hq), written for export.

HQ-SAM keeps SAM frozen and adds a *High-Quality Output Token* and a *global-local feature fusion*:

    HQ features  F_hq = embedding_encoder(image_embeddings)            ConvT 256->64, LN2d, GELU, ConvT 64->32
                      + compress_vit_feat(early ViT feature)           ConvT vit_dim->256, LN2d, GELU, ConvT 256->32
                                                                       -> [1, 32, 256, 256], once per image
    tokens           [iou_token, mask_tokens(4), hf_token, prompt tokens]  -> SAM's two-way transformer
    SAM masks        output_hypernetworks_mlps[i](token i) . U,        U = output_upscaling(image tokens) [B,32,256,256]
    HQ mask          hf_mlp(hf token) . (embedding_maskfeature(U) + F_hq)
                     embedding_maskfeature = Conv3x3 32->64, LN2d, GELU, Conv3x3 64->32

The early ViT feature ("interm", channels last [B, 64, 64, vit_dim]) is the output of the
first global-attention block of SAM's ViT (vit_b: block 2, vit_l: 5, vit_h: 7; the official encoder
returns all four global blocks' outputs and the decoder reads [0]), or for ``vit_tiny`` (TinyViT-5M,
MobileSAM's encoder) the output of ``layers[1]`` (after its PatchMerging to 160 channels, 64 x 64).
``vit_dim`` = 768 / 1024 / 1280 / 160 for vit_b / vit_l / vit_h / vit_tiny.

F_hq depends on the image only, so it is computed ONCE per image, in the encoder graph: the encoder
returns ``(image_embeddings, hq_features)`` and the decoder consumes both (the official decoder
recomputes F_hq for every prompt batch; here a click costs only the prompt-dependent part). Exports made
before this returned the early ViT feature as ``interm_embeddings`` and computed F_hq in the decoder;
their contracts say so and they keep working (the runtime feeds whatever the contract names).

Public API::

    MaskDecoderHQ(transformer_dim=256, transformer=None, num_multimask_outputs=3, iou_head_depth=3,
                  iou_head_hidden_dim=256, vit_dim=1024)
        .hq_features(image_embeddings [1,256,64,64], interm_embeddings [1,64,64,vit_dim]) -> [1,32,256,256]
        .predict_masks(image_embeddings, image_pe, sparse, dense, hq_features=None)
            -> (masks [B,5,256,256] (or the 4 SAM masks when hq_features is None), iou_pred [B,4])
    hq_decode(prompt_encoder, decoder_hq, image_embeddings, hq_features, point_coords,
              point_labels, mask_input, has_mask_input) -> (iou_predictions [B,4], low_res_masks [B,5,256,256])
    ImageEncoderViTHQ(ImageEncoderViT), TinyViTHQ(TinyViT): forward(x) -> (image_embeddings, interm)
    HQSam(Sam).encode(image 0..255 [B,3,1024,1024]) -> (image_embeddings [B,256,64,64], hq_features [B,32,256,256])
    HQSam.decode(image_embeddings [1,...], hq_features [1,...], point_coords, point_labels,
                 mask_input, has_mask_input) -> (iou_predictions [B,4], low_res_masks [B,5,256,256])
    HQSam.decode_reference(...)   same outputs, computed the way the official MaskDecoderHQ reads
    build_hq_sam(name, device=None), random_hq_sam(name, seed=0, realistic=True), make_realistic_hq_(model)
    hq_select(iou [B,4], low_res [B,5,H,W], multimask, hq_token_only) -> (scores [B,1], masks [B,1,H,W])  (NumPy)

Names: "hq_vit_b", "hq_vit_l", "hq_vit_h", "hq_vit_tiny". state_dict keys are the official checkpoints'
(``sam_hq_vit_{b,l,h,tiny}.pth``, plain state_dicts): image_encoder.*, prompt_encoder.*, mask_decoder.*.
Key counts (checked against segment-anything-hq 0.3 by tests/test_hq_sam.py):
hq_vit_b 339, hq_vit_l 507, hq_vit_h 619, hq_vit_tiny 464 (each = the SAM-1/MobileSAM model's keys + 25
HQ decoder keys: hf_token 1, hf_mlp 6, compress_vit_feat 6, embedding_encoder 6, embedding_maskfeature 6).

Decoder outputs and what the runtime must do with them
-----------------------------------------------------
The graph returns all four SAM mask tokens' logits (channels 0..3) and the HQ token's logits
(channel 4), plus the four IoU predictions of the SAM tokens (HQ-SAM has no IoU for its own token).
HQ-SAM's answer (official ``MaskDecoderHQ.forward``) is then, per prompt:

- ``multimask_output=True``:  k = 1 + argmax(iou[1:4]) (first maximum on ties, like torch.max);
  mask = low_res[k] + low_res[4]; score = iou[k].
- ``multimask_output=False``: k = 0; mask = low_res[0] + low_res[4]; score = iou[0].
- ``hq_token_only=True``: mask = low_res[4] alone; the score is still iou[k] with k as above.

The sum is taken on logits, *before* upsampling and thresholding (the official predictor upsamples
the summed low-res logits). HQ-SAM returns ONE mask per prompt even in multimask mode.
:func:`hq_select` implements this in NumPy (no torch import) for the runtime.

Export notes: no boolean-index writes, no data-dependent control flow; the prompt batch B comes from
``has_mask_input`` so N = 0 points works; the image embeddings and the HQ features have batch 1 and
are broadcast over the B prompts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import LayerNorm2d, MLP
from .factored_decoder import factored_two_way
from .image_encoder_vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "MaskDecoderHQ",
    "hq_decode",
    "ImageEncoderViTHQ",
    "TinyViTHQ",
    "HQSam",
    "HQ_VARIANTS",
    "build_hq_sam",
    "random_hq_sam",
    "make_realistic_hq_",
    "hq_select",
    "HQ_TOKEN",
]

HQ_TOKEN = 4  # channel of the HQ token's mask in low_res_masks


# ---- decoder -----------------------------------------------------------------------------------
class MaskDecoderHQ(MaskDecoder):
    """SAM's mask decoder plus HQ-SAM's output token and feature fusion (official key names).

    Extra parameters: ``hf_token`` (1, C), ``hf_mlp`` (MLP C->C->C->C/8), ``compress_vit_feat``,
    ``embedding_encoder``, ``embedding_maskfeature`` (see the module docstring). ``num_mask_tokens``
    stays SAM's 4; the HQ token comes after them.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: nn.Module | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        vit_dim: int = 1024,
    ) -> None:
        super().__init__(transformer_dim, transformer, num_multimask_outputs, iou_head_depth, iou_head_hidden_dim)
        c = transformer_dim
        self.vit_dim = vit_dim
        self.hf_token = nn.Embedding(1, c)  # the High-Quality Output Token
        self.hf_mlp = MLP(c, c, c // 8, 3)
        # global-local fusion: the early ViT feature and the final image embedding, both upscaled 4x
        self.compress_vit_feat = nn.Sequential(
            nn.ConvTranspose2d(vit_dim, c, kernel_size=2, stride=2),
            LayerNorm2d(c),
            nn.GELU(),
            nn.ConvTranspose2d(c, c // 8, kernel_size=2, stride=2),
        )
        self.embedding_encoder = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
        )
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(c // 8, c // 4, kernel_size=3, padding=1),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c // 8, kernel_size=3, padding=1),
        )

    def output_tokens(self) -> Tensor:
        """[iou_token, mask_tokens(4), hf_token]: [6, C]."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0)

    def hq_features(self, image_embeddings: Tensor, interm_embeddings: Tensor) -> Tensor:
        """image_embeddings [1,C,64,64], interm_embeddings [1,64,64,vit_dim] (channels last, as the
        official encoders return it) -> F_hq [1,C/8,256,256]. Prompt-independent."""
        vit_features = interm_embeddings.permute(0, 3, 1, 2)
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(vit_features)

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        hq_features: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The official ``predict_masks`` (image batch 1 broadcast over B prompts):
        -> (masks [B,5,4h,4w] = 4 SAM tokens + the HQ token, iou_pred [B,4]).

        Without ``hq_features`` only the 4 SAM masks are returned (they do not depend on them; the
        HQ token still takes part in the transformer). ``init.make_realistic_`` relies on this."""
        c, h, w = image_embeddings.shape[1:]
        tokens = self.output_tokens().unsqueeze(0).expand(sparse_prompt_embeddings.shape[0], -1, -1)
        tokens = torch.cat([tokens, sparse_prompt_embeddings], dim=1)

        src = image_embeddings + dense_prompt_embeddings
        hs, src = self.transformer(src, image_pe, tokens)
        n = self.num_mask_tokens
        iou_pred = self.iou_prediction_head(hs[:, 0, :])
        mask_tokens_out = hs[:, 1 : 1 + n, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).unflatten(-1, (h, w)))  # [B,C/8,4h,4w]
        hyper = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        masks = (hyper @ upscaled.flatten(2)).unflatten(-1, (4 * h, 4 * w))
        if hq_features is None:
            return masks, iou_pred
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features
        hyper_hq = self.hf_mlp(hs[:, 1 + n, :]).unsqueeze(1)  # [B,1,C/8]
        mask_hq = (hyper_hq @ upscaled_hq.flatten(2)).unflatten(-1, (4 * h, 4 * w))
        return torch.cat([masks, mask_hq], dim=1), iou_pred

    def forward(  # type: ignore[override]
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        interm_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """All five tokens: (masks [B,5,256,256], iou_pred [B,4]); select with :func:`hq_select`."""
        hq = self.hq_features(image_embeddings, interm_embeddings)
        return self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, hq)


def _hq_mask(dec: MaskDecoderHQ, upscaled: Tensor, hq_token: Tensor, hq_features: Tensor) -> Tensor:
    """hf_mlp(token) . (embedding_maskfeature(U) + F_hq) with the last 3x3 conv folded into the dot
    product: sum_c y_c (W_c * g + b_c) = (y W) * g + y.b, a per-prompt 3x3 conv from 64 channels to 1,
    computed as 9 tap planes (one batched MatMul) summed at shifted offsets. U [B,32,H,W] -> [B,1,H,W]."""
    conv = dec.embedding_maskfeature[3]
    g = dec.embedding_maskfeature[:3](upscaled)  # [B,64,H,W]
    hgt, wid = g.shape[-2:]
    y = dec.hf_mlp(hq_token)  # [B,32]
    kernel = (y @ conv.weight.flatten(1)).unflatten(-1, (conv.in_channels, 9))  # [B,64,9] (c, ky*3+kx)
    taps = (kernel.transpose(1, 2) @ g.flatten(2)).unflatten(-1, (hgt, wid))  # [B,9,H,W]
    taps = F.pad(taps, (1, 1, 1, 1))
    out = taps[:, 0:1, 0:hgt, 0:wid]
    for t in range(1, 9):
        ky, kx = divmod(t, 3)
        out = out + taps[:, t : t + 1, ky : ky + hgt, kx : kx + wid]
    y1 = y.unsqueeze(1)  # [B,1,32]
    const = (y1 @ hq_features.flatten(2)).unflatten(-1, (hgt, wid))  # [B,1,H,W] (F_hq has batch 1)
    return out + const + (y1 @ conv.bias.unsqueeze(-1)).unsqueeze(-1)  # + y.b


def hq_decode(
    prompt_encoder: PromptEncoder,
    decoder_hq: MaskDecoderHQ,
    image_embeddings: Tensor,
    hq_features: Tensor,
    point_coords: Tensor,
    point_labels: Tensor,
    mask_input: Tensor,
    has_mask_input: Tensor,
) -> tuple[Tensor, Tensor]:
    """One image (image_embeddings [1,256,64,64], hq_features [1,32,256,256] of the encoder) and B prompts
    (point_coords [B,N,2] pixels in the 1024 frame, point_labels [B,N] in -1..3, mask_input
    [B,1,256,256], has_mask_input [B]) -> (iou_predictions [B,4], low_res_masks [B,5,256,256]):
    channels 0..3 the SAM tokens, 4 the HQ token. No selection here (see :func:`hq_select`)."""
    dec = decoder_hq
    _, c, h, w = image_embeddings.shape
    sparse = prompt_encoder.embed_points(point_coords, point_labels)  # [B,N,C]
    per_prompt = has_mask_input.reshape(-1, 1, 1) * 0.0  # [B,1,1]: the batch even when N = 0
    tokens = torch.cat([dec.output_tokens().unsqueeze(0) + per_prompt, sparse], dim=1)  # [B,6+N,C]
    queries, keys = factored_two_way(prompt_encoder, dec.transformer, image_embeddings, tokens, mask_input, has_mask_input)

    n = dec.num_mask_tokens
    iou_pred = dec.iou_prediction_head(queries[:, 0, :])
    upscaled = dec.output_upscaling(keys.transpose(1, 2).unflatten(-1, (h, w)))  # [B,32,4h,4w]
    hyper = torch.stack([mlp(queries[:, 1 + i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    masks = (hyper @ upscaled.flatten(2)).unflatten(-1, (4 * h, 4 * w))  # [B,4,4h,4w]
    mask_hq = _hq_mask(dec, upscaled, queries[:, 1 + n, :], hq_features)
    return iou_pred, torch.cat([masks, mask_hq], dim=1)


# ---- encoders ------------------------------------------------------------------------------------
class ImageEncoderViTHQ(ImageEncoderViT):
    """SAM's ViT that also returns the first global-attention block's output:
    x [B,3,S,S] (normalised) -> (image_embeddings [B,256,S/16,S/16], interm [B,S/16,S/16,embed_dim])."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        globals_ = [i for i, b in enumerate(self.blocks) if b.window_size == 0]
        if not globals_:
            raise ValueError("HQ-SAM needs at least one global-attention block")
        self.interm_index = globals_[0]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        x = self.patch_embed(x) + self.pos_embed
        interm = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.interm_index:  # a constant of the module
                interm = x
        return self.neck(x.permute(0, 3, 1, 2)), interm


class TinyViTHQ(TinyViT):
    """TinyViT-5M that also returns the output of ``layers[1]`` (channels last, [B,64,64,160]), as
    HQ-SAM's ``vit_tiny`` encoder does: x -> (image_embeddings [B,256,64,64], interm [B,64,64,160])."""

    interm_layer = 1

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        x = self.patch_embed(x)
        interm = x
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.interm_layer:
                interm = x.permute(0, 2, 3, 1)
        return self.neck(x), interm


# ---- the model -------------------------------------------------------------------------------------
class HQSam(Sam):
    """``Sam`` with HQ-SAM's encoder (two outputs) and decoder (five mask channels).

    encode(image [B,3,S,S] RGB 0..255, mean-padded) -> (image_embeddings [B,256,64,64],
                                                       hq_features [B,32,256,256])
    decode(image_embeddings [1,...], hq_features [1,...], point_coords [B,N,2], point_labels [B,N],
           mask_input [B,1,256,256], has_mask_input [B]) -> (iou_predictions [B,4], low_res_masks [B,5,256,256])
    """

    mask_decoder: MaskDecoderHQ

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        x = (image - self.pixel_mean) / self.pixel_std
        embeddings, interm = self.image_encoder(x)
        # F_hq per image: the prompt-independent half of the HQ decoder, computed once here
        return embeddings, self.mask_decoder.hq_features(embeddings, interm)

    def decode(  # type: ignore[override]
        self,
        image_embeddings: Tensor,
        hq_features: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor]:
        return hq_decode(
            self.prompt_encoder, self.mask_decoder, image_embeddings, hq_features,
            point_coords, point_labels, mask_input, has_mask_input,
        )

    def decode_reference(  # type: ignore[override]
        self,
        image_embeddings: Tensor,
        hq_features: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Same outputs as :meth:`decode`, the way the official MaskDecoderHQ reads."""
        sparse, dense = self.prompt_encoder(point_coords, point_labels, mask_input, has_mask_input)
        dec = self.mask_decoder
        masks, iou = dec.predict_masks(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, hq_features)
        return iou, masks


# (embed_dim, depth, num_heads, global_attn_indexes) of the official builders; vit_tiny = TinyViT-5M
HQ_VARIANTS: dict[str, tuple[int, int, int, tuple[int, ...]] | None] = {
    "hq_vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "hq_vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "hq_vit_h": (1280, 32, 16, (7, 15, 23, 31)),
    "hq_vit_tiny": None,
}
TINY_VIT_DIM = 160  # embed_dims[2] of TinyViT-5M: the channels of layers[1]'s output


def build_hq_sam(name: str, device: str | torch.device | None = None) -> HQSam:
    """The architecture of HQ-SAM ``name`` ("hq_vit_b" | "hq_vit_l" | "hq_vit_h" | "hq_vit_tiny"),
    official key names and shapes, PyTorch default init, eval mode. ``device="meta"`` allocates nothing."""
    if name not in HQ_VARIANTS:
        raise ValueError(f"unknown HQ-SAM variant {name!r}; choose one of {sorted(HQ_VARIANTS)}")
    spec = HQ_VARIANTS[name]
    ctx = torch.device(device) if device is not None else torch.device("cpu")
    with ctx:
        if spec is None:
            encoder: nn.Module = TinyViTHQ(img_size=1024)  # defaults are TinyViT-5M (MobileSAM's vit_t)
            vit_dim = TINY_VIT_DIM
        else:
            embed, depth, heads, global_idx = spec
            encoder = ImageEncoderViTHQ(
                embed_dim=embed, depth=depth, num_heads=heads, mlp_dim=4 * embed,
                global_attn_indexes=global_idx, img_size=1024, patch_size=16, window_size=14, out_chans=256,
            )
            vit_dim = embed
        model = HQSam(
            image_encoder=encoder,
            prompt_encoder=PromptEncoder(256, (64, 64), (1024, 1024), mask_in_chans=16),
            mask_decoder=MaskDecoderHQ(
                transformer_dim=256,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048),
                num_multimask_outputs=3,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
                vit_dim=vit_dim,
            ),
            variant=name,
        )
    return model.eval()


@torch.no_grad()
def make_realistic_hq_(model: HQSam, target: float = 20.0, seed: int = 0) -> HQSam:
    """``init.make_realistic_`` for the SAM tokens and the IoU head, then the same for the HQ token:
    ``hf_mlp``'s last Linear is scaled so a probe (unit-scale random embeddings and early feature,
    4 single clicks) gives HQ logits spanning +-``target``. Deterministic, in place."""
    from .init import make_realistic_

    make_realistic_(model, target=target, seed=seed)
    dec = model.mask_decoder
    device = dec.hf_token.weight.device
    g = torch.Generator().manual_seed(seed + 1)
    emb = torch.randn(1, 256, 64, 64, generator=g).to(device)
    interm = torch.randn(1, 64, 64, dec.vit_dim, generator=g).to(device)
    n = 4
    coords = torch.cat([torch.rand(n, 1, 2, generator=g) * 1024.0, torch.zeros(n, 1, 2)], dim=1).to(device)
    labels = torch.tensor([[1.0, -1.0]] * n, device=device)
    _, masks = model.decode_reference(emb, dec.hq_features(emb, interm), coords, labels,
                                      torch.zeros(n, 1, 256, 256, device=device), torch.zeros(n, device=device))
    factor = target / max(masks[:, HQ_TOKEN].abs().max().item(), 1e-12)
    dec.hf_mlp.layers[-1].weight.mul_(factor)
    dec.hf_mlp.layers[-1].bias.mul_(factor)
    return model


def random_hq_sam(name: str, seed: int = 0, realistic: bool = True) -> HQSam:
    """``name`` with the seeded weights of ``init.randomize_`` (same value per key as for any module
    with that key), optionally rescaled by :func:`make_realistic_hq_`. eval mode."""
    from .init import randomize_

    model = build_hq_sam(name)
    randomize_(model, seed)
    if realistic:
        make_realistic_hq_(model)
    model.weights_sha256 = f"random:{name}:seed={seed}" + ("" if realistic else ":raw")
    return model.eval()


# ---- runtime selection: lives in the torch-free runtime, re-exported here ---------------------------
from ..runtime.hq import hq_select  # noqa: E402
