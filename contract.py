"""The model contract: everything a runtime needs to drive exported graphs without guessing.

One :class:`ModelContract` is produced by ``samdeploy export`` and stored twice: as JSON under the
``samdeploy.contract`` key of every ONNX file's ``metadata_props`` and inside ``manifest.json``.
Every later stage (check, calibrate, build, runtime) reads it back with :func:`read_onnx_contract`
and refuses files whose contracts disagree (:func:`ensure_same_model`).

Graph I/O of contract version 1 (all float32 unless noted)::

    encoder.onnx
      in   image             [B, 3, S, S]    RGB in 0..255, resized + padded (see Preprocess);
                                             normalisation happens *inside* the graph
      out  image_embeddings  [B, 256, 64, 64]

    decoder.onnx   (one image, B prompts, N points per prompt)
      in   image_embeddings  [1, 256, 64, 64]   broadcast over the prompt batch inside the graph
           point_coords      [B, N, 2]          (x, y) pixels in the encoder-input frame
           point_labels      [B, N]             -1 pad, 0 negative, 1 positive, 2/3 box corners
           mask_input        [B, 1, 256, 256]   previous low-res logits (zeros if unused)
           has_mask_input    [B]                1.0 to use mask_input, else 0.0
      out  iou_predictions   [B, 4]             all mask tokens; runtime picks 0 or 1..3
           low_res_masks     [B, 4, 256, 256]   logits; runtime upsamples/crops/thresholds

This module is dependency-free (stdlib + optional onnx) so the device runtime can import it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ContractError

CONTRACT_VERSION = 1
METADATA_KEY = "samdeploy.contract"

# Canonical graph I/O names (contract version 1).
ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")
# The same names by meaning: code outside this module spells graph I/O only through these.
(DECODER_EMBEDDINGS, DECODER_POINT_COORDS, DECODER_POINT_LABELS,
 DECODER_MASK_INPUT, DECODER_HAS_MASK_INPUT) = DECODER_INPUTS
DECODER_IOU, DECODER_LOW_RES_MASKS = DECODER_OUTPUTS


def decoder_feeds(image_embeddings: Any, point_coords: Any, point_labels: Any, mask_input: Any,
                  has_mask_input: Any) -> dict[str, Any]:
    """The decoder graph's feed dict, keyed by the contract's input names."""
    return dict(zip(DECODER_INPUTS, (image_embeddings, point_coords, point_labels, mask_input, has_mask_input)))


def decoder_results(outputs: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(iou_predictions, low_res_masks)`` out of a decoder run's named outputs."""
    return outputs[DECODER_IOU], outputs[DECODER_LOW_RES_MASKS]

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

POINT_LABELS = {"pad": -1, "negative": 0, "positive": 1, "box_top_left": 2, "box_bottom_right": 3}


@dataclass(frozen=True)
class Preprocess:
    """How an HxWx3 uint8 RGB image becomes the encoder input."""

    input_size: int = 1024  # encoder input is input_size x input_size
    resize: str = "longest_side"  # "longest_side": scale = input_size / max(H, W); new = int(old*scale + 0.5)
    interpolation: str = "bilinear_antialias"  # PIL bilinear (what SamPredictor uses)
    channel_order: str = "RGB"
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN  # 0..255 scale
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    normalize_in_graph: bool = True  # encoder.onnx computes (x - mean) / std itself
    pad: str = "bottom_right"
    # Value written into the padded area, in the graph's *input* space. With normalisation in the
    # graph, padding with the mean makes the padded area exactly 0 after normalisation, which is what
    # SAM does (it pads after normalising).
    pad_value: tuple[float, float, float] = SAM_PIXEL_MEAN


@dataclass(frozen=True)
class Prompts:
    """How prompts are encoded for decoder.onnx."""

    coord_frame: str = "encoder_input"  # pixel coords after the longest-side resize (before padding)
    coord_offset_in_graph: float = 0.5  # the graph adds +0.5 (pixel centres) like SAM's prompt encoder
    labels: Mapping[str, int] = field(default_factory=lambda: dict(POINT_LABELS))
    # SAM appends a padding point (0, 0, label -1) to every prompt that has no box; the graph does not,
    # the runtime must.
    pad_point_when_no_box: bool = True
    box_as_corner_points: bool = True  # a box is 2 points (x0,y0 label 2), (x1,y1 label 3) after the clicks


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


@dataclass(frozen=True)
class ModelContract:
    family: str  # "sam" | "mobile_sam" | "tinysam" | "slimsam" | ...
    variant: str  # registry variant name, e.g. "vit_b", "vit_t", "slimsam_77"
    weights_sha256: str  # SHA-256 of the checkpoint file ("random:<variant>:seed=<n>" for random weights)
    preprocess: Preprocess = field(default_factory=Preprocess)
    prompts: Prompts = field(default_factory=Prompts)
    decoder: Decoder = field(default_factory=Decoder)
    contract_version: int = CONTRACT_VERSION
    opset: int = 17
    samdeploy_version: str = ""
    # Free-form provenance (torch/onnx versions, export options). Not used for compatibility.
    provenance: Mapping[str, Any] = field(default_factory=dict)

    # ---- identity ---------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """What must match between an encoder and a decoder (and an engine and its ONNX)."""
        return f"{self.family}/{self.variant}@{self.weights_sha256}"

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelContract":
        try:
            version = int(d.get("contract_version", -1))
            if version > CONTRACT_VERSION:
                raise ContractError(
                    f"contract version {version} is newer than this samdeploy understands ({CONTRACT_VERSION})",
                    hint="upgrade samdeploy on this machine, or re-export with the version installed here",
                )
            pre = Preprocess(**_tuples(d.get("preprocess", {})))
            prm = dict(d.get("prompts", {}))
            prompts = Prompts(**_tuples(prm))
            dec = Decoder(**_tuples(d.get("decoder", {})))
            return cls(
                family=d["family"],
                variant=d["variant"],
                weights_sha256=d["weights_sha256"],
                preprocess=pre,
                prompts=prompts,
                decoder=dec,
                contract_version=version,
                opset=int(d.get("opset", 17)),
                samdeploy_version=str(d.get("samdeploy_version", "")),
                provenance=dict(d.get("provenance", {})),
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


_TUPLE_FIELDS = {"pixel_mean", "pixel_std", "pad_value", "multimask_tokens", "embedding_shape"}


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
