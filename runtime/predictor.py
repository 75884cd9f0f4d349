"""``Predictor``: SamPredictor semantics on exported graphs, with no torch and no knowledge of the backend.

    from samdeploy.runtime import Predictor
    p = Predictor("out/mobile_sam")                 # or Predictor(encoder=..., decoder=...), backend="tensorrt"
    p.set_image(rgb_uint8)                          # HxWx3 RGB (image_format="BGR" for OpenCV frames)
    masks, scores, logits = p.predict(point_coords=[[500, 375]], point_labels=[1])
    masks, scores, logits = p.predict_batch(boxes=[[10, 10, 200, 200], [300, 50, 600, 400]],
                                            multimask_output=False)   # [K, 1, H, W]

Shapes follow ``segment_anything.SamPredictor``: ``predict`` returns masks ``[C, H, W]`` bool,
scores ``[C]`` and low-res logits ``[C, 256, 256]`` with C = 3 (multimask) or 1; ``predict_batch``
returns the same with a leading prompt axis K, decoding all K prompts in chunked decoder calls.

Lower-level building blocks (used by the mask generator and streaming):

* :meth:`Predictor.decode` -- prompts already in the prompt frame -> raw decoder outputs
  (all mask tokens), chunked to ``max_batch``;
* :meth:`Predictor.select` -- pick the single/multimask tokens and score them (contract ``Decoder``:
  the IoU head, or the stability score of the low-res logits);
* :meth:`Predictor.postprocess` -- low-res logits -> masks at the original size
  (``samdeploy.runtime.transforms.upscale_masks``).
"""

from __future__ import annotations

import math
import numbers
import os
import time
from typing import Any, Optional, Sequence

import numpy as np

from ..contract import ENCODER_INPUT, RESIZE_MODES, SCORE_KINDS, ModelContract, decoder_feeds, decoder_results
from ..errors import ContractError, InputError, NumericalError, PredictorStateError
from ..images import to_rgb_uint8
from .backends import GraphPair, load_model
from .prompts import PromptLimits, check_boxes, check_decoder_points, check_mask_input, check_points, pack_for
from .amg_utils import stability_score
from .transforms import apply_boxes, apply_coords, input_shape, preprocess_image, resize_masks_direct, upscale_masks

