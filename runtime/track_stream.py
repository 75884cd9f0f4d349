"""Video object tracking over a file / camera / RTSP stream with the SAM2 :class:`~samdeploy.runtime.Tracker` (no torch).

    from samdeploy.runtime import Tracker
    from samdeploy.runtime.track_stream import TrackPrompts, run_track
    prompts = TrackPrompts({0: {1: {"box": [40, 60, 200, 220]}}, 20: {2: {"points": [[250, 200]]}}}, remove={40: [2]})
    with Tracker("out/sam2.1_t", num_frames=64) as tr:
        stats = run_track(tr, "clip.mp4", prompts, on_result=lambda f: print(f.index, [o.obj_id for o in f.objects]))

Frames come through the same capture thread and bounded queue as :func:`~samdeploy.runtime.stream.run_stream`
(:class:`~samdeploy.runtime.stream.FrameFeed`): files are processed frame by frame, live sources (camera,
URL, any iterable) keep the NEWEST frame when the model is slower than the source. Prompt and removal frames
are *source* frame indices; when frames are dropped, an event is applied on the first processed frame at or
after its index (removals of a frame before its prompts, as ``Tracker.track_video`` does).

Prompts per frame and object (``TrackPrompts``, also read from JSON with :meth:`TrackPrompts.from_json`)::

    {"version": 1,                                          # optional
     "frames": {"0":  {"1": {"box": [x0, y0, x1, y1]},
                       "2": {"points": [[x, y], [x, y]], "labels": [1, 0]}},   # labels default to 1
                "20": {"3": {"box": [...], "points": [[x, y]]},                # a box with clicks
                       "4": {"mask": {"size": [h, w], "counts": "..."}}}},     # COCO RLE, or "mask.png"
     "remove": {"40": [2]}}                                 # removed before frame 40 is tracked

Everything is validated before a frame is tracked (typed :class:`~samdeploy.errors.InputError` naming the
frame and object): numbers finite in float32, boxes not inverted, labels 0/1, a removal only of an object
prompted on an earlier frame and not removed since, coordinates inside the frame (on the first frame).
Results go to ``on_result`` as :class:`TrackFrame` (``to_json()`` = one JSON line, masks as COCO RLE);
:func:`annotate_tracks` draws a frame with one colour per object id. Nothing is accumulated per frame.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from ..errors import InputError, MissingFileError, SamDeployError
from .stream import FrameFeed, LoopStats

__all__ = ["TrackPrompts", "TrackFrame", "TrackStats", "run_track", "annotate_tracks", "load_mask"]

MAX_INDEX = 2**31 - 1  # frame indices and object ids (the Tracker's MAX_OBJECT_ID)
PROMPT_KEYS = ("points", "labels", "box", "mask")
_JSON_HINT = ('the prompts file is {"frames": {"<frame>": {"<object id>": {"box": [x0, y0, x1, y1]} | '
              '{"points": [[x, y], ...], "labels": [1, ...]} | {"mask": <COCO RLE or PNG path>}}}, '
              '"remove": {"<frame>": [<object id>, ...]}}')


def with_context(exc: SamDeployError, prefix: str) -> SamDeployError:
    """The same typed error with ``prefix: `` in front of its message (the hint kept)."""
    msg = str(exc)
    if exc.hint and msg.endswith(f"\n  hint: {exc.hint}"):
        msg = msg[: -len(f"\n  hint: {exc.hint}")]
    try:
        new = type(exc)(f"{prefix}: {msg}", hint=exc.hint)
    except TypeError:  # a subclass with another signature
        new = InputError(f"{prefix}: {msg}", hint=exc.hint)
    return new


def _index(key: Any, what: str, where: str) -> int:
    """A frame index / object id from an int or a decimal string ("0", "20")."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        v = int(key)
    elif isinstance(key, str) and key.strip().isdigit() and key.strip().isascii():
        v = int(key.strip())
    else:
        raise InputError(f"{where}: {what} {key!r} is not an integer >= 0", hint=_JSON_HINT)
    if not 0 <= v <= MAX_INDEX:
        raise InputError(f"{where}: {what} {v} is outside 0..{MAX_INDEX}", hint=_JSON_HINT)
    return v


