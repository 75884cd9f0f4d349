"""The model contract: everything a runtime needs to drive exported graphs without guessing.

One :class:`ModelContract` is produced by ``samdeploy export`` and stored twice: as JSON under the
``samdeploy.contract`` key of every ONNX file's ``metadata_props`` and inside ``manifest.json``.
Every later stage (check, calibrate, build, runtime) reads it back with :func:`read_onnx_contract`
and refuses files whose contracts disagree (:func:`ensure_same_model`).

Graph I/O (all float32 unless noted); names and per-image shapes are fields of the contract
(``encoder.outputs``, ``decoder.embedding_inputs``), shown here with their SAM-1 values::

    encoder.onnx
      in   image             [B, 3, S, S]    RGB in 0..255, resized + padded (see Preprocess);
                                             normalisation happens *inside* the graph
      out  image_embeddings  [B, 256, 64, 64]

    decoder.onnx   (one image, B prompts, N points per prompt)
      in   image_embeddings  [1, 256, 64, 64]   broadcast over the prompt batch inside the graph
           point_coords      [B, N, 2]          (x, y) pixels in the prompt frame (prompts.frame_size)
           point_labels      [B, N]             -1 pad, 0 negative, 1 positive, 2/3 box corners
                                                (-2 "zero token" where prompts.labels has it)
           mask_input        [B, 1, 256, 256]   previous low-res logits (zeros if unused)
           has_mask_input    [B]                1.0 to use mask_input, else 0.0
      out  iou_predictions   [B, 4]             all mask tokens; runtime picks 0 or 1..3
           low_res_masks     [B, 4, 256, 256]   logits; runtime upsamples/crops/thresholds

Version 2 (this version) adds what the SAM-1 assumption hid; version-1 files load with defaults
that reproduce version-1 behaviour exactly:

- ``prompts.frame_size``: the prompt-coordinate and mask frame is separate from the encoder input
  (EfficientViT-SAM L: encoder 512, prompts/masks 1024). ``None`` (v1) = the encoder input size.
- ``preprocess.resize``: ``"longest_side"`` (scale + pad bottom/right) or ``"stretch"`` (to S x S);
  ``preprocess.pixel_scale``: the range mean/std refer to (255 for SAM, 1 for 0..1 ImageNet stats).
- ``encoder.outputs``: the named encoder outputs with per-image shapes; ``decoder.embedding_inputs``
  names the ones the decoder consumes (same names on both graphs).
- ``decoder.score``: how a mask's score is made: ``"iou_head"`` (the decoder's IoU prediction),
  ``"stability"`` (SAM's stability score of the low-res logits, EdgeSAM's default) or ``"sigmoid"``.
- ``decoder.hq_token``: HQ-SAM's extra mask channel (the runtime combines it as HQ-SAM does).
- SAM2: ``prompts.box_first`` / ``pad_point_always``, ``decoder.single_mask = "dynamic_stability"``,
  ``decoder.postprocess = "direct"``, ``decoder.low_res_clamp``, an ``object_score_logits`` extra output.
- ``decoder.mask_input``: whether the decoder uses ``mask_input`` at all; ``decoder.accepts_no_points``:
  the decoder graph runs with N = 0 points (a prompt of only a mask, or none, exactly as
  SamPredictor encodes it); v1 graphs need N >= 1.
- EfficientSAM (yformer): ``prompts.max_decoder_points`` (the decoder reads a fixed number of points:
  the graph pads/truncates, the runtime refuses prompts that would be truncated) and
  ``decoder.mask_interpolation`` (its low-res logits are resized to the image bicubic).
- SAM2 video (``samdeploy export --video``): the optional ``video`` section (:class:`Video`; None when
  absent, and omitted from the JSON then, so image-only contracts serialise as before): the three video
  graphs + constants file, their I/O names (``MEMORY_ATTENTION_INPUTS`` ... below) and SAM2VideoPredictor's
  settings.

This module is dependency-free (stdlib + optional onnx) so the device runtime can import it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ContractError

CONTRACT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
METADATA_KEY = "samdeploy.contract"

# Canonical graph I/O names (the SAM-1 layout every current family shares).
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")
# The same names by meaning: code outside this module spells graph I/O only through these.
(DECODER_EMBEDDINGS, DECODER_POINT_COORDS, DECODER_POINT_LABELS,
 DECODER_MASK_INPUT, DECODER_HAS_MASK_INPUT) = DECODER_INPUTS
DECODER_IOU, DECODER_LOW_RES_MASKS = DECODER_OUTPUTS


# Graph names of the families with more than one encoder output / an extra decoder output.
HQ_FEATURES = "hq_features"  # HQ-SAM's per-image HQ features F_hq [32, 256, 256], computed by the encoder graph
HQ_INTERM = "interm_embeddings"  # what HQ exports before hq_features returned instead (early ViT feature,
#                                  channels last; the decoder computed F_hq): such files still load and run
SAM2_ENCODER_OUTPUTS = (ENCODER_OUTPUT, "high_res_feats_0", "high_res_feats_1")
SAM2_OBJECT_SCORE = "object_score_logits"  # [B, 1]; an object is absent where it is <= 0

# SAM2 video graphs (`samdeploy export --video`; ModelContract.video). h = w = S/16, T = h*w tokens per
# frame in raster order (index y*w + x); B objects, R memory frames, P object pointers, N points.
#   memory_attention.onnx: image_embeddings [1,256,h,w], memory [B,R,T,64], memory_time [B,R,7],
#       memory_valid [B,R], obj_ptrs [B,P,256], obj_ptr_tpos [B,P], obj_ptr_valid [B,P]
#       -> conditioned_embeddings [B,256,h,w]
#   memory_encoder.onnx: image_embeddings [1,256,h,w], mask_logits [B,1,4h,4w], object_score_logits [B,1],
#       binarize [B] -> maskmem_features [B,T,64]
#   track_decoder.onnx: conditioned_embeddings [B,256,h,w], high_res_feats_0 [1,32,4h,4w],
#       high_res_feats_1 [1,64,2h,2w], point_coords [B,N,2], point_labels [B,N], mask_input [B,1,4h,4w],
#       has_mask_input [B] -> iou_predictions [B,4], low_res_masks [B,4,4h,4w], object_score_logits [B,1],
#       obj_ptrs [B,4,256]
VIDEO_MEMORY = "memory"
VIDEO_MEMORY_TIME = "memory_time"
VIDEO_MEMORY_VALID = "memory_valid"
VIDEO_OBJ_PTRS = "obj_ptrs"
VIDEO_OBJ_PTR_TPOS = "obj_ptr_tpos"
VIDEO_OBJ_PTR_VALID = "obj_ptr_valid"
VIDEO_CONDITIONED = "conditioned_embeddings"
VIDEO_MASK_LOGITS = "mask_logits"
VIDEO_BINARIZE = "binarize"
VIDEO_MASKMEM = "maskmem_features"
MEMORY_ATTENTION_INPUTS = (ENCODER_OUTPUT, VIDEO_MEMORY, VIDEO_MEMORY_TIME, VIDEO_MEMORY_VALID, VIDEO_OBJ_PTRS,
                           VIDEO_OBJ_PTR_TPOS, VIDEO_OBJ_PTR_VALID)
MEMORY_ATTENTION_OUTPUTS = (VIDEO_CONDITIONED,)
MEMORY_ENCODER_INPUTS = (ENCODER_OUTPUT, VIDEO_MASK_LOGITS, SAM2_OBJECT_SCORE, VIDEO_BINARIZE)
MEMORY_ENCODER_OUTPUTS = (VIDEO_MASKMEM,)
TRACK_DECODER_INPUTS = (VIDEO_CONDITIONED, *SAM2_ENCODER_OUTPUTS[1:], *DECODER_INPUTS[1:])
TRACK_DECODER_OUTPUTS = (*DECODER_OUTPUTS, SAM2_OBJECT_SCORE, VIDEO_OBJ_PTRS)
VIDEO_GRAPHS = ("memory_attention", "memory_encoder", "track_decoder")  # graph roles (= manifest "files" keys)
VIDEO_CONSTANTS = "constants"  # manifest "files" key of video_constants.npz

PROMPT_INPUTS = DECODER_INPUTS[1:]  # what every decoder takes after the encoder's outputs


def decoder_feeds(image_embeddings: Any, point_coords: Any, point_labels: Any, mask_input: Any,
                  has_mask_input: Any) -> dict[str, Any]:
    """The decoder graph's feed dict, keyed by the contract's input names.

    ``image_embeddings`` is the one SAM-1 embedding, or a mapping ``{encoder output name: array}``
    for decoders that consume several encoder outputs (``decoder.embedding_inputs``)."""
    embeddings = dict(image_embeddings) if isinstance(image_embeddings, Mapping) else {DECODER_EMBEDDINGS: image_embeddings}
    return {**embeddings, **dict(zip(PROMPT_INPUTS, (point_coords, point_labels, mask_input, has_mask_input)))}


def decoder_results(outputs: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(iou_predictions, low_res_masks)`` out of a decoder run's named outputs."""
    return outputs[DECODER_IOU], outputs[DECODER_LOW_RES_MASKS]

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