IMAGE_FORMATS = ("RGB", "BGR")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _positive_int(name: str, v: Any, err=InputError) -> int:
    if not _is_int(v) or int(v) < 1:
        raise err(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def validate_contract(contract: Any) -> None:
    """Check the contract fields the Predictor relies on; a tampered contract raises ContractError."""
    hint = "the model's contract metadata is damaged or hand-edited; re-export the model with `samdeploy export`"
    try:
        pre, dec = contract.preprocess, contract.decoder
        fields = {
            "preprocess.input_size": pre.input_size,
            "frame_size": contract.frame_size,
            "decoder.num_mask_tokens": dec.num_mask_tokens,
            "decoder.low_res_size": dec.low_res_size,
        }
        for name, v in fields.items():
            if not _is_int(v) or int(v) < 1:
                raise ContractError(f"contract field {name} must be a positive integer, got {v!r}", hint=hint)
        t = int(dec.num_mask_tokens)
        tokens = dec.multimask_tokens
        if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__len__") or len(tokens) == 0 or not all(
            _is_int(i) and 0 <= int(i) < t for i in tokens
        ):
            raise ContractError(
                f"contract field decoder.multimask_tokens must be token indices in [0, {t}), got {tokens!r}", hint=hint
            )
        st = dec.single_mask_token
        if not _is_int(st) or not 0 <= int(st) < t:
            raise ContractError(f"contract field decoder.single_mask_token must be in [0, {t}), got {st!r}", hint=hint)
        es = dec.embedding_shape
        if isinstance(es, (str, bytes)) or not hasattr(es, "__len__") or len(es) != 3 or not all(
            _is_int(i) and int(i) >= 1 for i in es
        ):
            raise ContractError(f"contract field decoder.embedding_shape must be 3 positive integers, got {es!r}", hint=hint)
        thr = dec.mask_threshold
        if isinstance(thr, bool) or not isinstance(thr, numbers.Real) or not math.isfinite(float(thr)):
            raise ContractError(f"contract field decoder.mask_threshold must be a finite number, got {thr!r}", hint=hint)
        if not isinstance(dec.always_multimask, (bool, np.bool_)):
            raise ContractError(f"contract field decoder.always_multimask must be a bool, got {dec.always_multimask!r}", hint=hint)
        if dec.score not in SCORE_KINDS:
            raise ContractError(f"contract field decoder.score must be one of {SCORE_KINDS}, got {dec.score!r}", hint=hint)
        if dec.single_mask not in ("token", "dynamic_stability") or dec.postprocess not in ("crop_upscale", "direct"):
            raise ContractError(
                f"contract fields decoder.single_mask={dec.single_mask!r} / decoder.postprocess={dec.postprocess!r} "
                "are not known to this runtime", hint=hint,
            )
        if dec.mask_interpolation not in ("bilinear", "bicubic") or (
            dec.mask_interpolation != "bilinear" and dec.postprocess != "direct"
        ):
            raise ContractError(
                f"contract field decoder.mask_interpolation={dec.mask_interpolation!r} is not known to this runtime "
                f"with decoder.postprocess={dec.postprocess!r}", hint=hint,
            )
        mdp = contract.prompts.max_decoder_points
        if mdp is not None and (not _is_int(mdp) or int(mdp) < 1):
            raise ContractError(f"contract field prompts.max_decoder_points must be None or a positive integer, got {mdp!r}",
                                hint=hint)
        if pre.resize not in RESIZE_MODES:
            raise ContractError(f"contract field preprocess.resize must be one of {RESIZE_MODES}, got {pre.resize!r}", hint=hint)
        outs = contract.encoder.outputs
        names = [o.name for o in outs]
        missing = [n for n in dec.embedding_inputs if n not in names]
        if not outs or not dec.embedding_inputs or missing:
            raise ContractError(
                f"the decoder consumes encoder outputs {list(dec.embedding_inputs)} but the encoder produces {names}",
                hint=hint,
            )
        if tuple(outs[0].shape) != tuple(es):
            raise ContractError(
                f"contract encoder output {outs[0].name} has shape {list(outs[0].shape)} but the decoder expects "
                f"{list(es)}", hint=hint,
            )
    except AttributeError as exc:
        raise ContractError(f"the model contract lacks a field the runtime needs ({exc})", hint=hint) from None


