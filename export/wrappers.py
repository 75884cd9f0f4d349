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


# ---- SAM2 video graphs (`samdeploy export --video`) ----------------------------------------------------
OBJECT_AXIS = "num_objects"
MEMORY_AXIS = "num_memories"
POINTER_AXIS = "num_pointers"


def video_graph(sam: nn.Module, role: str) -> nn.Module:
    """The traced module of video graph ``role`` (``models.sam2_video``)."""
    from ..models import sam2_video

    cls = {"memory_attention": sam2_video.MemoryAttentionGraph, "memory_encoder": sam2_video.MemoryEncoderGraph,
           "track_decoder": sam2_video.TrackDecoderGraph}[role]
    return cls(sam)


def video_example(sam: nn.Module, role: str) -> tuple[Tensor, ...]:
    from ..models.sam2_video import video_examples

    return video_examples(sam, role)


def video_io(contract, role: str) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    """Names (from ``contract.video``) and dynamic axes of video graph ``role``: objects B everywhere
    except the image encoder's outputs (batch 1), memories R, pointers P, points N."""
    v = contract.video
    ins, outs = v.graph_io(role)
    obj = {0: OBJECT_AXIS}
    if role == "memory_attention":
        mem, ptr = {0: OBJECT_AXIS, 1: MEMORY_AXIS}, {0: OBJECT_AXIS, 1: POINTER_AXIS}
        axes = {v.attn_memory: mem, v.attn_memory_time: mem, v.attn_memory_valid: mem, v.attn_obj_ptrs: ptr,
                v.attn_obj_ptr_tpos: ptr, v.attn_obj_ptr_valid: ptr, v.attn_output: obj}
    elif role == "memory_encoder":
        axes = {v.menc_mask: obj, v.menc_object_score: obj, v.menc_binarize: obj, v.menc_output: obj}
    else:
        per_point = {0: OBJECT_AXIS, 1: POINT_AXIS}
        axes = {v.track_conditioned: obj, v.track_point_coords: per_point, v.track_point_labels: per_point,
                v.track_mask_input: obj, v.track_has_mask_input: obj, **{name: obj for name in outs}}
    return list(ins), list(outs), axes


def video_constants(sam: nn.Module) -> dict:
    """video_constants.npz's arrays (float32 NumPy)."""
    from ..models.sam2_video import video_constants as constants

    return constants(sam)