POINT_LABELS = {"pad": -1, "negative": 0, "positive": 1, "box_top_left": 2, "box_bottom_right": 3}
# EdgeSAM's extra label: the point's token is all zeros (no positional encoding, no embedding).
ZERO_TOKEN_LABEL = -2
SCORE_KINDS = ("iou_head", "stability", "sigmoid")
RESIZE_MODES = ("longest_side", "stretch")


@dataclass(frozen=True)
class TensorSpec:
    """A named graph tensor and its shape for ONE image (the batch axis is not included)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Preprocess:
    """How an HxWx3 uint8 RGB image becomes the encoder input."""

    input_size: int = 1024  # the ENCODER input is input_size x input_size (nothing else; see Prompts.frame_size)
    # "longest_side": scale = input_size / max(H, W); new = int(old*scale + 0.5), pad bottom/right.
    # "stretch": resize to input_size x input_size ignoring the aspect ratio, no padding.
    resize: str = "longest_side"
    interpolation: str = "bilinear_antialias"  # PIL bilinear (what SamPredictor uses)
    channel_order: str = "RGB"
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN  # 0..255 scale
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    pixel_scale: float = 255.0  # mean/std are for inputs in 0..pixel_scale (the graph input is always 0..255)
    normalize_in_graph: bool = True  # encoder.onnx computes (x - mean) / std itself
    pad: str = "bottom_right"
    # Value written into the padded area, in the graph's *input* space. With normalisation in the
    # graph, padding with the mean makes the padded area exactly 0 after normalisation, which is what
    # SAM does (it pads after normalising).
    pad_value: tuple[float, float, float] = SAM_PIXEL_MEAN


@dataclass(frozen=True)
class Encoder:
    """What encoder.onnx returns (v2). Version-1 files: the single SAM-1 embedding."""

    outputs: tuple[TensorSpec, ...] = (TensorSpec(ENCODER_OUTPUT, (256, 64, 64)),)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


@dataclass(frozen=True)
class Prompts:
    """How prompts are encoded for decoder.onnx."""

    # Long side of the frame prompts are given in and masks are produced in (the original image is
    # mapped to it like the encoder input: longest side, same rounding). None = preprocess.input_size
    # (contract v1, where the two were the same number).
    frame_size: int | None = None
    coord_frame: str = "prompt_frame"  # pixel coords in that frame (after the longest-side resize, before padding)
    coord_offset_in_graph: float = 0.5  # the graph adds +0.5 (pixel centres) like SAM's prompt encoder
    labels: Mapping[str, int] = field(default_factory=lambda: dict(POINT_LABELS))
    # SAM appends a padding point (0, 0, label -1) to every prompt that has no box; the graph does not,
    # the runtime must.
    pad_point_when_no_box: bool = True
    box_as_corner_points: bool = True  # a box is 2 points (x0,y0 label 2), (x1,y1 label 3) after the clicks
    # ---- version 2 ----
    box_first: bool = False  # SAM2: the box corners come BEFORE the clicks
    pad_point_always: bool = False  # SAM2: the padding point is appended even after a box
    # EfficientSAM: the decoder reads exactly this many points per prompt (clicks + box corners; the
    # graph truncates longer prompts and pads shorter ones itself). None: any number.
    max_decoder_points: int | None = None

    @property
    def user_labels(self) -> tuple[int, ...]:
        """Labels a user may give a click: -1 ignore, 0 background, 1 foreground (+ -2 where defined)."""
        extra = (ZERO_TOKEN_LABEL,) if "zero_token" in self.labels else ()
        return extra + (-1, 0, 1)


@dataclass(frozen=True)
class Decoder:
    """Decoder output semantics."""

    num_mask_tokens: int = 4
    single_mask_token: int = 0
    multimask_tokens: tuple[int, ...] = (1, 2, 3)
    always_multimask: bool = False  # TinySAM's decoder always answers with the 3 multimask outputs
    low_res_size: int = 256
    embedding_shape: tuple[int, int, int] = (256, 64, 64)
    mask_threshold: float = 0.0  # logit threshold for binary masks
    stability_score_offset: float = 1.0
    # "single": decoder.onnx does everything per call. Later contract revisions may add a
    # prompt-independent "decoder_image" stage; runtimes must check this field.
    layout: str = "single"
    # ---- version 2 ----
    embedding_inputs: tuple[str, ...] = (ENCODER_OUTPUT,)  # decoder inputs fed from encoder outputs (same names)
    score: str = "iou_head"  # "iou_head" | "stability" | "sigmoid": how a mask's score is made
    mask_input: bool = True  # the decoder uses mask_input/has_mask_input
    accepts_no_points: bool = False  # the graph runs with N = 0 points (v2 exports; v1 graphs need N >= 1)
    extra_outputs: tuple[str, ...] = ()  # outputs beyond iou_predictions/low_res_masks (e.g. an object score)
    # HQ-SAM: low_res_masks channel of the HQ token. The answer is then ONE mask per prompt: the
    # single (0) or best multimask (1..3, by IoU) SAM logits plus the HQ logits, or the HQ logits
    # alone (the runtime's hq_token_only); iou_predictions keeps the 4 SAM tokens' IoUs.
    hq_token: int | None = None
    # Single-mask answer: "token" (single_mask_token) or "dynamic_stability" (SAM2's
    # apply_postprocessing: token 0 unless its stability -- area(logit > delta) / area(logit > -delta)
    # -- is below thresh, then the best multimask token by IoU).
    single_mask: str = "token"
    dynamic_stability_delta: float = 0.05
    dynamic_stability_thresh: float = 0.98
    # Mask post-processing: "crop_upscale" (SAM: upsample to the frame, crop the padding, resize to the
    # image) or "direct" (SAM2: resize the low-res logits straight to the image size).
    postprocess: str = "crop_upscale"
    low_res_clamp: float | None = None  # SAM2 clamps the returned low-res logits to +-32
    # Resize of the low-res logits to the image: "bilinear" (SAM, SAM2) or "bicubic" (EfficientSAM's
    # PyTorch model; F.interpolate(mode="bicubic", align_corners=False)).
    mask_interpolation: str = "bilinear"


@dataclass(frozen=True)
class Video:
    """SAM2 / SAM2.1 video tracking (``samdeploy export --video``): the three extra graphs, the constants
    file and the settings of SAM2VideoPredictor (the official config + ``build_sam2_video_predictor``'s
    overrides) a runtime needs. Graph I/O at the top of this module (``MEMORY_ATTENTION_INPUTS`` ...)."""

    memory_attention_file: str = "memory_attention.onnx"
    memory_encoder_file: str = "memory_encoder.onnx"
    track_decoder_file: str = "track_decoder.onnx"
    constants_file: str = "video_constants.npz"  # float32: no_mem_embed [256], no_obj_ptr [256],
    #                                               mask_downsample_weight [1,1,4,4], mask_downsample_bias [1]
    # graph I/O names (the same strings as the module constants)
    attn_image: str = ENCODER_OUTPUT
    attn_memory: str = VIDEO_MEMORY
    attn_memory_time: str = VIDEO_MEMORY_TIME
    attn_memory_valid: str = VIDEO_MEMORY_VALID
    attn_obj_ptrs: str = VIDEO_OBJ_PTRS
    attn_obj_ptr_tpos: str = VIDEO_OBJ_PTR_TPOS
    attn_obj_ptr_valid: str = VIDEO_OBJ_PTR_VALID
    attn_output: str = VIDEO_CONDITIONED
    menc_image: str = ENCODER_OUTPUT
    menc_mask: str = VIDEO_MASK_LOGITS
    menc_object_score: str = SAM2_OBJECT_SCORE
    menc_binarize: str = VIDEO_BINARIZE
    menc_output: str = VIDEO_MASKMEM
    track_conditioned: str = VIDEO_CONDITIONED
    track_feature_inputs: tuple[str, ...] = SAM2_ENCODER_OUTPUTS[1:]  # fed from the image encoder (batch 1)
    track_point_coords: str = DECODER_POINT_COORDS
    track_point_labels: str = DECODER_POINT_LABELS
    track_mask_input: str = DECODER_MASK_INPUT
    track_has_mask_input: str = DECODER_HAS_MASK_INPUT
    track_iou: str = DECODER_IOU
    track_masks: str = DECODER_LOW_RES_MASKS
    track_object_score: str = SAM2_OBJECT_SCORE
    track_obj_ptrs: str = VIDEO_OBJ_PTRS
    # geometry
    image_size: int = 1024  # S (= preprocess.input_size)
    tokens_per_frame: int = 4096  # T = (S/16)^2
    mem_dim: int = 64
    hidden_dim: int = 256
    # SAM2Base / SAM2VideoPredictor settings
    num_maskmem: int = 7  # 1 conditioning slot + the 6 previous frames; tpos index num_maskmem - t_pos - 1
    max_obj_ptrs_in_encoder: int = 16  # SAM2Base default (min(num_frames, this) pointers, t_diff_max = that - 1)
    memory_temporal_stride_for_eval: int = 1
    max_cond_frames_in_attn: int = -1  # every conditioning frame is attended
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True  # build_sam2_video_predictor's override (SAM2Base: False)
    add_tpos_enc_to_obj_ptrs: bool = True  # SAM2.1 True, SAM2.0 False (the graph then gives pointers no position)
    proj_tpos_enc_in_obj_ptrs: bool = True  # SAM2.1 True, SAM2.0 False (inside the graph)
    use_signed_tpos_enc_to_obj_ptrs: bool = True  # SAM2.1 True, SAM2.0 False (unused there)
    only_obj_ptrs_in_the_past_for_eval: bool = True
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    fixed_no_obj_ptr: bool = True  # applied inside track_decoder (obj_ptrs)
    directly_add_no_mem_embed: bool = True  # conditioning frames decode on image_embeddings as they are
    use_mask_input_as_output_without_sam: bool = True
    non_overlap_masks_for_mem_enc: bool = False
    no_obj_score: float = -1024.0  # NO_OBJ_SCORE: low-res logits of an absent object
    mask_input_clamp: float = 32.0  # SAM2VideoPredictor clamps fed-back low-res logits to +-32
    fill_hole_area: int = 8  # build_sam2_video_predictor's override
    memory_storage: str = "bfloat16"  # maskmem_features are stored as bfloat16 by SAM2VideoPredictor
    mask_out_scale: float = 20.0  # _use_mask_as_output: logits = mask * 20 - 10
    mask_out_bias: float = -10.0

    def graph_inputs(self, role: str) -> tuple[str, ...]:
        return self.graph_io(role)[0]

    def graph_outputs(self, role: str) -> tuple[str, ...]:
        return self.graph_io(role)[1]

    def graph_io(self, role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(input names, output names) of video graph ``role`` ("memory_attention" | "memory_encoder" |
        "track_decoder")."""
        if role == "memory_attention":
            return ((self.attn_image, self.attn_memory, self.attn_memory_time, self.attn_memory_valid, self.attn_obj_ptrs,
                     self.attn_obj_ptr_tpos, self.attn_obj_ptr_valid), (self.attn_output,))
        if role == "memory_encoder":
            return (self.menc_image, self.menc_mask, self.menc_object_score, self.menc_binarize), (self.menc_output,)
        if role == "track_decoder":
            return ((self.track_conditioned, *self.track_feature_inputs, self.track_point_coords, self.track_point_labels,
                     self.track_mask_input, self.track_has_mask_input),
                    (self.track_iou, self.track_masks, self.track_object_score, self.track_obj_ptrs))
        raise ValueError(f"video graph role must be one of {VIDEO_GRAPHS}, got {role!r}")

    @property
    def files(self) -> dict[str, str]:
        """manifest "files" key -> file name, for the three graphs and the constants."""
        return {"memory_attention": self.memory_attention_file, "memory_encoder": self.memory_encoder_file,
                "track_decoder": self.track_decoder_file, VIDEO_CONSTANTS: self.constants_file}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Video":
        d = dict(d)
        if isinstance(d.get("track_feature_inputs"), list):
            d["track_feature_inputs"] = tuple(d["track_feature_inputs"])
        return cls(**d)