def _dynamic_single_mask(iou: np.ndarray, low_res: np.ndarray, d: Any) -> tuple[np.ndarray, np.ndarray]:
    """SAM2's single-mask answer (``build_sam2(apply_postprocessing=True)``): the single-mask token
    unless its stability area(logit > delta) / area(logit > -delta) (1 when both are empty) is below
    ``thresh``; then the best multimask token by IoU."""
    rows = np.arange(iou.shape[0])
    multi = np.asarray(d.multimask_tokens)
    best = multi[np.argmax(iou[:, multi], axis=1)]
    single = low_res[:, d.single_mask_token]
    delta = np.float32(d.dynamic_stability_delta)
    inter = np.count_nonzero(single > delta, axis=(-2, -1)).astype(np.float32)
    union = np.count_nonzero(single > -delta, axis=(-2, -1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        stability = np.where(union > 0, inter / union, np.float32(1.0))
    stable = stability >= d.dynamic_stability_thresh
    pick = np.where(stable, d.single_mask_token, best)
    return iou[rows, pick][:, None], low_res[rows, pick][:, None]


class Predictor:
    """Segment an image from point / box / mask prompts with an exported encoder + decoder.

    Args:
        model: a :class:`~samdeploy.runtime.backends.GraphPair` from ``load_model`` or a model
            directory. Alternatively give ``encoder=`` and ``decoder=`` file paths.
        backend: ``"onnxruntime"`` (default) or ``"tensorrt"``.
        providers: ONNX Runtime execution providers (``["cpu"]``, ``["cuda"]``, ``["tensorrt"]``).
        threads: intra-op threads for the backend (``None`` = backend default).
        max_batch: most prompts per decoder call (chunks larger batches; a TensorRT profile's own
            maximum is respected too). 16 by default: per-prompt CPU cost is flat beyond ~4-16
            prompts while decoder memory grows ~33 MB per prompt (SAM-1 decoder, ORT CPU).
        max_points: most clicks per prompt; max_prompts: most prompts per ``predict_batch`` call.
        fast_postprocess: fuse SAM's two mask resizes into one (about 25% faster post-processing;
            identical for smooth trained-model logits, see ``transforms.upscale_masks``).
        score: how masks are scored: ``None`` = the contract's ``decoder.score`` (the family's own
            default: the IoU head for SAM, MobileSAM, ...; the stability score for EdgeSAM),
            ``"iou_head"``, ``"stability"`` (SAM's stability score of the low-res logits, offset
            ``decoder.stability_score_offset``) or ``"sigmoid"`` (of the IoU head).
        hq_token_only: HQ-SAM models (contract ``decoder.hq_token``) answer ONE mask per prompt:
            the SAM token's logits plus the HQ token's (default), or the HQ token's alone (``True``),
            as HQ-SAM's own predictor does.
        allow_outside_points: ``False`` (default): point and box coordinates must lie in the original
            image frame, ``x in [0, W]``, ``y in [0, H]`` (closed edges), else :class:`InputError`.
            ``True``: accept coordinates outside the image as SamPredictor does (still bounded to
            ``prompts.OUTSIDE_MARGIN`` image sizes around the frame, so they stay finite in fp16/fp32).
        backend_options: passed to the backend's ``open_graph`` (unknown names raise InputError).

    All prompt checks (shapes, dtypes, finiteness in float32, frame bounds, labels in (-1, 0, 1) or the
    family's labels, counts) run before any encoder/decoder work. ``predict()`` with no prompt or only
    ``mask_input`` decodes no sparse point and empty ``(0, 2)`` points the padding point
    ``(0, 0, -1)``, both exactly like SamPredictor (decoders that cannot take N = 0 points, i.e.
    contract-v1 exports and engines built with a minimum of 1 point, get the padding point for
    both); ``predict_batch`` with K = 0 prompts returns empty arrays. Non-finite backend outputs raise
    :class:`NumericalError` instead of being returned.
    """

    def __init__(
        self,
        model: GraphPair | str | os.PathLike | None = None,
        *,
        encoder: str | os.PathLike | None = None,
        decoder: str | os.PathLike | None = None,
        backend: str = "onnxruntime",
        providers: Optional[Sequence[str] | str] = None,
        threads: Optional[int] = None,
        max_batch: int = 16,
        max_points: int = 64,
        max_prompts: int = 4096,
        fast_postprocess: bool = False,
        allow_outside_points: bool = False,
        score: Optional[str] = None,
        hq_token_only: bool = False,
        **backend_options: Any,
    ) -> None:
        if score is not None and score not in SCORE_KINDS:
            raise InputError(f"score must be None or one of {', '.join(SCORE_KINDS)}, got {score!r}")
        for name, v in (("max_batch", max_batch), ("max_points", max_points), ("max_prompts", max_prompts)):
            _positive_int(name, v)
        if threads is not None and (not _is_int(threads) or int(threads) < 0):
            raise InputError(f"threads must be None or an integer >= 0 (0 = backend default), got {threads!r}")
        if providers is not None and not isinstance(providers, str) and not (
            isinstance(providers, (list, tuple)) and all(isinstance(p, str) for p in providers)
        ):
            raise InputError(
                f"providers must be a string or a list of strings, got {providers!r}",
                hint="e.g. providers=['cpu'] or providers='cuda,cpu'",
            )
        if not isinstance(backend, str):
            raise InputError(f"backend must be a string such as 'onnxruntime' or 'tensorrt', got {backend!r}")
        for name, v in (("fast_postprocess", fast_postprocess), ("allow_outside_points", allow_outside_points),
                        ("hq_token_only", hq_token_only)):
            if not isinstance(v, (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {v!r}")
        if model is not None and not isinstance(model, (GraphPair, str, os.PathLike)):
            raise InputError(f"model must be a model directory or a GraphPair, got {type(model).__name__}")
        if isinstance(model, GraphPair):
            if backend_options:
                raise InputError(
                    f"unexpected keyword argument(s) {sorted(backend_options)} with an already loaded GraphPair",
                    hint="backend options go to load_model() when the model is already opened",
                )
            self.model = model
            validate_contract(model.contract)
        else:
            try:
                self.model = load_model(
                    model, encoder=encoder, decoder=decoder, backend=backend, providers=providers, threads=threads,
                    **backend_options,
                )
            except TypeError as exc:  # an unknown keyword reached the backend's open_graph
                raise InputError(
                    f"invalid Predictor/backend option(s) {sorted(backend_options)}: {exc}",
                    hint="see the Predictor docstring and the backend's open_graph() for accepted options",
                ) from None
            try:
                validate_contract(self.model.contract)
            except BaseException:
                self.model.close()
                raise
        self.contract: ModelContract = self.model.contract
        self.score = score if score is not None else self.contract.decoder.score
        self.hq_token_only = bool(hq_token_only)
        # N = 0 points reach the graph only if the export and the backend's profile allow it.
        self.no_points_ok = bool(self.contract.decoder.accepts_no_points) and not getattr(
            self.model.decoder, "min_points", 0
        )
        self.max_batch = int(max_batch)
        self.fast_postprocess = bool(fast_postprocess)
        self.allow_outside_points = bool(allow_outside_points)
        self.limits = PromptLimits(max_points=int(max_points), max_prompts=int(max_prompts))
        self.timings: dict[str, float] = {}  # milliseconds of the last set_image / predict call
        self.reset_image()
        import cv2  # noqa: F401  (imported now so the first predict() does not pay for it)

    # ---- image -----------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode an image (HxWx3 uint8; gray, RGBA, 16-bit and float-in-[0,1] are converted)."""
        fmt = str(image_format).upper()
        if fmt not in IMAGE_FORMATS:
            raise InputError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
            raise InputError(
                f"image has shape {arr.shape}, which looks channels-first (CxHxW)",
                hint="pass HxWxC, e.g. image.transpose(1, 2, 0)",
            )
        if fmt == "BGR" and arr.ndim == 3 and arr.shape[2] in (3, 4):
            arr = arr[..., [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]
        rgb = to_rgb_uint8(arr, "image")
        t0 = time.perf_counter()
        x, input_hw = preprocess_image(rgb, self.contract.preprocess)
        t1 = time.perf_counter()
        outputs = self.model.encoder.run({ENCODER_INPUT: x})
        t2 = time.perf_counter()
        feats = {n: np.asarray(outputs[n]) for n in self._feature_names}
        if not all(np.isfinite(f).all() for f in feats.values()):
            raise NumericalError(
                "the encoder backend returned NaN or inf for a valid image",
                hint="compare the backend with ONNX Runtime CPU on this image (`samdeploy check`); if only a "
                "reduced-precision build (fp16/int8) fails, rebuild it with more layers in fp32",
            )
        self._store_features(feats, rgb.shape[:2])
        self.timings = {"preprocess_ms": (t1 - t0) * 1e3, "encoder_ms": (t2 - t1) * 1e3}

    def set_image_embedding(self, embedding: Any, original_size: tuple[int, int]) -> None:
        """Reuse an embedding from :meth:`get_image_embedding` for an image of ``original_size`` (H, W).

        Models whose decoder consumes several encoder outputs take the mapping from
        :meth:`get_image_features` instead of the single array."""
        try:
            vals = [float(v) for v in original_size]
            if len(vals) != 2 or not all(math.isfinite(v) and v == int(v) for v in vals):
                raise ValueError
            H, W = (int(v) for v in vals)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"original_size must be (H, W) integers, got {original_size!r}") from None
        if H < 1 or W < 1:
            raise InputError(f"original_size must be positive, got {(H, W)}")
        given = dict(embedding) if isinstance(embedding, dict) else {self._feature_names[0]: embedding}
        if set(given) != set(self._feature_names):
            raise InputError(
                f"this model needs the encoder outputs {list(self._feature_names)}, got {sorted(given)}",
                hint="pass get_image_features() of the same model (a dict) for models with several outputs",
            )
        feats = {}
        for n, v in given.items():
            try:
                feats[n] = np.asarray(v, dtype=np.float32)
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"embedding {n!r} must be a float array, got {type(v).__name__}") from None
        self._store_features(feats, (H, W))

    def get_image_embedding(self) -> np.ndarray:
        """The cached embedding ``[1, 256, 64, 64]`` (read-only): the encoder's first output."""
        self._require_image()
        return self._embedding

    def get_image_features(self) -> dict[str, np.ndarray]:
        """Every cached encoder output the decoder consumes, by name (read-only arrays)."""
        self._require_image()
        return dict(self._features)

    @property
    def _feature_names(self) -> tuple[str, ...]:
        """Encoder outputs the decoder consumes; the primary embedding first."""
        first = self.contract.encoder.outputs[0].name
        rest = tuple(n for n in self.contract.decoder.embedding_inputs if n != first)
        return (first,) + rest

    def reset_image(self) -> None:
        self._last_extra: dict[str, np.ndarray] = {}
        self.extra_outputs: dict[str, np.ndarray] = {}
        self._embedding: Optional[np.ndarray] = None
        self._features: dict[str, np.ndarray] = {}
        self.original_size: Optional[tuple[int, int]] = None
        self.input_size: Optional[tuple[int, int]] = None

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    def _store_features(self, feats: dict[str, np.ndarray], original_hw: tuple[int, int]) -> None:
        stored = {}
        for name, emb in feats.items():
            want = (1, *self.contract.embedding_shape(name))
            if emb.ndim == len(want) - 1:
                emb = emb[None]
            if tuple(emb.shape) != want:
                raise InputError(
                    f"image embedding {name} has shape {tuple(emb.shape)}; this model expects {want}",
                    hint="use an embedding produced by the same model's encoder",
                )
            emb = np.ascontiguousarray(emb, dtype=np.float32)
            if not np.isfinite(emb).all():
                raise InputError(
                    f"image embedding {name} contains NaN or inf",
                    hint="pass an embedding from get_image_embedding() of the same model",
                )
            emb.setflags(write=False)
            stored[name] = emb
        self._features = {n: stored[n] for n in self.contract.decoder.embedding_inputs}
        self._embedding = stored[self._feature_names[0]]
        self.original_size = (int(original_hw[0]), int(original_hw[1]))
        # SamPredictor's input_size: where the image lands in the PROMPT frame (which is the encoder
        # input only when the contract says so; EfficientViT-SAM L: encoder 512, prompts 1024).
        self.input_size = input_shape(*self.original_size, self.contract.frame_size, self.contract.preprocess.resize)

    def _require_image(self) -> None:
        if self._embedding is None:
            raise PredictorStateError(
                "no image is set", hint="call set_image(image) (or set_image_embedding) before predicting"
            )

    # ---- prompts -> masks --------------------------------------------------------------------------
    def predict(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        box: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One prompt (points ``[N,2]`` + labels ``[N]``, and/or box ``[4]``, and/or mask ``[1,256,256]``).

        Returns ``(masks [C,H,W] bool (float32 logits if return_logits), scores [C], low_res [C,256,256])``."""
        self._require_image()
        self._check_flags(multimask_output, return_logits)
        frame = dict(image_size=self.original_size, allow_outside=self.allow_outside_points)
        coords, labels = check_points(point_coords, point_labels, batched=False, limits=self.limits,
                                      labels_allowed=self.contract.prompts.user_labels, **frame)
        boxes = check_boxes(box, batched=False, **frame)
        self._check_mask_supported(mask_input)
        masks_in = check_mask_input(
            mask_input, batched=False, k=1, size=self.contract.decoder.low_res_size, limits=self.limits
        )
        masks, scores, low = self._run(coords, labels, boxes, masks_in, 1, multimask_output, return_logits)
        return masks[0], scores[0], low[0]

    def predict_batch(
        self,
        point_coords: Optional[np.ndarray] = None,
        point_labels: Optional[np.ndarray] = None,
        boxes: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K prompts at once: points ``[K,N,2]`` + labels ``[K,N]`` and/or boxes ``[K,4]``, mask ``[K,1,256,256]``.

        All K prompts go through the decoder together (chunks of ``max_batch``). Returns
        ``(masks [K,C,H,W], scores [K,C], low_res [K,C,256,256])``."""
        self._require_image()
        self._check_flags(multimask_output, return_logits)
        frame = dict(image_size=self.original_size, allow_outside=self.allow_outside_points)
        coords, labels = check_points(point_coords, point_labels, batched=True, limits=self.limits,
                                      labels_allowed=self.contract.prompts.user_labels, **frame)
        bxs = check_boxes(boxes, batched=True, **frame)
        self._check_mask_supported(mask_input)
        ks = {a.shape[0] for a in (coords, bxs) if a is not None}
        if len(ks) > 1:
            raise InputError(
                f"point prompts ({coords.shape[0]}) and boxes ({bxs.shape[0]}) disagree on the number of prompts K",
                hint="give one point set per box (or pad point sets with label -1)",
            )
        if not ks:
            if mask_input is None:
                raise InputError("predict_batch() needs points, boxes or mask_input", hint="pass boxes=[K, 4] or point_coords=[K, N, 2]")
            try:
                shape = np.shape(mask_input)
            except (TypeError, ValueError):
                raise InputError(f"mask_input must be a numeric array [K, 1, {self.contract.decoder.low_res_size}, "
                                 f"{self.contract.decoder.low_res_size}]") from None
            if len(shape) not in (3, 4):
                raise InputError(f"mask_input has shape {shape}; expected [K, 1, {self.contract.decoder.low_res_size}, "
                                 f"{self.contract.decoder.low_res_size}]")
            k = int(shape[0])
        else:
            k = ks.pop()
        if k > self.limits.max_prompts:
            raise InputError(
                f"{k} prompts exceeds the limit of {self.limits.max_prompts} per call",
                hint="split the request, or raise the Predictor's max_prompts",
            )
        masks_in = check_mask_input(
            mask_input, batched=True, k=k, size=self.contract.decoder.low_res_size, limits=self.limits
        )
        if k == 0:  # nothing to decode: empty outputs of the usual shapes
            d = self.contract.decoder
            c = len(d.multimask_tokens) if (multimask_output or d.always_multimask) and d.hq_token is None else 1
            h, w = self.original_size
            size = d.low_res_size
            self.timings = {"prompt_ms": 0.0, "decoder_ms": 0.0, "postprocess_ms": 0.0, "prompts": 0}
            return (
                np.zeros((0, c, h, w), np.float32 if return_logits else np.bool_),
                np.zeros((0, c), np.float32),
                np.zeros((0, c, size, size), np.float32),
            )
        return self._run(coords, labels, bxs, masks_in, k, multimask_output, return_logits)

    def _check_mask_supported(self, mask_input: Any) -> None:
        if mask_input is not None and not self.contract.decoder.mask_input:
            raise InputError(
                f"{self.contract.family}/{self.contract.variant} has no mask input",
                hint="prompt it with points or boxes only",
            )

    @staticmethod
    def _check_flags(multimask_output: Any, return_logits: Any) -> None:
        for name, v in (("multimask_output", multimask_output), ("return_logits", return_logits)):
            if not isinstance(v, (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {v!r}")

    def _run(self, coords, labels, boxes, masks_in, k, multimask_output, return_logits):
        t0 = time.perf_counter()
        orig, inp = self.original_size, self.input_size
        c_in = apply_coords(coords, orig, inp) if coords is not None else None
        b_in = apply_boxes(boxes, orig, inp) if boxes is not None else None
        pc, pl = pack_for(self.contract, c_in, labels, b_in, k, self.no_points_ok)
        check_decoder_points(self.contract, pc.shape[1])
        t1 = time.perf_counter()
        iou, low = self.decode(pc, pl, masks_in)
        t2 = time.perf_counter()
        #: extra decoder outputs of the last call by name (SAM2: ``object_score_logits [K,1]``; an
        #: object is absent where the logit is <= 0), or {} for families without them
        self.extra_outputs = dict(self._last_extra)
        scores, low = self.select(iou, low, multimask_output)
        masks = self.postprocess(low, threshold=None if return_logits else self.contract.decoder.mask_threshold)
        clamp = self.contract.decoder.low_res_clamp
        if clamp is not None:  # SAM2 returns clamped logits (ready to feed back as mask_input)
            low = np.clip(low, -float(clamp), float(clamp))
        t3 = time.perf_counter()
        self.timings = {
            "prompt_ms": (t1 - t0) * 1e3,
            "decoder_ms": (t2 - t1) * 1e3,
            "postprocess_ms": (t3 - t2) * 1e3,
            "prompts": k,
        }
        return masks, scores, low

    # ---- building blocks -------------------------------------------------------------------------
    def decode(
        self,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: Optional[np.ndarray] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the decoder on packed prompts in the prompt frame.

        ``point_coords [K,N,2]``, ``point_labels [K,N]`` (incl. box corners 2/3 and padding -1),
        optional ``mask_input [K,1,256,256]``. Returns all tokens: ``iou [K,T]``, ``low_res [K,T,256,256]``
        (T = contract ``num_mask_tokens``). Prompts are decoded in chunks of ``max_batch``."""
        self._require_image()
        pc = np.ascontiguousarray(point_coords, dtype=np.float32)
        pl = np.ascontiguousarray(point_labels, dtype=np.float32)
        k, n = pl.shape
        dec = self.model.decoder
        if dec.max_points is not None and n > dec.max_points:
            raise InputError(
                f"{n} decoder points per prompt (clicks + box corners + padding) exceeds the engine's "
                f"profile maximum of {dec.max_points}",
                hint="pass fewer points, or rebuild the engine with a larger point profile (`samdeploy build`)",
            )
        size = self.contract.decoder.low_res_size
        chunk = min(self.max_batch, dec.max_batch or self.max_batch)
        self._extra_chunks: list[dict[str, np.ndarray]] = []
        if k <= chunk:
            out = self._decode_chunk(pc, pl, mask_input, size)
        else:
            ious, lows = [], []
            for s in range(0, k, chunk):
                mi = None if mask_input is None else mask_input[s : s + chunk]
                a, b = self._decode_chunk(pc[s : s + chunk], pl[s : s + chunk], mi, size)
                ious.append(a)
                lows.append(b)
            out = np.concatenate(ious), np.concatenate(lows)
        names = self.contract.decoder.extra_outputs
        self._last_extra = {n: np.concatenate([c[n] for c in self._extra_chunks]) for n in names}
        return out

    def _decode_chunk(self, pc, pl, mask_input, size):
        k = pc.shape[0]
        if mask_input is None:
            mi = np.zeros((k, 1, size, size), np.float32)
            has = np.zeros((k,), np.float32)
        else:
            mi = np.ascontiguousarray(mask_input, dtype=np.float32)
            has = np.ones((k,), np.float32)
        outputs = self.model.decoder.run(decoder_feeds(self._features, pc, pl, mi, has))
        iou, low = decoder_results(outputs)
        iou, low = np.asarray(iou), np.asarray(low)
        self._extra_chunks.append({n: np.asarray(outputs[n]) for n in self.contract.decoder.extra_outputs})
        if not (np.isfinite(iou).all() and np.isfinite(low).all()):
            raise NumericalError(
                "the decoder backend returned NaN or inf scores/logits for validated prompts",
                hint="compare this backend with ONNX Runtime CPU on the same prompt (`samdeploy check`); "
                "a reduced-precision build (fp16/int8) or a damaged export can cause this -- rebuild or re-export",
            )
        return iou, low

    def select(self, iou: np.ndarray, low_res: np.ndarray, multimask_output: bool) -> tuple[np.ndarray, np.ndarray]:
        """Pick mask tokens like SamPredictor (1..3 for multimask, always for TinySAM contracts, else 0)
        and score them as ``self.score`` says (IoU head, stability of the low-res logits, or sigmoid)."""
        d = self.contract.decoder
        if d.hq_token is not None:  # HQ-SAM: one mask per prompt (see runtime/hq.py)
            from .hq import hq_select

            iou, low_res = hq_select(iou, low_res, bool(multimask_output), self.hq_token_only, int(d.hq_token))
            low_res = np.ascontiguousarray(low_res, np.float32)
        elif multimask_output or d.always_multimask:
            idx = list(d.multimask_tokens)
            iou, low_res = iou[:, idx], low_res[:, idx]
        elif d.single_mask == "dynamic_stability":
            iou, low_res = _dynamic_single_mask(iou, low_res, d)
        else:
            t = d.single_mask_token
            iou, low_res = iou[:, t : t + 1], low_res[:, t : t + 1]
        if self.score == "stability":
            iou = stability_score(low_res, d.mask_threshold, d.stability_score_offset)
        elif self.score == "sigmoid":
            iou = (1.0 / (1.0 + np.exp(-iou.astype(np.float64)))).astype(np.float32)
        return iou, low_res

    def postprocess(self, low_res: np.ndarray, threshold: Optional[float] = 0.0) -> np.ndarray:
        """Low-res logits ``[..., 256, 256]`` -> masks at the original image size (see ``upscale_masks``)."""
        self._require_image()
        if self.contract.decoder.postprocess == "direct":
            return resize_masks_direct(low_res, self.original_size, threshold, self.contract.decoder.mask_interpolation)
        return upscale_masks(
            low_res, self.input_size, self.original_size, self.contract.frame_size, threshold,
            exact=not self.fast_postprocess,
        )

    # ---- lifecycle -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {**self.model.describe(), "score": self.score}

    def close(self) -> None:
        self.reset_image()
        self.model.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
