"""``Sam``: the image encoder, prompt encoder and mask decoder behind two methods that ARE the
samdeploy graph contract in PyTorch (export traces them; ``samdeploy check`` compares them with
ONNX Runtime). See ``samdeploy.contract`` for the contract itself.

    encode(image [B,3,S,S] RGB 0..255, padded with the pixel mean) -> image_embeddings [B,256,64,64]
    decode(image_embeddings [1,256,64,64], point_coords [B,N,2], point_labels [B,N],
           mask_input [B,1,256,256], has_mask_input [B]) -> (iou_predictions [B,4],
                                                              low_res_masks [B,4,256,256])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..contract import SAM_PIXEL_MEAN, SAM_PIXEL_STD, ModelContract
from .factored_decoder import factored_decode
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

__all__ = ["Sam"]


class Sam(nn.Module):
    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = SAM_PIXEL_STD,
        variant: str = "",
        weights_sha256: str = "",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not in official checkpoints (persistent=False there too).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)
        #: variant name in ``samdeploy.models.variants.VARIANTS`` (set by build_model / load_checkpoint)
        self.variant = variant
        #: SHA-256 of the checkpoint file, or "random:<variant>:seed=<n>" for seeded random weights
        self.weights_sha256 = weights_sha256

    # ---- the contract ------------------------------------------------------------------------
    def encode(self, image: Tensor) -> Tensor:
        """[B,3,S,S] float RGB in 0..255 (resized longest side to S, padded bottom/right with the
        pixel mean) -> image embeddings [B,256,S/16,S/16]. Normalisation happens here, so the
        padded area is exactly 0 after it, as in SAM (which pads after normalising)."""
        x = (image - self.pixel_mean) / self.pixel_std
        return self.image_encoder(x)

    def decode(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One image's embeddings [1,256,64,64] and B prompts of N points each -> (iou_predictions
        [B,4], low_res_masks [B,4,256,256]) for all four mask tokens.

        point_coords are (x, y) pixels in the encoder-input frame (the +0.5 pixel-centre shift and
        the normalisation by the input size happen here); labels -1 pad, 0 negative, 1 positive,
        2/3 box corners. The caller appends the padding point (0, 0, -1) when a prompt has no box.
        """
        # The exported arithmetic: prompt-independent work once per call, low-rank attention,
        # channels-last upscaling (see factored_decoder.py). decode_reference() is the plain form.
        return factored_decode(
            self.prompt_encoder, self.mask_decoder, image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )

    def decode_reference(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Same outputs as :meth:`decode`, computed the way the official MaskDecoder reads
        (prompt encoder -> two-way transformer -> upscaling). Used by tests as the readable reference."""
        sparse, dense = self.prompt_encoder(point_coords, point_labels, mask_input, has_mask_input)
        masks, iou = self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return iou, masks

    def forward(self, image: Tensor) -> Tensor:  # so that `model(image)` does something sensible
        return self.encode(image)

    # ---- metadata ------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.prompt_encoder.input_image_size[0])

    @property
    def contract(self) -> ModelContract:
        """The :class:`~samdeploy.contract.ModelContract` of this model (variant + weights hash)."""
        return self.make_contract()

    def make_contract(self, weights_sha256: str | None = None, **provenance: Any) -> ModelContract:
        from .variants import contract_for

        if not self.variant:
            raise ValueError("this Sam has no variant name; build it with samdeploy.models.build.build_model")
        sha = weights_sha256 if weights_sha256 is not None else self.weights_sha256
        if not sha:
            raise ValueError("no weights hash: pass weights_sha256= or load the model with load_checkpoint")
        return contract_for(self.variant, sha, provenance=provenance)