def _numbers(x: Any, what: str, where: str) -> np.ndarray:
    """``x`` as float64, finite after the cast to float32 (what the graphs receive)."""
    if isinstance(x, (str, bytes, Mapping)) or x is None:
        raise InputError(f"{where}: {what} must be numbers, got {_preview(x)}", hint=_JSON_HINT)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: {what} must be numbers, got {_preview(x)}", hint=_JSON_HINT) from None
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bool(np.isfinite(arr.astype(np.float32)).all())
    if not finite:
        raise InputError(f"{where}: {what} contains NaN or inf (or values too large for float32): {_preview(x)}",
                         hint="coordinates are (x, y) pixels of the video frame")
    return arr


def load_mask(spec: Any, where: str, base_dir: Optional[str | os.PathLike] = None) -> np.ndarray:
    """A mask prompt -> HxW bool: a COCO RLE dict, a 2-D list / array, or an image / ``.npy`` file path
    (relative paths against ``base_dir``; nonzero pixels are the object)."""
    if isinstance(spec, Mapping):
        from .rle import rle_to_mask

        try:
            return rle_to_mask(dict(spec))
        except InputError as exc:
            raise with_context(exc, f"{where}: mask") from None
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        if not path.exists():
            raise MissingFileError(f"{where}: mask file not found: {path}",
                                   hint="a mask prompt is a PNG (nonzero = object), a .npy array or a COCO RLE")
        if path.suffix.lower() == ".npy":
            try:
                m = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"{where}: cannot read mask {path} ({exc})") from None
        else:
            from ..images import load_image

            try:
                m = load_image(path).max(axis=2)
            except SamDeployError as exc:
                raise with_context(exc, f"{where}: mask") from None
    else:
        m = np.asarray(spec) if isinstance(spec, (list, tuple, np.ndarray)) else None
    if m is None or m.ndim != 2 or not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.number)):
        raise InputError(f"{where}: mask must be a 2-D array, a COCO RLE or an image file, got {_preview(spec)}",
                         hint=_JSON_HINT)
    with np.errstate(invalid="ignore"):
        if np.issubdtype(m.dtype, np.floating) and not np.isfinite(m).all():
            raise InputError(f"{where}: mask contains NaN or inf")
    return m.astype(bool) if m.dtype == np.bool_ else m > 0


