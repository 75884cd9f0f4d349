"""Streaming segmentation: video file / camera / RTSP -> per-frame masks (no torch).

    from samdeploy.runtime import Predictor
    from samdeploy.runtime.stream import StreamPrompts, run_stream
    pred = Predictor("out/mobile_sam")
    stats = run_stream(pred, "clip.mp4", StreamPrompts(boxes=[[100, 80, 300, 260]]), track=True,
                       on_result=lambda r: print(r.index, r.boxes))

Per frame the image is encoded once and all active prompts are decoded together (one decoder call
for click prompts, one for box prompts). With ``track=True`` every object's prompt becomes the box
of its previous mask (slightly enlarged), so objects are followed as they move (simple tracking).

A capture thread reads frames into a bounded queue (1-2 slots). For live sources (camera, RTSP)
the queue keeps the NEWEST frame when the model is slower than the source: a waiting frame is
replaced and counted as dropped, so latency stays bounded. For files nothing is dropped by default:
the reader waits for the model. Nothing is accumulated per frame (memory stays flat on long runs);
results go to the ``on_result`` callback and the sinks below (video / PNG frames / JSON lines).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from ..errors import InputError, MissingFileError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")


# ---- the bounded drop-oldest queue ------------------------------------------------------------------
class FrameQueue:
    """Bounded hand-off between one producer (capture) and one consumer (the model).

    ``drop=True``: ``put`` never blocks; when full, the oldest waiting item is discarded (counted in
    ``dropped``) so the consumer always gets the newest frame. ``drop=False``: ``put`` waits for room
    (every frame is processed). ``finish()`` (producer) lets the consumer drain and then see
    ``None``; ``close()`` (consumer) discards waiting items and releases a blocked producer."""

    def __init__(self, maxsize: int = 1, drop: bool = True) -> None:
        if maxsize < 1:
            raise InputError(f"queue size must be >= 1 (got {maxsize})")
        self.maxsize = int(maxsize)
        self.drop = bool(drop)
        self.dropped = 0  # stale frames replaced by newer ones (drop mode)
        self.discarded = 0  # frames left unprocessed because the consumer stopped (close)
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._finished = False
        self._closed = False

    def put(self, item: Any) -> bool:
        """Queue ``item``; returns False if the consumer has closed the queue."""
        with self._cond:
            if self.drop:
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self.dropped += 1
            else:
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait()
            if self._closed:
                self.discarded += 1  # the consumer is gone: this frame will never be processed
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: Optional[float] = None) -> Any:
        """The next item (oldest waiting); ``None`` once the producer finished and all is drained.
        Raises ``TimeoutError`` if nothing arrives within ``timeout`` seconds."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items and not self._finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("no frame arrived in time")
                self._cond.wait(left)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._finished = True
            self.discarded += len(self._items)
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# ---- sources --------------------------------------------------------------------------------------
@dataclass
class Frame:
    index: int  # position in the source (counts every frame read, dropped or not)
    image: np.ndarray  # HxWx3 uint8 RGB
    t_ms: float  # source timestamp (files) or milliseconds since the stream started (live)


@dataclass
class SourceInfo:
    description: str
    live: bool
    fps: float  # 0.0 when unknown
    frame_count: int  # -1 when unknown (live)
    size_hw: tuple[int, int] = (0, 0)


def open_source(source: Any) -> tuple[Any, SourceInfo]:
    """Open a video file path, a camera index (int or digit string) or a stream URL
    (rtsp://, http://, ...) with OpenCV. Returns (cv2.VideoCapture, SourceInfo)."""
    import cv2

    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.strip().isdigit()):
        index = int(source)
        cap = cv2.VideoCapture(index)
        desc, live = f"camera {index}", True
        hint = "check the camera index (ls /dev/video*) and that no other program holds the camera"
    elif isinstance(source, str) and "://" in source:
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
        desc, live = source, True
        hint = "check the URL, credentials and network; try it in `ffplay URL` first"
    else:
        path = Path(source)
        if not path.exists():
            raise MissingFileError(f"video not found: {path}", hint="pass a video file, a camera index (0) or an rtsp:// URL")
        cap = cv2.VideoCapture(str(path))
        desc, live = str(path), False
        hint = "use a format OpenCV's FFmpeg can decode (MP4/H.264, AVI/MJPG, MKV)"
    if not cap.isOpened():
        cap.release()
        raise InputError(f"cannot open video source {desc}", hint=hint)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = -1 if live else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0))
    return cap, SourceInfo(desc, live, fps if np.isfinite(fps) else 0.0, count, size)


