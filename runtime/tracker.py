"""``Tracker``: SAM2 / SAM2.1 video tracking on exported graphs, with no torch (SAM2VideoPredictor semantics).

    from samdeploy.runtime import Tracker
    tr = Tracker("out/sam2.1_t")              # an export made with `samdeploy export --video`
    tr.add_object(1, box=[40, 60, 200, 220])  # prompts apply to the next frame given to track()
    for frame in frames:                       # HxWx3 uint8 RGB (image_format="BGR" for OpenCV)
        result = tr.track(frame)               # TrackResult: per object mask, object score, box
    tr.remove_object(1); tr.reset()

    for result in tr.track_video(frames, prompts={0: {1: {"box": [...]}}, 20: {2: {"points": [[x, y]]}}},
                                 remove={40: [2]}):
        ...

What happens on a frame (the arithmetic of ``sam2.SAM2Base.track_step`` as SAM2VideoPredictor drives it,
objects tracked independently, forward in time):

* the image encoder runs once per frame (``image_embeddings`` = the 64x64 level + ``no_mem_embed``, and
  the two high-resolution levels);
* an object prompted on this frame (points, box or mask) gets a *conditioning frame*: the decoder sees
  the plain image features, exactly like the image predictor (one click -> best of the three multimask
  tokens; more clicks or a box -> the single-mask token with the dynamic stability switch); a mask
  prompt is used as the output itself (``_use_mask_as_output``);
* every other object is decoded on memory-conditioned features (``memory_attention``: its conditioning
  frames, the last ``num_maskmem - 1`` frames and up to ``max_obj_ptrs_in_encoder - 1`` recent object
  pointers with signed temporal encodings), multimask, best token by IoU; an object whose object-score
  logit is <= 0 is reported absent (its mask logits become ``no_obj_score``) and its memory is encoded
  as SAM2 does (empty mask + ``no_obj_embed_spatial``, pointer = ``no_obj_ptr``);
* the memory encoder encodes each object's new mask (binarised on prompted frames, sigmoid otherwise);
  the features are kept in bfloat16 (as SAM2VideoPredictor stores them; ``memory_storage="float32"``
  keeps them exact) and only the frames the next step can read are kept, so memory stays flat.

All tracked objects of a frame run through each graph together (memories padded to the longest bank,
with validity masks); prompted objects are decoded in groups of equal click count.

Preprocessing is SAM2VideoPredictor's: the frame is resized to S x S with Pillow's bicubic filter
(``load_video_frames``), then the graph normalises with ImageNet mean/std. Output masks are the low-res
logits resized straight to the frame (bilinear, ``align_corners=False``) and thresholded at 0.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

from ..contract import ENCODER_INPUT, VIDEO_CONSTANTS, VIDEO_GRAPHS, ModelContract, ensure_same_model
from ..errors import ContractError, InputError, MissingFileError, NumericalError, PredictorStateError
from ..images import to_rgb_uint8
from .backends import backend_module, load_model
from .predictor import IMAGE_FORMATS, _dynamic_single_mask, validate_contract
from .prompts import PromptLimits, check_boxes, check_points
from .transforms import resize_masks_direct

__all__ = ["Tracker", "TrackResult", "TrackedObject", "MAX_OBJECTS"]

MAX_OBJECTS = 64  # objects tracked at once (each costs one memory-attention row per frame)
MAX_OBJECT_ID = 2**31 - 1


# ---- bfloat16 storage (NumPy has no bfloat16: keep the upper 16 bits, round to nearest even) --------
def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round-to-nearest-even like ``tensor.to(torch.bfloat16)``."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bfloat16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << np.uint32(16)).view(np.float32)


# ---- results -----------------------------------------------------------------------------------------
@dataclass
class TrackedObject:
    """One object on one frame. ``score`` is the object-score logit (> 0: present)."""

    obj_id: int
    mask: np.ndarray  # [H, W] bool, all False when the object is absent
    score: float
    iou: float
    present: bool
    box: Optional[tuple[int, int, int, int]]  # (x0, y0, x1, y1) inclusive pixels of the mask, None if empty
    prompted: bool  # this frame is one of the object's conditioning frames
    low_res_logits: np.ndarray = field(repr=False, default=None)  # [S/4, S/4] float32


@dataclass
class TrackResult:
    frame_index: int
    objects: list[TrackedObject]
    timings: dict[str, float]  # milliseconds
    provenance: dict[str, Any]

    def by_id(self) -> dict[int, TrackedObject]:
        return {o.obj_id: o for o in self.objects}


# ---- per-object state ---------------------------------------------------------------------------------
@dataclass
class _Memory:
    maskmem: Optional[np.ndarray]  # [T, 64] bfloat16 bits (uint16) or float32; None once too old to be read
    obj_ptr: np.ndarray  # [256] float32


@dataclass
class _Prompt:
    coords: np.ndarray  # [N, 2] float32 in the S frame (box corners first, labels 2/3)
    labels: np.ndarray  # [N] float32
    mask: Optional[np.ndarray] = None  # [S, S] float32 0/1 (a mask prompt; coords/labels empty then)


@dataclass(eq=False)  # identity semantics: objects are dict keys while a frame is processed
class _Object:
    obj_id: int
    cond: "OrderedDict[int, _Memory]" = field(default_factory=OrderedDict)  # conditioning frames, in order
    recent: "OrderedDict[int, _Memory]" = field(default_factory=OrderedDict)  # last non-conditioning frames
    pending: Optional[_Prompt] = None


def _mask_box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def fill_holes(low_res: np.ndarray, max_area: int) -> np.ndarray:
    """SAM2's ``fill_holes_in_mask_scores``: background components (logit <= 0, 8-connected) of at most
    ``max_area`` pixels get the logit 0.1. [K, L, L] float32 -> same."""
    import cv2

    out = low_res.copy()
    for k in range(out.shape[0]):
        bg = (out[k] <= 0).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_area) + 1
        if small.size:
            out[k][np.isin(labels, small)] = np.float32(0.1)
    return out


class Tracker:
    """Track objects through a video with an exported SAM2 / SAM2.1 model (``samdeploy export --video``).

    Args:
        model_dir: the export directory (its manifest names and hashes every graph).
        backend / providers / threads: as for :class:`~samdeploy.runtime.Predictor` (ONNX Runtime CPU by default).
        num_frames: length of the video when known: SAM2 reads ``min(num_frames, max_obj_ptrs_in_encoder)``
            object pointers; ``None`` (a live camera) = no limit from the length.
        memory_storage: ``"bfloat16"`` (the contract's default, what SAM2VideoPredictor stores) or ``"float32"``.
        fill_hole_area: fill background holes of at most this many low-res pixels (SAM2's
            ``fill_hole_area``); ``None`` = the contract's (8, ``build_sam2_video_predictor``'s setting);
            0 = off, which is what the official predictor ends up doing without its CUDA extension.
        max_objects: most objects tracked at once.
        allow_outside_points: accept prompt coordinates outside the frame (bounded, as the Predictor does).
        graph_dir: where the backend's own files are when they are not in (a subdirectory ``engines*`` of)
            ``model_dir``: e.g. ``samdeploy build --out DIR`` engines. The constants and the manifest
            always come from ``model_dir``, the export directory.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        backend: str = "onnxruntime",
        providers: Optional[Sequence[str] | str] = None,
        threads: Optional[int] = None,
        num_frames: Optional[int] = None,
        memory_storage: Optional[str] = None,
        fill_hole_area: Optional[int] = None,
        max_objects: int = 16,
        allow_outside_points: bool = False,
        graph_dir: Optional[str | os.PathLike] = None,
        **backend_options: Any,
    ) -> None:
        if num_frames is not None and (not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1):
            raise InputError(f"num_frames must be None or a positive integer, got {num_frames!r}")
        if fill_hole_area is not None and (not isinstance(fill_hole_area, int) or isinstance(fill_hole_area, bool)
                                           or fill_hole_area < 0):
            raise InputError(f"fill_hole_area must be None or an integer >= 0, got {fill_hole_area!r}")
        if not isinstance(max_objects, int) or isinstance(max_objects, bool) or not 1 <= max_objects <= MAX_OBJECTS:
            raise InputError(f"max_objects must be an integer in 1..{MAX_OBJECTS}, got {max_objects!r}")
        if model_dir is None or not isinstance(model_dir, (str, os.PathLike)):
            raise InputError(f"model_dir must be an export directory, got {model_dir!r}")
        model_dir = os.fspath(model_dir)
        self.pair = load_model(os.fspath(graph_dir) if graph_dir is not None else model_dir, backend=backend,
                               providers=providers, threads=threads, **backend_options)
        try:
            self.contract: ModelContract = self.pair.contract
            validate_contract(self.contract)
            video = getattr(self.contract, "video", None)
            if video is None:
                raise ContractError(
                    f"{model_dir} has no video graphs (memory attention, memory encoder, tracking decoder)",
                    hint="re-export a SAM2/SAM2.1 model with `samdeploy export --model sam2.1_hiera_t --video --out DIR`",
                )
            self.video = video
            storage = memory_storage if memory_storage is not None else video.memory_storage
            if storage not in ("bfloat16", "float32"):
                raise InputError(f"memory_storage must be 'bfloat16' or 'float32', got {storage!r}")
            self.memory_storage = storage
            self.graphs = self._open_video_graphs(model_dir, backend, providers, threads, backend_options)
            self._constants = self._load_constants(model_dir)
        except BaseException:
            self.close()
            raise
        self.size = int(self.contract.preprocess.input_size)
        self.low_res = int(self.contract.decoder.low_res_size)
        self.num_frames = num_frames
        self.fill_hole_area = int(self.video.fill_hole_area if fill_hole_area is None else fill_hole_area)
        self.max_objects = int(max_objects)
        self.allow_outside_points = bool(allow_outside_points)
        self.limits = PromptLimits()
        self.timings: dict[str, float] = {}
        self.reset()

    # ---- files -------------------------------------------------------------------------------------
    def _video_files(self, model_dir: str, roles: Sequence[str]) -> dict[str, str]:
        """role -> path of the video files ``roles`` (graphs and/or "constants") of the export directory,
        verified against the hashes of its manifest."""
        from .._io import verify_sha256_cached

        v = self.video
        want = {r: n for r, n in v.files.items() if r in roles}
        try:
            with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as fh:
                files = json.load(fh).get("files", {})
        except (OSError, ValueError, AttributeError):
            files = {}
        to_verify, paths = [], {}
        for role, name in want.items():
            entry = files.get(role) if isinstance(files, dict) else None
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                raise ContractError(
                    f"{model_dir}/manifest.json does not list the {role} file ({name})",
                    hint="re-export with `samdeploy export --video --out DIR`; video graphs copied in by hand are refused",
                )
            path = os.path.join(model_dir, entry.get("path") or name)
            if not os.path.exists(path):
                raise MissingFileError(f"{role} file not found: {path}",
                                       hint="re-export with `samdeploy export --video --out DIR`")
            size = entry.get("size")
            to_verify.append((os.path.relpath(path, model_dir), size if isinstance(size, int) else None, entry["sha256"]))
            paths[role] = path
        problems = verify_sha256_cached(model_dir, to_verify)
        if problems:
            raise ContractError(f"the video files in {model_dir} do not match its manifest.json:\n    "
                                + "\n    ".join(problems), hint="re-run `samdeploy export --video --out DIR`")
        return paths

    def _open_video_graphs(self, model_dir, backend, providers, threads, options) -> dict[str, Any]:
        """The three video graphs: the export's ONNX files (hash-checked against its manifest), or, for a
        backend with its own files (TensorRT), what its ``find_video_graphs`` names next to the encoder
        engine, whose own contracts must then be this model's, video settings included."""
        mod = backend_module(backend)
        find = getattr(mod, "find_video_graphs", None)
        if find is None:
            self._paths = self._video_files(model_dir, (*VIDEO_GRAPHS, VIDEO_CONSTANTS))
        else:
            self._paths = {**self._video_files(model_dir, (VIDEO_CONSTANTS,)), **find(self.pair.encoder_path)}
        graphs: dict[str, Any] = {}
        try:
            for role in VIDEO_GRAPHS:
                path = self._paths[role]
                if find is not None:  # the backend's own files: no manifest hash vouches for them
                    self._check_graph_contract(mod, path, role)
                g = mod.open_graph(path, role, providers=providers, threads=threads, **options)
                graphs[role] = g
                names = self.video.graph_inputs(role), self.video.graph_outputs(role)
                missing = [n for n in names[0] if n not in g.input_names] + [n for n in names[1] if n not in g.output_names]
                if missing:
                    raise ContractError(f"{role} graph {path} lacks {missing}", hint="re-export with `samdeploy export --video`")
        except BaseException:
            for x in graphs.values():
                x.close()
            raise
        return graphs

    def _check_graph_contract(self, mod, path: str, role: str) -> None:
        """``path`` (e.g. an engine) holds video graph ``role`` of this model, with these video settings."""
        theirs, their_role = mod.read_contract(path)
        if their_role and their_role != role:
            raise ContractError(f"{path} is a {their_role} graph, not the {role}",
                                hint="rebuild the engines from the `samdeploy export --video` directory")
        ensure_same_model(self.contract, theirs, "the encoder", role)
        if theirs.video != self.video:
            raise ContractError(f"{path} was built from an export with other video settings than {self.pair.encoder_path}",
                                hint="rebuild the engines from the `samdeploy export --video` directory")

    def _load_constants(self, model_dir: str) -> dict[str, np.ndarray]:
        try:
            with np.load(self._paths["constants"], allow_pickle=False) as z:
                c = {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
        except (OSError, ValueError) as exc:
            raise ContractError(f"{self._paths['constants']} is not a readable constants file ({exc})",
                                hint="re-export with `samdeploy export --video`") from None
        need = {"no_mem_embed": (256,), "no_obj_ptr": (256,), "mask_downsample_weight": (1, 1, 4, 4),
                "mask_downsample_bias": (1,)}
        for k, shape in need.items():
            if k not in c or c[k].size != math.prod(shape) or not np.isfinite(c[k]).all():
                raise ContractError(f"{self._paths['constants']} lacks {k} {list(shape)}",
                                    hint="re-export with `samdeploy export --video`")
            c[k] = c[k].reshape(shape)
        return c

    # ---- state -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every object and start again at frame 0."""
        self._objects: "OrderedDict[int, _Object]" = OrderedDict()
        self.frame_index = 0
        self._frame_hw: Optional[tuple[int, int]] = None

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def _check_id(self, obj_id: Any) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 0 <= int(obj_id) <= MAX_OBJECT_ID:
            raise InputError(f"object ids are integers in 0..{MAX_OBJECT_ID}, got {obj_id!r}")
        return int(obj_id)

    def add_object(
        self,
        obj_id: int,
        *,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        mask: Any = None,
        frame_size: Optional[tuple[int, int]] = None,
    ) -> None:
        """Prompt object ``obj_id`` (new, or re-prompt a tracked one) on the NEXT frame given to :meth:`track`.

        ``points`` [N,2] (x, y) pixels with ``labels`` [N] (1 fg, 0 bg), and/or ``box`` (x0, y0, x1, y1);
        or ``mask`` [H, W] (bool or 0/1). Coordinates are in the frame's pixels: the frame size is that of
        the frames seen so far, or ``frame_size=(H, W)`` before the first frame."""
        oid = self._check_id(obj_id)
        if frame_size is not None:
            try:
                fh, fw = (int(v) for v in frame_size)
            except (TypeError, ValueError):
                raise InputError(f"frame_size must be (H, W), got {frame_size!r}") from None
            if fh < 1 or fw < 1 or (self._frame_hw is not None and (fh, fw) != self._frame_hw):
                raise InputError(f"frame_size {frame_size!r} does not match the video's frames {self._frame_hw}")
            self._frame_hw = (fh, fw)
        hw = self._frame_hw
        if hw is None:
            raise PredictorStateError("the frame size is not known yet",
                                      hint="pass frame_size=(H, W) to add_object before the first track() call")
        h, w = int(hw[0]), int(hw[1])
        if oid not in self._objects and len(self._objects) >= self.max_objects:
            raise InputError(f"already tracking {len(self._objects)} objects (max_objects={self.max_objects})",
                             hint="remove an object first, or create the Tracker with a larger max_objects")
        if mask is not None:
            if points is not None or labels is not None or box is not None:
                raise InputError("give either a mask or points/box for an object on one frame, not both")
            m = np.asarray(mask)
            if m.shape != (h, w):
                raise InputError(f"mask has shape {m.shape}; expected the frame's ({h}, {w})")
            if m.dtype != np.bool_ and not np.issubdtype(m.dtype, np.number):
                raise InputError(f"mask must be bool or numeric, got dtype {m.dtype}")
            prompt = _Prompt(np.zeros((0, 2), np.float32), np.zeros((0,), np.float32), self._mask_to_frame(m, h, w))
        else:
            coords, labs = check_points(points, labels, batched=False, limits=self.limits, image_size=(h, w),
                                        allow_outside=self.allow_outside_points)
            boxes = check_boxes(box, batched=False, image_size=(h, w), allow_outside=self.allow_outside_points)
            if coords is None and boxes is None:
                raise InputError(f"object {oid}: give points (with labels), a box, or a mask")
            parts_c, parts_l = [], []
            if boxes is not None:  # SAM2: the box corners come first, labels 2 and 3
                parts_c.append(boxes.reshape(2, 2))
                parts_l.append(np.array([2.0, 3.0]))
            if coords is not None and coords.shape[1]:
                parts_c.append(coords[0])
                parts_l.append(labs[0])
            if not parts_c:
                raise InputError(f"object {oid}: the prompt has no points", hint="give at least one point or a box")
            rows = sum(len(x) for x in parts_l) + 1  # + SAM2's padding point
            max_rows = getattr(self.graphs.get("track_decoder"), "max_points", None)
            if max_rows is not None and rows > int(max_rows):
                raise InputError(f"object {oid}: {rows - 1} prompt points (box corners count as 2) + the padding point "
                                 f"exceed the track_decoder engine's {max_rows} rows",
                                 hint="give fewer points, or rebuild the video engines with a larger --max-points")
            c = np.concatenate(parts_c).astype(np.float64)
            scale = np.array([self.size / w, self.size / h])
            prompt = _Prompt((c * scale).astype(np.float32), np.concatenate(parts_l).astype(np.float32))
        allowed = self._max_cond_frames()
        cond = self._objects[oid].cond if oid in self._objects else {}
        n_cond = len(cond) + (self.frame_index not in cond)  # the next frame becomes a prompted frame
        if allowed is not None and n_cond > allowed:
            raise InputError(f"object {oid} would have {n_cond} prompted frames; the memory_attention engine's profile "
                             f"holds at most {allowed}",
                             hint="rebuild the video engines with a larger --max-cond-frames, or track with onnxruntime")
        obj = self._objects.setdefault(oid, _Object(oid))
        obj.pending = prompt

    def _max_cond_frames(self) -> Optional[int]:
        """Most conditioning frames per object the memory_attention graph takes (None = unlimited): its
        profile's R max minus the recent frames, and P max minus the recent pointers."""
        limits = getattr(self.graphs.get("memory_attention"), "input_limits", None)
        if not limits:
            return None
        v = self.video
        r_max, p_max = limits[v.attn_memory][1][1], limits[v.attn_obj_ptrs][1][1]
        return max(0, min(r_max - (int(v.num_maskmem) - 1), p_max - (self._max_ptrs() - 1)))

    def remove_object(self, obj_id: int, strict: bool = True) -> None:
        oid = self._check_id(obj_id)
        if oid not in self._objects:
            if strict:
                raise InputError(f"no object with id {oid} is tracked (tracked: {self.object_ids})")
            return
        del self._objects[oid]

    def _mask_to_frame(self, m: np.ndarray, h: int, w: int) -> np.ndarray:
        """SAM2VideoPredictor.add_new_mask: resize the mask to S x S (bilinear, antialiased) and
        threshold at 0.5."""
        from .transforms import resize_image

        f = (m.astype(np.float32) > 0).astype(np.float32) if m.dtype != np.bool_ else m.astype(np.float32)
        if (h, w) != (self.size, self.size):
            f = resize_image(f[..., None], (self.size, self.size), "bilinear_antialias_float")[..., 0]
        return (f >= 0.5).astype(np.float32)

    # ---- graphs ------------------------------------------------------------------------------------
    def _per_frame_inputs(self, role: str) -> frozenset[str]:
        """The inputs of video graph ``role`` that come from the image encoder (batch 1, shared by every
        object); all others have the object batch first."""
        v = self.video
        return frozenset({"memory_attention": (v.attn_image,), "memory_encoder": (v.menc_image,),
                          "track_decoder": tuple(v.track_feature_inputs)}[role])

    def _run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run video graph ``role`` on K objects, in chunks of the graph's ``max_batch`` (a TensorRT
        profile's --max-objects) when K is larger; per-object outputs are concatenated back."""
        t0 = time.perf_counter()
        graph = self.graphs[role]
        shared = self._per_frame_inputs(role)
        k = next(int(a.shape[0]) for n, a in feeds.items() if n not in shared)
        step = graph.max_batch
        if step is None or k <= int(step):
            out = graph.run(feeds)
        else:
            step = int(step)
            parts = [graph.run({n: (a if n in shared else a[i:i + step]) for n, a in feeds.items()})
                     for i in range(0, k, step)]
            out = {n: np.concatenate([p[n] for p in parts], axis=0) for n in parts[0]}
        self.timings[role] = self.timings.get(role, 0.0) + (time.perf_counter() - t0) * 1e3
        for k, v in out.items():
            if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
                raise NumericalError(f"the {role} graph produced non-finite values in {k}",
                                     hint="the model or its inputs are broken; re-export, or check `samdeploy check`")
        return out

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        s = self.size
        img = np.asarray(Image.fromarray(rgb).resize((s, s), Image.BICUBIC), dtype=np.float32)
        return np.ascontiguousarray(img.transpose(2, 0, 1)[None])

    def _decode(self, embeddings: np.ndarray, feats: Mapping[str, np.ndarray], coords: np.ndarray,
                labels: np.ndarray, mask_input: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        """Tracking decoder on B objects. ``coords [B,N,2]`` / ``labels [B,N]`` are the user's points (N may
        be 0: SAM2 then feeds one placeholder point (0, 0, -1)); SAM2 always appends one padding point
        too (its prompt encoder pads when no box input is given, and boxes travel as points 2/3)."""
        b = embeddings.shape[0]
        pad_c, pad_l = np.zeros((b, 1, 2), np.float32), -np.ones((b, 1), np.float32)
        if coords.shape[1] == 0:  # _forward_sam_heads without points: one placeholder point (0, 0, -1)
            coords, labels = pad_c, pad_l
        v = self.video
        l = self.low_res
        feeds = {
            v.track_conditioned: np.ascontiguousarray(embeddings, dtype=np.float32),
            **{name: feats[name] for name in v.track_feature_inputs},
            v.track_point_coords: np.concatenate([coords.astype(np.float32), pad_c], axis=1),
            v.track_point_labels: np.concatenate([labels.astype(np.float32), pad_l], axis=1),
            v.track_mask_input: (mask_input if mask_input is not None else np.zeros((b, 1, l, l), np.float32)),
            v.track_has_mask_input: np.full((b,), 1.0 if mask_input is not None else 0.0, np.float32),
        }
        return self._run("track_decoder", feeds)

    def _select(self, out: dict[str, np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(iou [B], low-res logits [B,L,L] with absent objects at no_obj_score, obj_ptr [B,256], object score [B])."""
        v = self.video
        iou, low, obj, ptrs = (out[v.track_iou], out[v.track_masks], out[v.track_object_score], out[v.track_obj_ptrs])
        rows = np.arange(iou.shape[0])
        obj = obj.reshape(-1)
        if multimask:  # best of the multimask tokens; its pointer
            tokens = np.asarray(self.contract.decoder.multimask_tokens)
            pick = tokens[np.argmax(iou[:, tokens], axis=1)]
            sel_iou, sel_low, ptr = iou[rows, pick], low[rows, pick], ptrs[rows, pick]
        else:  # single-mask token (dynamic stability switch on the mask); the pointer stays token 0's
            single = self.contract.decoder.single_mask_token
            si, sl = _dynamic_single_mask(iou, low, self.contract.decoder)
            sel_iou, sel_low, ptr = si[:, 0], sl[:, 0], ptrs[:, single]
        sel_low = np.where(obj[:, None, None] > 0, sel_low, np.float32(v.no_obj_score)).astype(np.float32)
        return sel_iou.astype(np.float32), sel_low, ptr.astype(np.float32), obj.astype(np.float32)

    def _use_multimask(self, n_points: int) -> bool:
        v = self.video
        return v.multimask_min_pt_num <= n_points <= v.multimask_max_pt_num

    # ---- memory ------------------------------------------------------------------------------------
    def _store(self, feats: np.ndarray) -> np.ndarray:
        return to_bfloat16_bits(feats) if self.memory_storage == "bfloat16" else np.array(feats, dtype=np.float32)

    def _load(self, stored: np.ndarray) -> np.ndarray:
        return from_bfloat16_bits(stored) if stored.dtype == np.uint16 else stored

    def _max_ptrs(self) -> int:
        m = int(self.video.max_obj_ptrs_in_encoder)
        return min(self.num_frames, m) if self.num_frames is not None else m

    def _memory_of(self, obj: _Object, f: int) -> tuple[list[tuple[np.ndarray, int]], list[tuple[np.ndarray, float]]]:
        """SAM2Base._prepare_memory_conditioned_features' selection for frame ``f`` (forward tracking):
        ([(maskmem [T,64] float32, tpos index)], [(obj_ptr [256], signed distance / t_diff_max)])."""
        v = self.video
        n_mem = int(v.num_maskmem)
        mems = [(self._load(m.maskmem), n_mem - 1) for m in obj.cond.values()]  # t_pos 0 -> index num_maskmem-1
        stride = int(v.memory_temporal_stride_for_eval)
        for t_rel in range(n_mem - 1, 0, -1):  # the previous frames, oldest first (t_pos = num_maskmem - t_rel)
            prev = f - 1 if t_rel == 1 else ((f - 2) // stride) * stride - (t_rel - 2) * stride
            m = obj.recent.get(prev)
            if m is not None and m.maskmem is not None:
                mems.append((self._load(m.maskmem), t_rel - 1))
        max_ptrs = self._max_ptrs()
        t_diff_max = max(max_ptrs - 1, 1)
        ptrs = []
        for t, m in obj.cond.items():
            if t <= f or not v.only_obj_ptrs_in_the_past_for_eval:
                d = (f - t) if v.use_signed_tpos_enc_to_obj_ptrs else abs(f - t)
                ptrs.append((m.obj_ptr, d / t_diff_max))
        for t_diff in range(1, max_ptrs):
            t = f - t_diff
            if t < 0:
                break
            m = obj.recent.get(t)
            if m is not None:
                ptrs.append((m.obj_ptr, t_diff / t_diff_max))
        return mems, ptrs

    def _condition(self, objs: list[_Object], f: int, emb: np.ndarray) -> np.ndarray:
        """memory_attention for the tracked objects, padded to the longest bank -> [K,256,h,w]."""
        v = self.video
        banks = [self._memory_of(o, f) for o in objs]
        k = len(objs)
        r = max(len(m) for m, _ in banks)
        p = max(len(q) for _, q in banks)
        limits = getattr(self.graphs["memory_attention"], "input_limits", None)
        if limits:  # a TensorRT profile: pad up to its minimum (add_object keeps banks within its maximum)
            r, p = max(r, limits[v.attn_memory][0][1]), max(p, limits[v.attn_obj_ptrs][0][1])
        t, d = int(v.tokens_per_frame), int(v.mem_dim)
        memory = np.zeros((k, r, t, d), np.float32)
        mtime = np.zeros((k, r, int(v.num_maskmem)), np.float32)
        mvalid = np.zeros((k, r), np.float32)
        ptrs = np.zeros((k, p, 256), np.float32)
        ptpos = np.zeros((k, p), np.float32)
        pvalid = np.zeros((k, p), np.float32)
        for i, (mems, qs) in enumerate(banks):
            for j, (feat, idx) in enumerate(mems):
                memory[i, j], mtime[i, j, idx], mvalid[i, j] = feat, 1.0, 1.0
            for j, (ptr, pos) in enumerate(qs):
                ptrs[i, j], ptpos[i, j], pvalid[i, j] = ptr, pos, 1.0
        out = self._run("memory_attention", {
            v.attn_image: emb, v.attn_memory: memory, v.attn_memory_time: mtime, v.attn_memory_valid: mvalid,
            v.attn_obj_ptrs: ptrs, v.attn_obj_ptr_tpos: ptpos, v.attn_obj_ptr_valid: pvalid,
        })
        return out[v.attn_output]

    # ---- one frame ---------------------------------------------------------------------------------
    def track(self, frame: np.ndarray, image_format: str = "RGB", *, return_logits: bool = False) -> TrackResult:
        """Process the next frame: prompted objects get a conditioning frame, the others are tracked
        from memory. Returns every object's mask on this frame."""
        if image_format not in IMAGE_FORMATS:
            raise InputError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        rgb = to_rgb_uint8(frame, "frame")
        if image_format == "BGR":
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        h, w = rgb.shape[:2]
        if self._frame_hw is not None and (h, w) != self._frame_hw:
            raise InputError(f"frame {self.frame_index} is {h}x{w} but the video is {self._frame_hw[0]}x{self._frame_hw[1]}",
                             hint="call reset() before tracking a stream with another frame size")
        self._frame_hw = (h, w)
        f = self.frame_index
        self.timings = {}
        t_start = time.perf_counter()
        results: dict[int, tuple[np.ndarray, float, float, bool]] = {}
        prompted = [o for o in self._objects.values() if o.pending is not None]
        tracked = [o for o in self._objects.values() if o.pending is None and (o.cond or o.recent)]
        if prompted or tracked:
            x = self._preprocess(rgb)
            enc = self.pair.encoder.run({ENCODER_INPUT: x})
            self.timings["encoder"] = (time.perf_counter() - t_start) * 1e3
            emb = enc[self.contract.encoder.outputs[0].name]
            feats = {n: enc[n] for n in self.video.track_feature_inputs}
            new_mem: list[tuple[_Object, np.ndarray, np.ndarray, float, bool]] = []  # obj, low, ptr, score, binarize
            for obj, (iou, low, ptr, score) in self._decode_prompted(prompted, emb, feats).items():
                results[obj.obj_id] = (low, score, iou, True)
                new_mem.append((obj, low, ptr, score, True))
            if tracked:
                cond_emb = self._condition(tracked, f, emb)
                out = self._decode(cond_emb, feats, np.zeros((len(tracked), 0, 2), np.float32),
                                   np.zeros((len(tracked), 0), np.float32), None)
                iou, low, ptr, score = self._select(out, multimask=bool(self.video.multimask_output_for_tracking)
                                                    and self._use_multimask(0))
                for i, obj in enumerate(tracked):
                    lo = low[i]
                    results[obj.obj_id] = (lo, float(score[i]), float(iou[i]), False)
                    new_mem.append((obj, lo, ptr[i], float(score[i]), False))
            self._encode_memories(new_mem, emb, f)
        outs = []
        for oid, (low, score, iou, was_prompted) in results.items():
            lo = low[None]
            if self.fill_hole_area > 0:
                lo = fill_holes(lo, self.fill_hole_area)
            mask = resize_masks_direct(lo, (h, w), threshold=0.0)[0]
            outs.append(TrackedObject(oid, mask, float(score), float(iou), bool(score > 0), _mask_box(mask),
                                      was_prompted, lo[0] if return_logits else None))
        self.timings["total"] = (time.perf_counter() - t_start) * 1e3
        self.frame_index += 1
        return TrackResult(f, outs, dict(self.timings), self.describe())

    def _decode_prompted(self, prompted: list[_Object], emb: np.ndarray, feats: Mapping[str, np.ndarray]
                         ) -> dict[_Object, tuple[float, np.ndarray, np.ndarray, float]]:
        """Conditioning frames: the image-predictor path on the plain features (``directly_add_no_mem_embed``),
        or a mask prompt used as the output (``_use_mask_as_output``)."""
        out: dict[_Object, tuple[float, np.ndarray, np.ndarray, float]] = {}
        groups: dict[int, list[_Object]] = {}
        for o in prompted:
            if o.pending.mask is None:
                groups.setdefault(len(o.pending.labels), []).append(o)
        for n, objs in groups.items():
            coords = np.stack([o.pending.coords for o in objs])
            labels = np.stack([o.pending.labels for o in objs])
            res = self._decode(np.repeat(emb, len(objs), axis=0), feats, coords, labels, None)
            iou, low, ptr, score = self._select(res, multimask=self._use_multimask(n))
            for i, o in enumerate(objs):
                out[o] = (float(iou[i]), low[i], ptr[i], float(score[i]))
        masks = [o for o in prompted if o.pending.mask is not None]
        if masks:
            out.update(self._mask_as_output(masks, emb, feats))
        for o in prompted:
            o.pending = None
        return out

    def _mask_as_output(self, objs: list[_Object], emb: np.ndarray, feats: Mapping[str, np.ndarray]):
        v, c = self.video, self._constants
        s, l = self.size, self.low_res
        m = np.stack([o.pending.mask for o in objs])  # [K,S,S] 0/1
        high = m * np.float32(v.mask_out_scale) + np.float32(v.mask_out_bias)
        from .transforms import resize_image

        low = np.stack([resize_image(x[..., None], (l, l), "bilinear_antialias_float")[..., 0] for x in high])
        # mask_downsample (Conv 4x4 stride 4) of the S x S mask -> the decoder's mask input
        blocks = m.reshape(len(objs), l, s // l, l, s // l)
        kern = c["mask_downsample_weight"].reshape(s // l, s // l) if s // l == 4 else None
        if kern is None:
            raise ContractError(f"mask prompts need S/low_res = 4 (got {s}/{l})")
        mask_in = (np.einsum("kaibj,ij->kab", blocks, kern) + c["mask_downsample_bias"][0]).astype(np.float32)[:, None]
        raw = emb - c["no_mem_embed"].reshape(1, -1, 1, 1)
        res = self._decode(np.repeat(raw, len(objs), axis=0), feats, np.zeros((len(objs), 0, 2), np.float32),
                           np.zeros((len(objs), 0), np.float32), mask_in)
        _, _, ptr, _ = self._select(res, multimask=False)
        appear = m.reshape(len(objs), -1).max(axis=1) > 0
        score = np.where(appear, v.mask_out_scale + v.mask_out_bias, v.mask_out_bias).astype(np.float32)
        ptr = np.where(appear[:, None], ptr, c["no_obj_ptr"][None]).astype(np.float32)
        return {o: (1.0, low[i].astype(np.float32), ptr[i], float(score[i])) for i, o in enumerate(objs)}

    def _encode_memories(self, new_mem, emb: np.ndarray, f: int) -> None:
        if not new_mem:
            return
        v = self.video
        low = np.stack([lo for _, lo, _, _, _ in new_mem])[:, None]
        if self.fill_hole_area > 0:  # conditioning frames are encoded from the stored (hole-filled) masks
            filled = fill_holes(low[:, 0], self.fill_hole_area)[:, None]
            low = np.where(np.array([b for *_, b in new_mem])[:, None, None, None], filled, low)
        out = self._run("memory_encoder", {
            v.menc_image: emb,
            v.menc_mask: np.ascontiguousarray(low, dtype=np.float32),
            v.menc_object_score: np.array([[s] for _, _, _, s, _ in new_mem], np.float32),
            v.menc_binarize: np.array([1.0 if b and v.binarize_mask_from_pts_for_mem_enc else 0.0
                                       for *_, b in new_mem], np.float32),
        })[v.menc_output]
        # the next frame reads masks back to ((f-1)//stride)*stride - (num_maskmem-3)*stride
        keep_mem = max(int(v.num_maskmem) - 2, 0) * int(v.memory_temporal_stride_for_eval) + 1
        keep_ptr = max(self._max_ptrs() - 1, keep_mem)
        for i, (obj, _, ptr, _, is_cond) in enumerate(new_mem):
            mem = _Memory(self._store(out[i]), np.array(ptr, dtype=np.float32))
            if is_cond:
                obj.cond[f] = mem
                obj.recent.pop(f, None)
            else:
                obj.recent[f] = mem
            # keep only what the next frames can read: masks of the last num_maskmem-1 frames, pointers
            # of the last max_obj_ptrs-1 frames (the memory stays flat however long the video is)
            for t in list(obj.recent):
                if t <= f - keep_ptr:
                    del obj.recent[t]
                elif t <= f - keep_mem:
                    obj.recent[t].maskmem = None

    # ---- whole videos ------------------------------------------------------------------------------
    def track_video(
        self,
        frames: Iterable[np.ndarray],
        prompts: Optional[Mapping[int, Mapping[int, Mapping[str, Any]]]] = None,
        remove: Optional[Mapping[int, Iterable[int]]] = None,
        image_format: str = "RGB",
        return_logits: bool = False,
    ) -> Iterator[TrackResult]:
        """Track a whole video from frame 0: ``prompts = {frame: {obj_id: {"points": .., "labels": ..,
        "box": .., "mask": ..}}}``, ``remove = {frame: [obj_id, ...]}`` (removed before that frame)."""
        prompts = dict(prompts or {})
        remove = dict(remove or {})
        for f, per in prompts.items():
            if not isinstance(per, Mapping):
                raise InputError(f"prompts[{f}] must map object ids to prompts, got {type(per).__name__}")
            for oid, p in per.items():
                self._check_id(oid)
                if not isinstance(p, Mapping) or not set(p) <= {"points", "labels", "box", "mask"}:
                    raise InputError(f"prompt for object {oid} on frame {f} must be a dict with points/labels/box/mask")
        self.reset()
        for i, frame in enumerate(frames):
            for oid in remove.get(i, ()):
                self.remove_object(oid)
            if i in prompts:
                rgb = np.asarray(frame)
                hw = rgb.shape[:2]
                for oid, p in prompts[i].items():
                    self.add_object(oid, frame_size=hw, **p)
            yield self.track(frame, image_format=image_format, return_logits=return_logits)
        late = [f for f in prompts if f >= self.frame_index]
        if late:
            raise InputError(f"prompts given for frame(s) {sorted(late)} but the video has {self.frame_index} frames")

    # ---- bookkeeping -------------------------------------------------------------------------------
    def memory_footprint(self) -> dict[str, int]:
        """Bytes held per kind of state (the memory bank is bounded: see the module docstring)."""
        maskmem = sum(m.maskmem.nbytes for o in self._objects.values() for m in [*o.cond.values(), *o.recent.values()]
                      if m.maskmem is not None)
        ptrs = sum(m.obj_ptr.nbytes for o in self._objects.values() for m in [*o.cond.values(), *o.recent.values()])
        frames = sum(len(o.cond) + len(o.recent) for o in self._objects.values())
        return {"maskmem_bytes": maskmem, "obj_ptr_bytes": ptrs, "frames_held": frames}

    def describe(self) -> dict[str, Any]:
        d = self.pair.describe()
        d["video_graphs"] = {r: os.path.basename(p) for r, p in getattr(self, "_paths", {}).items()}
        d["memory_storage"] = self.memory_storage
        return d

    def close(self) -> None:
        for g in getattr(self, "graphs", {}).values():
            g.close()
        if getattr(self, "pair", None) is not None:
            self.pair.close()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
