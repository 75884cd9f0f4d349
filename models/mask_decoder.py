"""SAM's mask decoder, returning all four mask tokens.

tokens = [iou_token, mask_tokens(4), prompt tokens] -> two-way transformer with the image embedding
(+ dense prompt embedding) -> the image tokens are upscaled 4x (64 -> 256) by two transposed
convolutions; each mask token goes through its own hypernetwork MLP to 32 weights that are dotted
with the upscaled features: masks [B,4,256,256]. The IoU token's MLP predicts one score per mask.

Token 0 is the single-mask output, tokens 1..3 the multimask outputs; which to use is the
runtime's choice (the official ``multimask_output`` switch only slices these).

Export notes: ``image_embeddings`` may have batch 1 and is broadcast over the B prompts when the
dense prompt embedding is added (the official code repeat_interleaves it B times).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import LayerNorm2d, MLP
from .transformer import TwoWayTransformer

__all__ = ["MaskDecoder"]


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: nn.Module | None = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer(embedding_dim=transformer_dim)
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """image_embeddings [1,C,h,w], image_pe [1,C,h,w], sparse [B,N,C], dense [B,C,h,w]
        -> (masks [B,4,4h,4w], iou_pred [B,4]). Same signature as the official ``predict_masks``."""
        c, h, w = image_embeddings.shape[1:]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)  # [5, C]
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.shape[0], -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        src = image_embeddings + dense_prompt_embeddings  # broadcast: one image, B prompts
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        # [B, h*w, C] -> [B, C, h, w] -> upscaled [B, C/8, 4h, 4w]
        src = src.transpose(1, 2).unflatten(-1, (h, w))
        upscaled = self.output_upscaling(src)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # [B, 4, C/8]
        masks = (hyper_in @ upscaled.flatten(2)).unflatten(-1, (4 * h, 4 * w))
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """All mask tokens: (masks [B,4,256,256], iou_pred [B,4])."""
        return self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