def _capture_frames(cap: Any, live: bool) -> Iterator[Frame]:
    import cv2

    t0 = time.monotonic()
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return
        t_ms = (time.monotonic() - t0) * 1e3 if live else float(cap.get(cv2.CAP_PROP_POS_MSEC))
        yield Frame(i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t_ms)
        i += 1


def _iter_frames(frames: Iterable[Any]) -> Iterator[Frame]:
    from ..images import to_rgb_uint8

    t0 = time.monotonic()
    for i, f in enumerate(frames):
        if isinstance(f, Frame):
            yield f
        else:
            yield Frame(i, to_rgb_uint8(f, f"frame {i}"), (time.monotonic() - t0) * 1e3)


class _Capture(threading.Thread):
    """Reads frames into the queue until the source ends, ``stop`` is set or the queue closes.
    Owns the OpenCV capture: releases it itself (releasing from another thread while ``read``
    blocks, e.g. on a stalled RTSP stream, is unsafe)."""

    def __init__(self, frames: Iterator[Frame], queue: FrameQueue, stop: threading.Event, cap: Any = None) -> None:
        super().__init__(name="samdeploy-capture", daemon=True)
        self.frames, self.queue, self.stop, self.cap = frames, queue, stop, cap
        self.read = 0
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            for frame in self.frames:
                if self.stop.is_set():
                    break
                self.read += 1
                if not self.queue.put(frame):
                    break
        except BaseException as exc:  # surfaced by run_stream in the main thread
            self.error = exc
        finally:
            self.queue.finish()
            if self.cap is not None:
                self.cap.release()


class FrameFeed:
    """A source's frames through the capture thread and the bounded queue: the frame loop shared by
    :func:`run_stream` and :func:`~samdeploy.runtime.track_stream.run_track`.

        feed = FrameFeed(source, drop=None)        # opens the source (typed errors)
        with feed:                                 # starts the capture thread; stops and joins it on exit
            while (frame := feed.get()) is not None:
                ...
        feed.check(processed)                      # the capture thread's error, or "no frames"; then counts

    ``source``: a video path, camera index, stream URL, or any iterable of HxWx3 frames (treated as
    live). ``drop``: None = drop stale frames for live sources, never for files."""

    def __init__(self, source: Any, *, drop: Optional[bool] = None, queue_size: int = 1,
                 stop: Optional[threading.Event] = None) -> None:
        if queue_size not in (1, 2):
            raise InputError(f"queue_size must be 1 or 2 (got {queue_size})", hint="a longer queue only adds latency")
        cap = None
        if isinstance(source, (str, os.PathLike, int, np.integer)):
            cap, self.info = open_source(os.fspath(source) if isinstance(source, os.PathLike) else source)
            frames: Iterator[Frame] = _capture_frames(cap, self.info.live)
        else:
            self.info = SourceInfo("frames", live=True, fps=0.0, frame_count=-1)
            frames = _iter_frames(source)
        self.drop = self.info.live if drop is None else bool(drop)
        self.queue = FrameQueue(queue_size, drop=self.drop)
        self.stop = stop or threading.Event()
        self._capture = _Capture(frames, self.queue, self.stop, cap)
        self.source_ended = False  # the producer finished (source exhausted), as opposed to a stop by the consumer

    def __enter__(self) -> "FrameFeed":
        self._capture.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def get(self) -> Optional[Frame]:
        """The next frame to process; None once the source is exhausted."""
        frame = self.queue.get()
        if frame is None:
            self.source_ended = True
        return frame

    def close(self) -> None:
        self.stop.set()
        self.queue.close()
        if self._capture.ident is not None:
            self._capture.join(timeout=5.0)
        elif self._capture.cap is not None:  # never started: the capture is ours to release
            self._capture.cap.release()

    def check(self, processed: int) -> None:
        """After the loop: re-raise what went wrong in the capture thread (as a typed error), and refuse
        a source that yielded no frame at all."""
        err = self._capture.error
        if err is not None and not isinstance(err, (KeyboardInterrupt, SystemExit)):
            if isinstance(err, InputError):
                raise err
            raise InputError(f"reading {self.info.description} failed: {type(err).__name__}: {err}")
        if self.source_ended and processed == 0 and self._capture.read == 0:
            raise InputError(
                f"source {self.info.description} yielded no frames (OpenCV opened it but could not decode a single frame)",
                hint="check that the file is a complete, non-empty video (e.g. `ffprobe FILE`), re-encode it "
                "to MP4/H.264 or AVI/MJPG, or check the camera/stream is delivering images",
            )

    @property
    def read(self) -> int:
        """Frames offered to the model: those still in flight when the consumer stopped (max_frames,
        stop) were never offered and are not counted, so that read = processed + dropped."""
        return self._capture.read - self.queue.discarded

    @property
    def dropped(self) -> int:
        return self.queue.dropped


