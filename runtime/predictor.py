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

* :meth:`Predictor.decode` -- prompts already in the encoder-input frame -> raw decoder outputs
  (all mask tokens), chunked to ``max_batch``;
* :meth:`Predictor.select` -- pick the single/multimask tokens (contract ``Decoder``);
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

from ..contract import ENCODER_INPUT, ENCODER_OUTPUT, ModelContract, decoder_feeds, decoder_results
from ..errors import ContractError, InputError, NumericalError, PredictorStateError
from ..images import to_rgb_uint8
from .backends import GraphPair, load_model
from .prompts import PromptLimits, check_boxes, check_mask_input, check_points, pack_prompts
from .transforms import apply_boxes, apply_coords, preprocess_image, resized_shape, upscale_masks

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
    except AttributeError as exc:
        raise ContractError(f"the model contract lacks a field the runtime needs ({exc})", hint=hint) from None


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
        allow_outside_points: ``False`` (default): point and box coordinates must lie in the original
            image frame, ``x in [0, W]``, ``y in [0, H]`` (closed edges), else :class:`InputError`.
            ``True``: accept coordinates outside the image as SamPredictor does (still bounded to
            ``prompts.OUTSIDE_MARGIN`` image sizes around the frame, so they stay finite in fp16/fp32).
        backend_options: passed to the backend's ``open_graph`` (unknown names raise InputError).

    All prompt checks (shapes, dtypes, finiteness in float32, frame bounds, labels in (-1, 0, 1),
    counts) run before any encoder/decoder work. ``predict()`` with no prompt, only ``mask_input`` or
    empty ``(0, 2)`` points decodes the single padding point ``(0, 0, -1)`` like SamPredictor;
    ``predict_batch`` with K = 0 prompts returns empty arrays. Non-finite backend outputs raise
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
        **backend_options: Any,
    ) -> None:
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
        for name, v in (("fast_postprocess", fast_postprocess), ("allow_outside_points", allow_outside_points)):
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
        emb = np.asarray(self.model.encoder.run({ENCODER_INPUT: x})[ENCODER_OUTPUT])
        t2 = time.perf_counter()
        if not np.isfinite(emb).all():
            raise NumericalError(
                "the encoder backend returned NaN or inf for a valid image",
                hint="compare the backend with ONNX Runtime CPU on this image (`samdeploy check`); if only a "
                "reduced-precision build (fp16/int8) fails, rebuild it with more layers in fp32",
            )
        self._store_embedding(emb, rgb.shape[:2])
        self.timings = {"preprocess_ms": (t1 - t0) * 1e3, "encoder_ms": (t2 - t1) * 1e3}

    def set_image_embedding(self, embedding: np.ndarray, original_size: tuple[int, int]) -> None:
        """Reuse an embedding from :meth:`get_image_embedding` for an image of ``original_size`` (H, W)."""
        try:
            vals = [float(v) for v in original_size]
            if len(vals) != 2 or not all(math.isfinite(v) and v == int(v) for v in vals):
                raise ValueError
            H, W = (int(v) for v in vals)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"original_size must be (H, W) integers, got {original_size!r}") from None
        if H < 1 or W < 1:
            raise InputError(f"original_size must be positive, got {(H, W)}")
        try:
            emb = np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"embedding must be a float array, got {type(embedding).__name__}") from None
        self._store_embedding(emb, (H, W))

    def get_image_embedding(self) -> np.ndarray:
        """The cached embedding ``[1, 256, 64, 64]`` (read-only)."""
        self._require_image()
        return self._embedding

    def reset_image(self) -> None:
        self._embedding: Optional[np.ndarray] = None
        self.original_size: Optional[tuple[int, int]] = None
        self.input_size: Optional[tuple[int, int]] = None

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    def _store_embedding(self, emb: np.ndarray, original_hw: tuple[int, int]) -> None:
        want = (1, *self.contract.decoder.embedding_shape)
        if emb.ndim == len(want) - 1:
            emb = emb[None]
        if tuple(emb.shape) != want:
            raise InputError(
                f"image embedding has shape {tuple(emb.shape)}; this model expects {want}",
                hint="use an embedding produced by the same model's encoder",
            )
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if not np.isfinite(emb).all():
            raise InputError(
                "image embedding contains NaN or inf",
                hint="pass an embedding from get_image_embedding() of the same model",
            )
        emb.setflags(write=False)
        self._embedding = emb
        self.original_size = (int(original_hw[0]), int(original_hw[1]))
        self.input_size = resized_shape(*self.original_size, self.contract.preprocess.input_size)

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
        coords, labels = check_points(point_coords, point_labels, batched=False, limits=self.limits, **frame)
        boxes = check_boxes(box, batched=False, **frame)
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
        coords, labels = check_points(point_coords, point_labels, batched=True, limits=self.limits, **frame)
        bxs = check_boxes(boxes, batched=True, **frame)
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
                raise InputError("mask_input must be a numeric array [K, 1, 256, 256]") from None
            if len(shape) not in (3, 4):
                raise InputError(f"mask_input has shape {shape}; expected [K, 1, 256, 256]")
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
            c = len(d.multimask_tokens) if (multimask_output or d.always_multimask) else 1
            h, w = self.original_size
            size = d.low_res_size
            self.timings = {"prompt_ms": 0.0, "decoder_ms": 0.0, "postprocess_ms": 0.0, "prompts": 0}
            return (
                np.zeros((0, c, h, w), np.float32 if return_logits else np.bool_),
                np.zeros((0, c), np.float32),
                np.zeros((0, c, size, size), np.float32),
            )
        return self._run(coords, labels, bxs, masks_in, k, multimask_output, return_logits)

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
        pc, pl = pack_prompts(c_in, labels, b_in, k, self.contract.prompts.pad_point_when_no_box, pad_empty=True)
        t1 = time.perf_counter()
        iou, low = self.decode(pc, pl, masks_in)
        t2 = time.perf_counter()
        scores, low = self.select(iou, low, multimask_output)
        masks = self.postprocess(low, threshold=None if return_logits else self.contract.decoder.mask_threshold)
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
        """Run the decoder on packed prompts in the encoder-input frame.

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
        if k <= chunk:
            return self._decode_chunk(pc, pl, mask_input, size)
        ious, lows = [], []
        for s in range(0, k, chunk):
            mi = None if mask_input is None else mask_input[s : s + chunk]
            a, b = self._decode_chunk(pc[s : s + chunk], pl[s : s + chunk], mi, size)
            ious.append(a)
            lows.append(b)
        return np.concatenate(ious), np.concatenate(lows)

    def _decode_chunk(self, pc, pl, mask_input, size):
        k = pc.shape[0]
        if mask_input is None:
            mi = np.zeros((k, 1, size, size), np.float32)
            has = np.zeros((k,), np.float32)
        else:
            mi = np.ascontiguousarray(mask_input, dtype=np.float32)
            has = np.ones((k,), np.float32)
        iou, low = decoder_results(self.model.decoder.run(decoder_feeds(self._embedding, pc, pl, mi, has)))
        iou, low = np.asarray(iou), np.asarray(low)
        if not (np.isfinite(iou).all() and np.isfinite(low).all()):
            raise NumericalError(
                "the decoder backend returned NaN or inf scores/logits for validated prompts",
                hint="compare this backend with ONNX Runtime CPU on the same prompt (`samdeploy check`); "
                "a reduced-precision build (fp16/int8) or a damaged export can cause this -- rebuild or re-export",
            )
        return iou, low

    def select(self, iou: np.ndarray, low_res: np.ndarray, multimask_output: bool) -> tuple[np.ndarray, np.ndarray]:
        """Pick mask tokens like SamPredictor: 1..3 for multimask (always for TinySAM contracts), else 0."""
        d = self.contract.decoder
        if multimask_output or d.always_multimask:
            idx = list(d.multimask_tokens)
            return iou[:, idx], low_res[:, idx]
        t = d.single_mask_token
        return iou[:, t : t + 1], low_res[:, t : t + 1]

    def postprocess(self, low_res: np.ndarray, threshold: Optional[float] = 0.0) -> np.ndarray:
        """Low-res logits ``[..., 256, 256]`` -> masks at the original image size (see ``upscale_masks``)."""
        self._require_image()
        return upscale_masks(
            low_res, self.input_size, self.original_size, self.contract.preprocess.input_size, threshold,
            exact=not self.fast_postprocess,
        )

    # ---- lifecycle -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return self.model.describe()

    def close(self) -> None:
        self.reset_image()
        self.model.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