def _prompt(p: Any, where: str, base_dir: Optional[str | os.PathLike]) -> dict[str, Any]:
    """One object's prompt on one frame -> {"points": [N,2], "labels": [N]} and/or {"box": [4]}, or {"mask": HxW}."""
    if not isinstance(p, Mapping):
        raise InputError(f"{where}: the prompt must be an object with points/labels/box/mask, got {_preview(p)}",
                         hint=_JSON_HINT)
    unknown = [k for k in p if k not in PROMPT_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown prompt key(s) {unknown}; expected {list(PROMPT_KEYS)}", hint=_JSON_HINT)
    out: dict[str, Any] = {}
    if p.get("mask") is not None:
        if any(p.get(k) is not None for k in ("points", "labels", "box")):
            raise InputError(f"{where}: give either a mask or points/box, not both")
        out["mask"] = load_mask(p["mask"], where, base_dir)
        return out
    if p.get("points") is not None:
        pts = _numbers(p["points"], "points", where)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise InputError(f"{where}: points must be a list of [x, y] pairs, got {_preview(p['points'])}",
                             hint=_JSON_HINT)
        if p.get("labels") is None:
            labels = np.ones(len(pts), np.float64)
        else:
            labels = _numbers(p["labels"], "labels", where)
            if labels.shape != (len(pts),):
                raise InputError(f"{where}: {len(pts)} point(s) but labels {_preview(p['labels'])}",
                                 hint="give one label per point: 1 = foreground, 0 = background")
            if not np.isin(labels, (0.0, 1.0)).all():
                raise InputError(f"{where}: labels must be 1 (foreground) or 0 (background), got {_preview(p['labels'])}")
        out["points"], out["labels"] = pts, labels
    elif p.get("labels") is not None:
        raise InputError(f"{where}: labels without points", hint="give points [[x, y], ...] with their labels")
    if p.get("box") is not None:
        box = _numbers(p["box"], "box", where)
        if box.shape != (4,):
            raise InputError(f"{where}: box must be [x0, y0, x1, y1], got {_preview(p['box'])}", hint=_JSON_HINT)
        if box[2] < box[0] or box[3] < box[1]:
            raise InputError(f"{where}: box {box.tolist()} is inverted (x1 < x0 or y1 < y0)",
                             hint="boxes are [x0, y0, x1, y1] with the top-left corner first")
        out["box"] = box
    if not out:
        raise InputError(f"{where}: empty prompt", hint="give points, a box or a mask")
    return out


class TrackPrompts:
    """Prompts per frame and object id, and removals per frame (see the module docstring).

    ``frames = {frame: {obj_id: {"points": [[x, y], ...], "labels": [...], "box": [x0, y0, x1, y1]} |
    {"mask": ...}}}``, ``remove = {frame: [obj_id, ...]}`` (keys may be ints or decimal strings).
    ``where`` names the origin in error messages (e.g. the JSON file)."""

    def __init__(self, frames: Optional[Mapping[Any, Any]] = None, remove: Optional[Mapping[Any, Any]] = None, *,
                 where: str = "prompts", base_dir: Optional[str | os.PathLike] = None) -> None:
        self.where = where
        self.frames: dict[int, dict[int, dict[str, Any]]] = {}
        self.remove: dict[int, list[int]] = {}
        if frames is not None and not isinstance(frames, Mapping):
            raise InputError(f"{where}: frames must map frame indices to objects, got {_preview(frames)}",
                             hint=_JSON_HINT)
        if remove is not None and not isinstance(remove, Mapping):
            raise InputError(f"{where}: remove must map frame indices to lists of object ids, got {_preview(remove)}",
                             hint=_JSON_HINT)
        for fk, per in (frames or {}).items():
            f = _index(fk, "frame", where)
            if f in self.frames:
                raise InputError(f"{where}: frame {f} is given twice", hint=_JSON_HINT)
            if not isinstance(per, Mapping) or not per:
                raise InputError(f"{where}: frame {f} must map object ids to prompts, got {_preview(per)}",
                                 hint=_JSON_HINT)
            objs: dict[int, dict[str, Any]] = {}
            for ok, p in per.items():
                oid = _index(ok, f"object id (frame {f})", where)
                if oid in objs:
                    raise InputError(f"{where}: object {oid} is given twice on frame {f}")
                objs[oid] = _prompt(p, f"{where}: frame {f}, object {oid}", base_dir)
            self.frames[f] = objs
        for fk, ids in (remove or {}).items():
            f = _index(fk, "removal frame", where)
            if f in self.remove:
                raise InputError(f"{where}: removal frame {f} is given twice")
            if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, (list, tuple)) or not ids:
                raise InputError(f"{where}: remove[{f}] must be a list of object ids, got {_preview(ids)}",
                                 hint=_JSON_HINT)
            got = [_index(i, f"object id (removal on frame {f})", where) for i in ids]
            if len(set(got)) != len(got):
                raise InputError(f"{where}: remove[{f}] lists an object twice: {got}")
            self.remove[f] = got
        self.frames = dict(sorted(self.frames.items()))
        self.remove = dict(sorted(self.remove.items()))
        self.max_concurrent = self._check_timeline()

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Any, where: str = "prompts", base_dir: Optional[str | os.PathLike] = None) -> "TrackPrompts":
        if not isinstance(doc, Mapping):
            raise InputError(f"{where}: expected a JSON object with \"frames\" (and \"remove\"), got {_preview(doc)}",
                             hint=_JSON_HINT)
        unknown = [k for k in doc if k not in ("version", "frames", "remove")]
        if unknown:
            raise InputError(f"{where}: unknown key(s) {unknown}; expected \"frames\", \"remove\", \"version\"",
                             hint=_JSON_HINT)
        if doc.get("version", 1) != 1:
            raise InputError(f"{where}: version {doc.get('version')!r} is not supported (this samdeploy reads 1)")
        if "frames" not in doc:
            raise InputError(f"{where}: no \"frames\"", hint=_JSON_HINT)
        return cls(doc["frames"], doc.get("remove"), where=where, base_dir=base_dir)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TrackPrompts":
        """Read a prompts file (schema in the module docstring); mask file paths are relative to it."""
        path = Path(path)
        if not path.exists():
            raise MissingFileError(f"prompts file not found: {path}", hint=_JSON_HINT)
        if path.is_dir():
            raise InputError(f"prompts file {path} is a directory", hint=_JSON_HINT)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read prompts file {path}: {exc}") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{path} is not valid JSON: {exc}", hint=_JSON_HINT) from None
        return cls.from_dict(doc, where=str(path), base_dir=path.parent)

    def merged(self, other: "TrackPrompts") -> "TrackPrompts":
        """Both sets of prompts; an object prompted on the same frame by both is an error."""
        frames = {f: dict(per) for f, per in self.frames.items()}
        for f, per in other.frames.items():
            for oid, p in per.items():
                if oid in frames.get(f, {}):
                    raise InputError(f"object {oid} on frame {f} is prompted by both {self.where} and {other.where}",
                                     hint="give each object's prompt on a frame once")
                frames.setdefault(f, {})[oid] = p
        remove = {f: list(ids) for f, ids in self.remove.items()}
        for f, ids in other.remove.items():
            both = set(ids) & set(remove.get(f, []))
            if both:
                raise InputError(f"object(s) {sorted(both)} removed on frame {f} by both {self.where} and {other.where}")
            remove.setdefault(f, []).extend(ids)
        out = TrackPrompts.__new__(TrackPrompts)
        out.where = f"{self.where} + {other.where}"
        out.frames = dict(sorted(frames.items()))
        out.remove = dict(sorted(remove.items()))
        out.max_concurrent = out._check_timeline()
        return out

    # ---- checks -------------------------------------------------------------------------------------
    def _check_timeline(self) -> int:
        """Removals only of tracked objects; returns the most objects tracked at once."""
        active: set[int] = set()
        most = 0
        for f in self.frame_indices:
            for oid in self.remove.get(f, ()):
                if oid not in active:
                    raise InputError(
                        f"{self.where}: object {oid} is removed on frame {f} but is not tracked then "
                        f"(tracked before frame {f}: {sorted(active)})",
                        hint="remove an object only after the frame it is first prompted on (removals of a frame "
                        "happen before its prompts)")
                active.discard(oid)
            active.update(self.frames.get(f, {}))
            most = max(most, len(active))
        return most

    def check_frame(self, hw: tuple[int, int], allow_outside: bool = False) -> None:
        """Coordinates inside an ``(H, W)`` frame (the Tracker's own checks), mask prompts of that size."""
        from .prompts import check_boxes, check_points

        h, w = int(hw[0]), int(hw[1])
        for f, per in self.frames.items():
            for oid, p in per.items():
                where = f"{self.where}: frame {f}, object {oid}"
                try:
                    if "mask" in p:
                        if p["mask"].shape != (h, w):
                            raise InputError(f"mask is {p['mask'].shape[0]}x{p['mask'].shape[1]} (HxW) but the video "
                                             f"frames are {h}x{w}", hint="a mask prompt has the frame's size")
                        continue
                    if "points" in p:
                        check_points(p["points"], p["labels"], batched=False, image_size=(h, w), allow_outside=allow_outside)
                    if "box" in p:
                        check_boxes(p["box"], batched=False, image_size=(h, w), allow_outside=allow_outside)
                except InputError as exc:
                    if "outside" in str(exc):  # the Predictor's hint names its own option
                        exc = InputError(str(exc).split("\n  hint:")[0], hint=(
                            "coordinates are (x, y) pixels of the video frame" + ("" if allow_outside else
                            "; allow_outside_points=True (samdeploy track --allow-outside-points) accepts "
                            "clicks a little outside the frame, as SAM does")))
                    raise with_context(exc, where) from None

    def check_length(self, frame_count: int, source: str = "the video") -> None:
        """Every prompt / removal frame exists in a video of ``frame_count`` frames."""
        late = [f for f in self.frame_indices if f >= frame_count]
        if late:
            raise InputError(f"{self.where}: prompts or removals on frame(s) {late} but {source} has "
                             f"{frame_count} frames (0..{frame_count - 1})", hint="frame indices start at 0")

    def check_objects(self, max_objects: Optional[int]) -> None:
        if max_objects is not None and self.max_concurrent > max_objects:
            raise InputError(f"{self.where}: {self.max_concurrent} objects are tracked at once but max_objects is "
                             f"{max_objects}", hint="raise --max-objects (Tracker max_objects), or remove objects earlier")

    # ---- views --------------------------------------------------------------------------------------
    @property
    def frame_indices(self) -> list[int]:
        """Frames with prompts or removals, in order."""
        return sorted(set(self.frames) | set(self.remove))

    @property
    def object_ids(self) -> list[int]:
        return sorted({oid for per in self.frames.values() for oid in per})

    def __len__(self) -> int:
        return sum(len(per) for per in self.frames.values())

    def describe(self) -> str:
        kinds = sorted({k for per in self.frames.values() for p in per.values() for k in p if k != "labels"})
        text = (f"{len(self.object_ids)} object(s) {self.object_ids}, {len(self)} prompt(s) ({', '.join(kinds)}) "
                f"on frame(s) {sorted(self.frames)}")
        if self.remove:
            text += f"; removals on frame(s) {sorted(self.remove)}"
        return text