# ---- prompts and tracking ------------------------------------------------------------------------
@dataclass
class StreamPrompts:
    """Objects to segment in every frame: one per click and one per box (image pixels, XYXY)."""

    points: list[list[float]] = field(default_factory=list)  # each [x, y]: a positive click = one object
    boxes: list[list[float]] = field(default_factory=list)  # each [x0, y0, x1, y1] = one object

    def __post_init__(self) -> None:
        self.points = [[float(v) for v in p] for p in self.points]
        self.boxes = [[float(v) for v in b] for b in self.boxes]
        for p in self.points:
            if len(p) != 2 or not np.isfinite(p).all():
                raise InputError(f"a point prompt must be [x, y] (got {p})")
        for b in self.boxes:
            if len(b) != 4 or not np.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
                raise InputError(f"a box prompt must be [x0, y0, x1, y1] with x1 >= x0, y1 >= y0 (got {b})")
        if not self.points and not self.boxes:
            raise InputError("no prompt given", hint="add --point X,Y and/or --box X0,Y0,X1,Y1")

    def __len__(self) -> int:
        return len(self.points) + len(self.boxes)


@dataclass
class FrameResult:
    index: int
    t_ms: float
    image: np.ndarray  # HxWx3 RGB (the frame)
    masks: np.ndarray  # [K, H, W] bool, one per object (objects in StreamPrompts order: clicks, then boxes)
    scores: np.ndarray  # [K] predicted IoU
    prompt_points: list[Optional[list[float]]]  # per object: the click used this frame, or None
    prompt_boxes: list[Optional[list[float]]]  # per object: the box used this frame, or None
    boxes: np.ndarray  # [K, 4] XYXY of each mask (inclusive pixel indices; zeros if empty)
    areas: np.ndarray  # [K]
    timings_ms: dict[str, float]

    def to_json(self, rle: bool = False) -> dict[str, Any]:
        objs = []
        for k in range(len(self.masks)):
            x0, y0, x1, y1 = (int(v) for v in self.boxes[k])
            o: dict[str, Any] = {
                "id": k,
                "score": round(float(self.scores[k]), 5),
                "area": int(self.areas[k]),
                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1] if self.areas[k] else [0, 0, 0, 0],
                "prompt_point": self.prompt_points[k],
                "prompt_box": self.prompt_boxes[k],
            }
            if rle:
                from .rle import mask_to_rle

                o["segmentation"] = mask_to_rle(self.masks[k])
            objs.append(o)
        return {"frame": self.index, "t_ms": round(self.t_ms, 2), "objects": objs,
                "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()}}


class _Objects:
    """Per-object prompt state; with tracking, the next prompt is the box of the last mask."""

    def __init__(self, prompts: StreamPrompts, track: bool, margin: float) -> None:
        self.track, self.margin = track, margin
        self.points: list[Optional[list[float]]] = [list(p) for p in prompts.points] + [None] * len(prompts.boxes)
        self.boxes: list[Optional[list[float]]] = [None] * len(prompts.points) + [list(b) for b in prompts.boxes]
        self.lost = np.zeros(len(self.points), dtype=np.int64)  # consecutive frames with an empty mask

    def update(self, masks: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]) -> None:
        if not self.track:
            return
        h, w = hw
        for k in range(len(masks)):
            if not masks[k].any():
                self.lost[k] += 1  # keep the last prompt: the object may come back
                continue
            self.lost[k] = 0
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            x1, y1 = x1 + 1, y1 + 1  # inclusive pixel indices -> box edges
            mx, my = self.margin * (x1 - x0) + 2, self.margin * (y1 - y0) + 2
            self.boxes[k] = [max(0.0, x0 - mx), max(0.0, y0 - my), min(float(w), x1 + mx), min(float(h), y1 + my)]
            self.points[k] = None


