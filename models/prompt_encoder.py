"""SAM's prompt encoder, written for export: points (incl. box corners) -> sparse tokens,
mask input -> dense embedding.

Contract differences from the official module (same parameters, same arithmetic):
- Boxes arrive as two corner points with labels 2 (top-left) and 3 (bottom-right); the official
  ``_embed_boxes`` adds ``point_embeddings[2/3]`` to the corners exactly as label 2/3 does here.
- Labels select their embeddings through comparisons and multiplications (no boolean-index writes,
  no OneHot): label -1 (padding) gets ``not_a_point_embed`` instead of the positional encoding.
- ``zero_token_label`` (EdgeSAM: -2): a point with that label becomes an all-zero token.
- No padding point is appended: the caller appends (0, 0, -1) when a prompt has no box, as the
  official encoder does (see ``samdeploy.contract.Prompts``).
- The mask input is blended without control flow:
  ``has * mask_downscaling(mask) + (1 - has) * no_mask_embed``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d

__all__ = ["PromptEncoder", "PositionEmbeddingRandom"]


class PositionEmbeddingRandom(nn.Module):
    """Fourier features with a fixed random Gaussian matrix (Tancik et al., 2020).

    coords in [0,1]^2 -> [sin(2 pi (2c-1) G), cos(2 pi (2c-1) G)], G [2, num_pos_feats].
    The matrix is a persistent buffer, so it comes from the checkpoint.
    """

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, h: int, w: int) -> torch.Tensor:
        """Encoding of the centres of an h x w grid: [C, h, w]."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)  # (x, y)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (x, y) [..., 2] in an image of (H, W) -> [..., C]."""
        size = torch.tensor([float(image_size[1]), float(image_size[0])], device=coords.device)
        return self._pe_encoding(coords / size)


class PromptEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
        zero_token_label: int | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.zero_token_label = zero_token_label
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # label 0 negative, 1 positive, 2 box top-left, 3 box bottom-right
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: [1, C, 64, 64] (a constant of the weights)."""
        return self.pe_layer.dense(*self.image_embedding_size).unsqueeze(0)

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """[B,N,2] pixel coords in the encoder-input frame, [B,N] labels (-1..3) -> [B,N,C]."""
        coords = point_coords + 0.5  # pixel centres
        pe = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        labels = point_labels.unsqueeze(-1)
        is_pad = (labels == -1).to(pe.dtype)
        emb = pe * (1.0 - is_pad) + is_pad * self.not_a_point_embed.weight
        for i in range(self.num_point_embeddings):
            emb = emb + (labels == i).to(pe.dtype) * self.point_embeddings[i].weight
        if self.zero_token_label is not None:
            emb = emb * (labels != self.zero_token_label).to(pe.dtype)
        return emb

    def embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """[B,1,256,256] logits, [B] flags (1.0 use / 0.0 ignore) -> [B,C,64,64]."""
        has = has_mask_input.reshape(-1, 1, 1, 1)
        masked = self.mask_downscaling(mask_input)
        return has * masked + (1.0 - has) * self.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def forward(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (sparse [B,N,C], dense [B,C,64,64])."""
        return self.embed_points(point_coords, point_labels), self.embed_masks(mask_input, has_mask_input)