@dataclass(frozen=True)
class ModelContract:
    family: str  # "sam" | "mobile_sam" | "tinysam" | "slimsam" | ...
    variant: str  # registry variant name, e.g. "vit_b", "vit_t", "slimsam_77"
    weights_sha256: str  # SHA-256 of the checkpoint file ("random:<variant>:seed=<n>" for random weights)
    preprocess: Preprocess = field(default_factory=Preprocess)
    prompts: Prompts = field(default_factory=Prompts)
    decoder: Decoder = field(default_factory=Decoder)
    encoder: Encoder = field(default_factory=Encoder)
    licence: str = ""  # the weights' licence as the registry records it (e.g. EdgeSAM: non-commercial)
    contract_version: int = CONTRACT_VERSION
    opset: int = 17
    samdeploy_version: str = ""
    # Free-form provenance (torch/onnx versions, export options). Not used for compatibility.
    provenance: Mapping[str, Any] = field(default_factory=dict)
    # SAM2 video graphs (`samdeploy export --video`); None for image-only exports (and every older file).
    video: Video | None = None

    # ---- identity ---------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """What must match between an encoder and a decoder (and an engine and its ONNX)."""
        return f"{self.family}/{self.variant}@{self.weights_sha256}"

    # ---- graph I/O names (every stage reads them from here) -----------------------------------------
    @property
    def encoder_io(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (ENCODER_INPUT,), self.encoder.output_names

    @property
    def decoder_io(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.decoder.embedding_inputs) + PROMPT_INPUTS, DECODER_OUTPUTS + tuple(self.decoder.extra_outputs)

    def graph_io(self, role: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(input names, output names) of the ``role`` graph ("encoder" | "decoder")."""
        if role == "encoder":
            return self.encoder_io
        if role == "decoder":
            return self.decoder_io
        if role in VIDEO_GRAPHS and self.video is not None:
            return self.video.graph_io(role)
        raise ValueError(f"graph role must be 'encoder' or 'decoder' (or a video graph of a --video export), got {role!r}")

    def embedding_shape(self, name: str) -> tuple[int, ...]:
        """Per-image shape of encoder output ``name``."""
        for o in self.encoder.outputs:
            if o.name == name:
                return tuple(o.shape)
        raise ContractError(f"the contract has no encoder output {name!r}", hint="re-export the model")

    @property
    def frame_size(self) -> int:
        """Long side of the prompt/mask frame (the encoder input size for version-1 contracts)."""
        return int(self.prompts.frame_size if self.prompts.frame_size is not None else self.preprocess.input_size)

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = _to_jsonable(dataclasses.asdict(self))
        if d.get("video") is None:  # image-only contracts serialise exactly as before the video section
            d.pop("video", None)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelContract":
        try:
            version = int(d.get("contract_version", 1))
            if version not in SUPPORTED_VERSIONS and version > CONTRACT_VERSION:
                raise ContractError(
                    f"contract version {version} is newer than this samdeploy understands ({CONTRACT_VERSION})",
                    hint="upgrade samdeploy on this machine, or re-export with the version installed here",
                )
            pre = Preprocess(**_tuples(d.get("preprocess", {})))
            prm = dict(d.get("prompts", {}))
            prompts = Prompts(**_tuples(prm))
            if version not in SUPPORTED_VERSIONS:
                raise ContractError(f"unknown contract version {version}", hint="re-export the model with `samdeploy export`")
            dec = Decoder(**_tuples(d.get("decoder", {})))
            enc_d = d.get("encoder")
            enc = Encoder() if enc_d is None else Encoder(
                outputs=tuple(TensorSpec(str(o["name"]), tuple(int(x) for x in o["shape"])) for o in enc_d["outputs"])
            )
            return cls(
                family=d["family"],
                variant=d["variant"],
                weights_sha256=d["weights_sha256"],
                preprocess=pre,
                prompts=prompts,
                decoder=dec,
                encoder=enc,
                licence=str(d.get("licence", "")),
                contract_version=version,
                opset=int(d.get("opset", 17)),
                samdeploy_version=str(d.get("samdeploy_version", "")),
                provenance=dict(d.get("provenance", {})),
                video=None if d.get("video") is None else Video.from_dict(d["video"]),
            )
        except ContractError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(
                f"malformed samdeploy contract ({type(exc).__name__}: {exc})",
                hint="re-export the model with `samdeploy export`",
            ) from None

    @classmethod
    def from_json(cls, text: str) -> "ModelContract":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ContractError(f"contract metadata is not valid JSON: {exc}") from None


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


_TUPLE_FIELDS = {"pixel_mean", "pixel_std", "pad_value", "multimask_tokens", "embedding_shape", "embedding_inputs",
                 "extra_outputs"}


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v) for k, v in d.items()}


# ---- ONNX metadata ---------------------------------------------------------------------------------
def metadata_props(contract: ModelContract, graph: str) -> dict[str, str]:
    """Key/value pairs written into an ONNX file's metadata_props.

    The full contract is one JSON value; a few fields are repeated as plain keys for humans and
    for tools (Netron, onnx.helper) that show metadata."""
    return {
        METADATA_KEY: contract.to_json(),
        "samdeploy.graph": graph,
        "samdeploy.family": contract.family,
        "samdeploy.variant": contract.variant,
        "samdeploy.weights_sha256": contract.weights_sha256,
        "samdeploy.contract_version": str(contract.contract_version),
        "samdeploy.version": contract.samdeploy_version,
    }


def read_onnx_contract(path: str) -> tuple[ModelContract, str]:
    """Return ``(contract, graph_role)`` stored in an ONNX file (weights are not loaded)."""
    import os

    if not os.path.exists(path):
        from .errors import MissingFileError

        raise MissingFileError(f"ONNX file not found: {path}", hint="run `samdeploy export` first or fix the path")
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # damaged protobuf
        raise ContractError(
            f"{path} is not a readable ONNX file ({type(exc).__name__})",
            hint="re-export it with `samdeploy export`",
        ) from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ContractError(
            f"{path} has no samdeploy contract in its metadata",
            hint="only graphs written by `samdeploy export` (or calibrate) can be used; re-export the model",
        )
    return ModelContract.from_json(props[METADATA_KEY]), props.get("samdeploy.graph", "")


def ensure_same_model(a: ModelContract, b: ModelContract, what_a: str = "encoder", what_b: str = "decoder") -> None:
    """Refuse to pair graphs exported from different models/weights."""
    if a.model_id != b.model_id:
        raise ContractError(
            f"{what_a} and {what_b} come from different models: {a.model_id} vs {b.model_id}",
            hint="use the encoder and decoder from the same `samdeploy export` output directory",
        )