def _segment(predictor: Any, objs: _Objects, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode all objects on the current embedding: clicks (multimask, best score) in one call,
    boxes (single mask) in another. Returns masks [K, H, W] and scores [K]."""
    k = len(objs.points)
    masks = np.zeros((k, *hw), dtype=bool)
    scores = np.zeros(k, dtype=np.float32)
    click = [i for i in range(k) if objs.boxes[i] is None]
    boxed = [i for i in range(k) if objs.boxes[i] is not None]
    if click:
        pts = np.asarray([objs.points[i] for i in click], np.float32)[:, None, :]
        m, s, _ = predictor.predict_batch(point_coords=pts, point_labels=np.ones((len(click), 1), np.float32),
                                          multimask_output=True)
        best = s.argmax(axis=1)
        masks[click] = m[np.arange(len(click)), best]
        scores[click] = s[np.arange(len(click)), best]
    if boxed:
        m, s, _ = predictor.predict_batch(boxes=np.asarray([objs.boxes[i] for i in boxed], np.float32),
                                          multimask_output=False)
        best = s.argmax(axis=1)  # one column, or TinySAM's three
        masks[boxed] = m[np.arange(len(boxed)), best]
        scores[boxed] = s[np.arange(len(boxed)), best]
    return masks, scores


# ---- the loop -------------------------------------------------------------------------------------
@dataclass
class LoopStats:
    """What every frame loop reports (``run_stream``; ``track_stream.run_track`` adds its own fields)."""

    source: str = ""
    live: bool = False
    drop: bool = False
    frames_read: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    seconds: float = 0.0
    fps: float = 0.0  # processed frames per wall-clock second (incl. drawing/writing by callbacks)
    source_fps: float = 0.0
    model_ms_mean: float = 0.0  # model work per frame (encoder + decoders + postprocess / Tracker.track)
    latency_ms_mean: float = 0.0  # capture -> result ready (live sources: includes queueing)


@dataclass
class StreamStats(LoopStats):
    objects: int = 0
    lost_frames: int = 0  # object-frames whose mask was empty

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def run_stream(
    predictor: Any,
    source: Any,
    prompts: StreamPrompts,
    *,
    track: bool = False,
    track_margin: float = 0.1,
    drop: Optional[bool] = None,
    queue_size: int = 1,
    max_frames: Optional[int] = None,
    on_result: Optional[Callable[[FrameResult], None]] = None,
    stop: Optional[threading.Event] = None,
) -> StreamStats:
    """Segment ``prompts`` in every frame of ``source`` (path, camera index, URL, or any iterable of
    HxWx3 frames) with a :class:`~samdeploy.runtime.predictor.Predictor`.

    ``drop``: None = drop stale frames for live sources (camera, URL, iterables), never for files.
    ``max_frames``: stop after this many processed frames. ``on_result`` gets each FrameResult
    (do not keep them all: that is what would make memory grow). Set ``stop`` to end early."""
    from .amg_utils import masks_to_boxes

    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1 (got {max_frames})")
    feed = FrameFeed(source, drop=drop, queue_size=queue_size, stop=stop)
    info = feed.info
    stats = StreamStats(source=info.description, live=info.live, drop=feed.drop, source_fps=info.fps,
                        objects=len(prompts))
    objs = _Objects(prompts, track, track_margin)
    model_ms = latency_ms = 0.0
    t_start = time.perf_counter()
    with feed:
        while max_frames is None or stats.frames_processed < max_frames:
            frame = feed.get()
            if frame is None:
                break
            t_got = time.perf_counter()
            hw = frame.image.shape[:2]
            predictor.set_image(frame.image)
            t_enc = time.perf_counter()
            used_points = [None if p is None else list(p) for p in objs.points]
            used_boxes = [None if b is None else [round(v, 2) for v in b] for b in objs.boxes]
            masks, scores = _segment(predictor, objs, hw)
            boxes = masks_to_boxes(masks)
            areas = masks.reshape(len(masks), -1).sum(axis=1)
            t_dec = time.perf_counter()
            objs.update(masks, boxes, hw)
            stats.lost_frames += int((areas == 0).sum())
            stats.frames_processed += 1
            model_ms += (t_dec - t_got) * 1e3
            if on_result is not None:
                on_result(FrameResult(frame.index, frame.t_ms, frame.image, masks, scores, used_points, used_boxes,
                                      boxes, areas, {"encode": (t_enc - t_got) * 1e3, "decode": (t_dec - t_enc) * 1e3}))
            latency_ms += (time.perf_counter() - t_got) * 1e3
            if feed.stop.is_set():
                break
    feed.check(stats.frames_processed)
    stats.seconds = time.perf_counter() - t_start
    stats.frames_read = feed.read
    stats.frames_dropped = feed.dropped
    n = max(1, stats.frames_processed)
    stats.fps = stats.frames_processed / stats.seconds if stats.seconds > 0 and stats.frames_processed else 0.0
    stats.model_ms_mean = model_ms / n
    stats.latency_ms_mean = latency_ms / n
    return stats


# ---- sinks ------------------------------------------------------------------------------------------
class _PartialFile:
    """Write to ``.<stem>.partial<ext>`` beside ``path`` and rename on ``commit`` (a reader never sees
    a half-written file under the final name; the extension is kept so OpenCV picks the container)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.final = Path(path)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.stem}.partial{self.final.suffix}")

    def commit(self) -> None:
        if self.tmp.exists():
            os.replace(self.tmp, self.final)

    def discard(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()


class VideoSink:
    """Annotated frames -> a video file (.mp4: mp4v, .avi: MJPG, .mkv/.mov: mp4v), opened lazily."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0) -> None:
        self.file = _PartialFile(path)
        if self.file.final.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"unsupported video extension {self.file.final.suffix!r}", hint=f"use one of {VIDEO_EXTENSIONS}")
        self.fps = fps if fps and fps > 0 else 30.0
        self._writer = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.file.final.suffix.lower() == ".avi" else "mp4v"))
            h, w = rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.file.tmp), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise InputError(f"OpenCV cannot write {self.file.final}", hint="try an .avi output, or a frames directory")
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self, commit: bool = True) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.file.commit() if commit else self.file.discard()


class FrameDirSink:
    """Annotated frames -> ``DIR/frame_<index>.png`` (each written atomically). ``close(commit=False)``
    removes the frames this sink wrote, and the folder if the sink created it and it is left empty."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"{self.folder} exists and is not a directory", hint="pass a new or existing directory for the PNG frames")
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.frames = 0
        self._written: list[Path] = []

    def write(self, rgb: np.ndarray, index: int) -> None:
        from .overlay import write_png

        path = self.folder / f"frame_{index:06d}.png"
        write_png(path, rgb)
        self._written.append(path)
        self.frames += 1

    def close(self, commit: bool = True) -> None:
        if commit:
            return
        for path in self._written:
            path.unlink(missing_ok=True)
        self._written.clear()
        if self._created:
            try:
                self.folder.rmdir()
            except OSError:  # not empty (someone else wrote there): leave it
                pass


class JsonlSink:
    """One JSON object per processed frame, flushed as it goes (bounded memory)."""

    def __init__(self, path: str | os.PathLike, rle: bool = False) -> None:
        self.file = _PartialFile(path)
        self.rle = rle
        self._fh = open(self.file.tmp, "w", encoding="utf-8")

    def write(self, result: FrameResult) -> None:
        self._fh.write(json.dumps(result.to_json(self.rle), separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self, commit: bool = True) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.file.commit() if commit else self.file.discard()


def annotate(result: FrameResult) -> np.ndarray:
    """The frame with each object's mask tinted, its prompt drawn and its score as caption."""
    from .overlay import draw_overlay

    pts = [p for p in result.prompt_points if p is not None]
    bxs = [b for b in result.prompt_boxes if b is not None]
    return draw_overlay(
        result.image,
        result.masks,
        points=np.asarray(pts, np.float32).reshape(-1, 2) if pts else None,
        boxes=np.asarray(bxs, np.float32).reshape(-1, 4) if bxs else None,
        captions=[f"#{k} {result.scores[k]:.2f}" for k in range(len(result.masks))],
    )


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere). Used to show memory is flat."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