def _preview(x: Any, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def _finite_or_none(v: Any, digits: int = 4) -> Optional[float]:
    v = float(v)
    return round(v, digits) if np.isfinite(v) else None


def _prompt_json(p: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "points" in p:
        out["points"] = np.round(p["points"], 2).tolist()
        out["labels"] = [int(v) for v in p["labels"]]
    if "box" in p:
        out["box"] = np.round(p["box"], 2).tolist()
    if "mask" in p:
        out["mask_area"] = int(np.count_nonzero(p["mask"]))
    return out


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


# ---- per-frame results ------------------------------------------------------------------------------
@dataclass
class TrackFrame:
    index: int  # source frame index (counts every frame read, dropped or not)
    step: int  # the Tracker's frame index (= index unless live frames were dropped)
    t_ms: float
    image: np.ndarray  # HxWx3 RGB
    objects: list[Any]  # TrackedObject per tracked object, by id
    prompts: dict[int, dict[str, Any]]  # prompts applied on this frame, per object id
    removed: list[int]  # objects removed before this frame was tracked
    timings_ms: dict[str, float]

    def to_json(self, rle: bool = True) -> dict[str, Any]:
        """One JSON line: per object its id, object-score logit, present, IoU prediction, area, bbox XYWH
        ([0, 0, 0, 0] when empty), prompted, the prompt applied here and the mask as COCO RLE."""
        objs = []
        for o in self.objects:
            mask = np.asarray(o.mask, dtype=bool)
            area = int(np.count_nonzero(mask))
            box = _mask_box(mask) if area else None  # the RLE's box (the Tracker's TrackedObject.box)
            d: dict[str, Any] = {
                "id": int(o.obj_id),
                "score": _finite_or_none(o.score),
                "present": bool(o.present),
                "iou": _finite_or_none(o.iou),
                "area": area,
                "bbox": [int(box[0]), int(box[1]), int(box[2]) - int(box[0]) + 1, int(box[3]) - int(box[1]) + 1]
                if box is not None else [0, 0, 0, 0],
                "prompted": bool(o.prompted),
            }
            if o.obj_id in self.prompts:
                d["prompt"] = _prompt_json(self.prompts[o.obj_id])
            if rle:
                from .rle import mask_to_rle

                d["segmentation"] = mask_to_rle(mask)
            objs.append(d)
        out: dict[str, Any] = {"frame": self.index, "step": self.step, "t_ms": round(self.t_ms, 2), "objects": objs}
        if self.removed:
            out["removed"] = list(self.removed)
        out["timings_ms"] = {k: round(float(v), 2) for k, v in self.timings_ms.items()}
        return out


def annotate_tracks(frame: TrackFrame, alpha: float = 0.5) -> np.ndarray:
    """The frame with each present object's mask tinted in its id's colour, captioned ``#id score``
    (the object-score logit), and the prompts applied on this frame drawn."""
    from .overlay import draw_overlay, id_colours

    shown = [o for o in frame.objects if o.present and np.any(o.mask)]
    pts, labels, boxes = [], [], []
    for p in frame.prompts.values():
        if "points" in p:
            pts.extend(np.asarray(p["points"], np.float64).reshape(-1, 2).tolist())
            labels.extend(np.asarray(p["labels"]).reshape(-1).tolist())
        if "box" in p:
            boxes.append(np.asarray(p["box"], np.float64).tolist())
    h, w = frame.image.shape[:2]
    return draw_overlay(
        frame.image,
        np.stack([np.asarray(o.mask, bool) for o in shown]) if shown else None,
        points=np.asarray(pts, np.float32).reshape(-1, 2) if pts else None,
        labels=np.asarray(labels, np.float32) if pts else None,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4) if boxes else None,
        captions=[f"#{o.obj_id} {o.score:+.1f}" for o in shown],
        alpha=alpha,
        colours=id_colours([o.obj_id for o in shown]) if shown else None,
    )


# ---- the loop -----------------------------------------------------------------------------------------
@dataclass
class TrackStats(LoopStats):
    objects: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> frames tracked/present, first/last frame
    memory: dict[str, int] = field(default_factory=dict)  # Tracker.memory_footprint() after the last frame
    memory_peak_bytes: int = 0  # most tracker state (mask memories + object pointers) held on any frame
    events_not_reached: list[int] = field(default_factory=list)  # prompt/removal frames after the run stopped

    def to_dict(self) -> dict[str, Any]:
        d = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        d["objects"] = {str(k): v for k, v in sorted(self.objects.items())}
        return d


def _object_stats() -> dict[str, Any]:
    return {"frames_tracked": 0, "frames_present": 0, "first_frame": None, "last_present": None,
            "prompted_frames": 0, "removed_at": None}


def run_track(
    tracker: Any,
    source: Any,
    prompts: TrackPrompts | Mapping[Any, Any],
    *,
    remove: Optional[Mapping[Any, Any]] = None,
    drop: Optional[bool] = None,
    queue_size: int = 1,
    max_frames: Optional[int] = None,
    on_result: Optional[Callable[[TrackFrame], None]] = None,
    stop: Optional[threading.Event] = None,
) -> TrackStats:
    """Track ``prompts`` through ``source`` (video path, camera index, URL, or any iterable of HxWx3 RGB
    frames) with a :class:`~samdeploy.runtime.Tracker` (reset first: the run starts at frame 0).

    ``prompts``: a :class:`TrackPrompts`, or its ``frames`` mapping with ``remove``. ``drop``: None = drop
    stale frames for live sources (camera, URL, iterables), never for files. ``max_frames``: stop after
    this many processed frames. ``on_result`` gets each :class:`TrackFrame` (do not keep them all).
    Set ``stop`` to end early. Prompt frames the source never reached raise InputError (not when the run
    was stopped by ``max_frames`` / ``stop``: they are listed in ``events_not_reached``)."""
    if not isinstance(prompts, TrackPrompts):
        prompts = TrackPrompts(prompts, remove)
    elif remove:
        raise InputError("pass removals inside the TrackPrompts, not as remove=")
    if not len(prompts):
        raise InputError("no prompt given", hint="prompt at least one object (a box, points or a mask) on some frame")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):
        raise InputError(f"max_frames must be an integer >= 1 (got {max_frames!r})")
    prompts.check_objects(getattr(tracker, "max_objects", None))
    allow_outside = bool(getattr(tracker, "allow_outside_points", False))
    feed = FrameFeed(source, drop=drop, queue_size=queue_size, stop=stop)
    info = feed.info
    stats = TrackStats(source=info.description, live=info.live, drop=feed.drop, source_fps=info.fps)
    schedule = prompts.frame_indices
    nxt = 0
    last_index = -1
    model_ms = latency_ms = 0.0
    tracker.reset()
    t_start = time.perf_counter()
    with feed:
        while max_frames is None or stats.frames_processed < max_frames:
            frame = feed.get()
            if frame is None:
                break
            t_got = time.perf_counter()
            hw = frame.image.shape[:2]
            if last_index < 0:  # the frame size is known now: every prompt must fit it
                prompts.check_frame(hw, allow_outside)
            last_index = frame.index
            applied: dict[int, dict[str, Any]] = {}
            removed: list[int] = []
            while nxt < len(schedule) and schedule[nxt] <= frame.index:
                f = schedule[nxt]
                nxt += 1
                for oid in prompts.remove.get(f, ()):
                    try:
                        tracker.remove_object(oid)
                    except SamDeployError as exc:
                        raise with_context(exc, f"frame {frame.index}: removing object {oid}") from None
                    applied.pop(oid, None)
                    removed.append(oid)
                    if oid in stats.objects:
                        stats.objects[oid]["removed_at"] = frame.index
                for oid, p in prompts.frames.get(f, {}).items():
                    try:
                        tracker.add_object(oid, frame_size=hw, **p)
                    except SamDeployError as exc:
                        raise with_context(exc, f"frame {frame.index}, object {oid}") from None
                    applied[oid] = p
                    s = stats.objects.setdefault(oid, _object_stats())
                    s["prompted_frames"] += 1
                    s["removed_at"] = None
            t_prompt = time.perf_counter()
            result = tracker.track(frame.image)
            t_track = time.perf_counter()
            objects = sorted(result.objects, key=lambda o: o.obj_id)
            for o in objects:
                s = stats.objects.setdefault(int(o.obj_id), _object_stats())
                s["frames_tracked"] += 1
                if s["first_frame"] is None:
                    s["first_frame"] = frame.index
                if o.present:
                    s["frames_present"] += 1
                    s["last_present"] = frame.index
            footprint = tracker.memory_footprint()
            stats.memory_peak_bytes = max(stats.memory_peak_bytes,
                                          int(footprint.get("maskmem_bytes", 0)) + int(footprint.get("obj_ptr_bytes", 0)))
            stats.frames_processed += 1
            model_ms += (t_track - t_prompt) * 1e3
            if on_result is not None:
                timings = {k: float(v) for k, v in (getattr(result, "timings", None) or {}).items()}
                timings.setdefault("total", (t_track - t_prompt) * 1e3)
                on_result(TrackFrame(frame.index, int(result.frame_index), frame.t_ms, frame.image, objects, applied,
                                     removed, timings))
            latency_ms += (time.perf_counter() - t_got) * 1e3
            if feed.stop.is_set():
                break
    feed.check(stats.frames_processed)
    stats.events_not_reached = schedule[nxt:]
    if stats.events_not_reached and feed.source_ended:
        raise InputError(
            f"{prompts.where}: prompts or removals on frame(s) {stats.events_not_reached} but {info.description} "
            f"ended after {last_index + 1} frames (0..{last_index})", hint="frame indices start at 0")
    stats.seconds = time.perf_counter() - t_start
    stats.frames_read = feed.read
    stats.frames_dropped = feed.dropped
    stats.memory = {k: int(v) for k, v in tracker.memory_footprint().items()}
    n = max(1, stats.frames_processed)
    stats.fps = stats.frames_processed / stats.seconds if stats.seconds > 0 and stats.frames_processed else 0.0
    stats.model_ms_mean = model_ms / n
    stats.latency_ms_mean = latency_ms / n
    return stats
