"""The two graphs that are exported: thin modules whose forward *is* ``Sam.encode`` / ``Sam.decode``.

Export traces these, and ``samdeploy check`` compares ``Sam.encode``/``Sam.decode`` with the ONNX
files, so the PyTorch reference and the graphs cannot drift apart.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..contract import DECODER_HAS_MASK_INPUT, DECODER_MASK_INPUT, DECODER_POINT_COORDS, DECODER_POINT_LABELS

# Symbolic names of the dynamic axes (shown by Netron, read by the TensorRT profile builder).
PROMPT_AXIS = "num_prompts"
POINT_AXIS = "num_points"
IMAGE_AXIS = "batch"


class EncoderGraph(nn.Module):
    """image [B,3,S,S] RGB 0..255 (mean-padded) -> image_embeddings [B,256,64,64]."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam
        self.training = sam.training  # a wrapper is only as eval as the model it wraps

    def forward(self, image: Tensor) -> Tensor:
        return self.sam.encode(image)


class DecoderGraph(nn.Module):
    """(image_embeddings [1,256,64,64] (+ any other encoder outputs the contract's decoder consumes),
    point_coords [B,N,2], point_labels [B,N], mask_input [B,1,256,256], has_mask_input [B])
    -> (iou_predictions [B,4], low_res_masks [B,4,256,256])."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam
        self.training = sam.training  # a wrapper is only as eval as the model it wraps

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        # the contract's decoder inputs, in order: encoder outputs first, then the prompt inputs
        return self.sam.decode(*inputs)


def encoder_example(input_size: int, batch: int = 1) -> tuple[Tensor]:
    """A traced example: the all-padding image (values do not matter, the graph has no data-dependent flow)."""
    from ..contract import SAM_PIXEL_MEAN

    image = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1).expand(batch, 3, input_size, input_size)
    return (image.contiguous(),)


def decoder_example(contract) -> tuple[Tensor, ...]:
    """B=2 prompts of N=3 points: both dynamic axes are traced with sizes != 1 so nothing specialises on 1.
    One tensor per encoder output the decoder consumes (batch 1), then the prompt inputs."""
    b, n = 2, 3
    g = torch.Generator().manual_seed(0)
    low = contract.decoder.low_res_size
    embeddings = tuple(torch.randn(1, *contract.embedding_shape(name), generator=g) for name in contract.decoder.embedding_inputs)
    return embeddings + (
        torch.rand(b, n, 2, generator=g) * 1000.0,
        torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]]),
        torch.randn(b, 1, low, low, generator=g),
        torch.tensor([1.0, 0.0]),
    )


def encoder_io(contract, dynamic_batch: bool) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    ins, outs = contract.encoder_io
    axes = {name: {0: IMAGE_AXIS} for name in ins + outs} if dynamic_batch else {}
    return list(ins), list(outs), axes


def decoder_io(contract) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    ins, outs = contract.decoder_io
    per_point, per_prompt = {0: PROMPT_AXIS, 1: POINT_AXIS}, {0: PROMPT_AXIS}
    axes = {
        DECODER_POINT_COORDS: per_point,
        DECODER_POINT_LABELS: per_point,
        DECODER_MASK_INPUT: per_prompt,
        DECODER_HAS_MASK_INPUT: per_prompt,
        **{name: per_prompt for name in outs},
    }
    return list(ins), list(outs), axes
