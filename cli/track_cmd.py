"""``samdeploy track SOURCE --model-dir DIR [--box ID:X0,Y0,X1,Y1] [--point ID:X,Y[,LABEL]] [--mask ID:FILE]
[--at FRAME ... --remove ID] [--prompts FILE.json] [--out video.mp4|DIR] [--json frames.jsonl]``

SAM2 / SAM2.1 video object tracking (an export made with ``samdeploy export --model sam2.1_hiera_t --video``).
SOURCE is a video file, a camera index (``0``) or a stream URL (``rtsp://...``).

Prompts name an object id: ``--box 1:40,60,200,220`` and ``--point 2:250,200`` (several ``--point`` with
the same id and frame = one multi-click prompt; ``,0`` = a background click), ``--mask 3:mask.png``. They
apply on frame 0, or on the frame of the last ``--at FRAME`` before them; ``--remove ID`` (after an
``--at``) stops tracking an object from that frame on::

    samdeploy track clip.mp4 --model-dir out/sam2.1_t --box 1:40,60,200,220 \\
        --at 20 --point 2:250,200 --point 2:260,230,0 --at 40 --remove 2 --out out/track.mp4 --json out/track.jsonl

``--prompts FILE.json`` gives the same per frame (schema in ``samdeploy/runtime/track_stream.py``):
``{"frames": {"0": {"1": {"box": [x0, y0, x1, y1]}}, "20": {"2": {"points": [[x, y]], "labels": [1]}}},
"remove": {"40": [2]}}``. Every prompt is checked (numbers, frames, object ids, the frame size) before the
model is opened.

Writes one JSON line per frame (``--json``: per object its id, COCO RLE mask, object-score logit,
present, predicted IoU, bbox XYWH, prompted) and an annotated video or PNG frames (``--out``), both
atomically (a partial output is removed on errors and kept on Ctrl-C). Files are processed frame by
frame (progress bar on a terminal); live sources drop stale frames (``--drop`` / ``--no-drop``).
Exit 0 ok, 2 bad input / model / source, 130 interrupted. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

HELP = "track objects through a video / camera / RTSP stream with a SAM2 video export"

_PROMPT_KINDS = ("box", "point", "mask", "remove")
_EXAMPLES = {"box": "--box 1:40,60,200,220", "point": "--point 1:120,80 (or 1:120,80,0 for a background click)",
             "mask": "--mask 1:mask.png", "remove": "--at 40 --remove 1"}


class _AtFrame(argparse.Action):
    """``--at FRAME``: the frame the following prompt flags apply to (order matters)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.at_frame = values


class _PromptFlag(argparse.Action):
    """Prompt flags are kept in command-line order with the ``--at`` frame in force."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "prompt_flags", None) or [])
        items.append((getattr(namespace, "at_frame", None), self.dest, values))
        namespace.prompt_flags = items


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="video file, camera index (0, 1, ...) or stream URL (rtsp://...)")
    g = p.add_argument_group("model")
    g.add_argument("--model-dir", required=True,
                   help="a SAM2/SAM2.1 export with video graphs (`samdeploy export --model sam2.1_hiera_t --video`)")
    g.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"], help="inference backend")
    g.add_argument("--engine-dir", default=None,
                   help="--backend tensorrt: the engines of `samdeploy build --graphs all` when they are not in an "
                   "engines* directory inside --model-dir")
    g.add_argument("--providers", default=None,
                   help="ONNX Runtime execution providers, comma-separated: cpu (default), cuda, tensorrt")
    g.add_argument("--threads", type=int, default=None, help="intra-op threads (default: backend default)")
    g.add_argument("--memory-storage", default=None, choices=["bfloat16", "float32"],
                   help="how memory features are kept (default: the contract's, bfloat16 like SAM2VideoPredictor)")
    g.add_argument("--fill-hole-area", type=int, default=None,
                   help="fill mask holes up to this many low-res pixels (SAM2's fill_hole_area; default: the "
                   "contract's, 8 as build_sam2_video_predictor; 0 = off, as the official code on a CPU)")
    g.add_argument("--max-objects", type=int, default=16, help="most objects tracked at once (default 16)")
    g.add_argument("--allow-outside-points", action="store_true",
                   help="accept prompt coordinates somewhat outside the frame (as SAM does)")
    q = p.add_argument_group("prompts (object ids are integers >= 0; frame indices start at 0)")
    p.set_defaults(prompt_flags=[], at_frame=None)
    q.add_argument("--box", action=_PromptFlag, metavar="ID:X0,Y0,X1,Y1",
                   help="a box around object ID in frame pixels. Repeatable")
    q.add_argument("--point", action=_PromptFlag, metavar="ID:X,Y[,LABEL]",
                   help="a click on object ID; LABEL 1 = foreground (default), 0 = background. Several --point "
                   "with the same ID (and frame) are one multi-click prompt. Repeatable")
    q.add_argument("--mask", action=_PromptFlag, metavar="ID:FILE",
                   help="a mask prompt for object ID: a PNG of the frame's size (nonzero = object) or a .npy array")
    q.add_argument("--at", action=_AtFrame, metavar="FRAME",
                   help="the following --box/--point/--mask/--remove apply on source frame FRAME (default 0)")
    q.add_argument("--remove", action=_PromptFlag, metavar="ID",
                   help="stop tracking object ID from the --at frame on (before that frame is tracked)")
    q.add_argument("--prompts", default=None, metavar="FILE.json",
                   help='prompts per frame: {"frames": {"0": {"1": {"box": [x0,y0,x1,y1]}, "2": {"points": [[x,y]], '
                   '"labels": [1]}}}, "remove": {"40": [2]}} (combined with the flags)')
    s = p.add_argument_group("stream")
    d = s.add_mutually_exclusive_group()
    d.add_argument("--drop", dest="drop", action="store_true", default=None,
                   help="drop stale frames when the model is slower than the source (default for cameras/URLs)")
    d.add_argument("--no-drop", dest="drop", action="store_false", help="process every frame (default for files)")
    s.add_argument("--queue-size", type=int, default=1, choices=[1, 2], help="frames waiting for the model (1)")
    s.add_argument("--max-frames", type=int, default=None, help="stop after this many processed frames")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="annotated video (.mp4/.avi/.mkv/.mov) or a directory for PNG frames")
    o.add_argument("--json", dest="jsonl", default=None, metavar="FILE.jsonl",
                   help="per-frame results, one JSON line each (masks as COCO RLE)")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    o.add_argument("--summary-json", action="store_true", help="print the final summary as JSON")


# ---- prompts from the command line ---------------------------------------------------------------------
def _flag_text(kind: str, text: str, at: Optional[str]) -> str:
    return f"--{kind} {text!r}" + (f" (--at {at})" if at is not None else "")


def _parse_frame(text: str) -> int:
    from samdeploy.errors import InputError
    from samdeploy.runtime.track_stream import MAX_INDEX

    t = str(text).strip()
    if not (t.isdigit() and t.isascii()) or int(t) > MAX_INDEX:
        raise InputError(f"--at {text!r} is not a frame index (an integer in 0..{MAX_INDEX})",
                         hint="frame indices start at 0, e.g. --at 20")
    return int(t)


def _parse_id(text: str, flag: str, kind: str) -> int:
    from samdeploy.errors import InputError
    from samdeploy.runtime.track_stream import MAX_INDEX

    t = text.strip()
    if not (t.isdigit() and t.isascii()) or int(t) > MAX_INDEX:
        raise InputError(f"{flag}: object id {t!r} is not an integer in 0..{MAX_INDEX}",
                         hint=f"write the object id first, e.g. {_EXAMPLES[kind]}")
    return int(t)


def _split(text: str, kind: str, flag: str) -> tuple[int, str]:
    from samdeploy.errors import InputError

    if ":" not in text:
        raise InputError(f"{flag} has no object id", hint=f"write ID:VALUES, e.g. {_EXAMPLES[kind]}")
    oid, rest = text.split(":", 1)
    return _parse_id(oid, flag, kind), rest


def _floats(text: str, counts: tuple[int, ...], flag: str, kind: str) -> list[float]:
    import numpy as np

    from samdeploy.errors import InputError

    parts = [v for v in text.replace(" ", "").split(",") if v != ""]
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        raise InputError(f"cannot parse {flag}: not comma-separated numbers", hint=f"e.g. {_EXAMPLES[kind]}") from None
    if len(vals) not in counts:
        raise InputError(f"{flag} has {len(vals)} values after the id; expected {' or '.join(map(str, counts))}",
                         hint=f"e.g. {_EXAMPLES[kind]}")
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(np.asarray(vals, np.float64).astype(np.float32)).all():
            raise InputError(f"{flag} contains NaN or inf (or values too large for float32)",
                             hint="coordinates are (x, y) pixels of the video frame")
    return vals


def prompts_from_flags(flags: list[tuple[Optional[str], str, str]]):
    """``[(at, kind, text)]`` in command-line order -> TrackPrompts (or None when there are none)."""
    from samdeploy.errors import InputError
    from samdeploy.runtime.track_stream import TrackPrompts

    frames: dict[int, dict[int, dict[str, Any]]] = {}
    remove: dict[int, list[int]] = {}
    for at, kind, text in flags:
        frame = 0 if at is None else _parse_frame(at)
        flag = _flag_text(kind, text, at)
        if kind == "remove":
            if at is None:
                raise InputError(f"{flag} needs a frame", hint="write --at FRAME before --remove ID, e.g. --at 40 --remove 2")
            oid = _parse_id(text, flag, kind)
            if oid in remove.get(frame, []):
                raise InputError(f"{flag}: object {oid} is removed twice on frame {frame}")
            remove.setdefault(frame, []).append(oid)
            continue
        oid, rest = _split(text, kind, flag)
        p = frames.setdefault(frame, {}).setdefault(oid, {})
        if kind == "point":
            v = _floats(rest, (2, 3), flag, kind)
            if len(v) == 3 and v[2] not in (0.0, 1.0):
                raise InputError(f"{flag}: label {v[2]:g} is not 0 or 1",
                                 hint="write ID:X,Y,1 for foreground (the default) or ID:X,Y,0 for background")
            p.setdefault("points", []).append(v[:2])
            p.setdefault("labels", []).append(v[2] if len(v) == 3 else 1.0)
        elif kind == "box":
            if "box" in p:
                raise InputError(f"{flag}: object {oid} already has a box on frame {frame}",
                                 hint="one box per object and frame (add --point clicks to refine it)")
            b = _floats(rest, (4,), flag, kind)
            if b[0] > b[2] or b[1] > b[3]:
                raise InputError(f"{flag} is inverted (x0 > x1 or y0 > y1)",
                                 hint="write ID:X0,Y0,X1,Y1 with the top-left corner first")
            p["box"] = b
        else:  # mask
            if "mask" in p:
                raise InputError(f"{flag}: object {oid} already has a mask on frame {frame}")
            if not rest.strip():
                raise InputError(f"{flag} names no file", hint=f"e.g. {_EXAMPLES['mask']}")
            p["mask"] = rest.strip()
    if not frames and not remove:
        return None
    return TrackPrompts(frames, remove, where="command-line prompts")


def build_prompts(args: argparse.Namespace):
    """The flags and ``--prompts FILE.json`` as one TrackPrompts, checked (no model, no video needed)."""
    from samdeploy.errors import InputError
    from samdeploy.runtime.track_stream import TrackPrompts

    if args.at_frame is not None and not any(at == args.at_frame for at, _, _ in args.prompt_flags):
        raise InputError(f"--at {args.at_frame} is followed by no --box/--point/--mask/--remove",
                         hint="put the prompts of a frame after its --at FRAME")
    flags = prompts_from_flags(args.prompt_flags)
    from_file = TrackPrompts.from_json(args.prompts) if args.prompts else None
    prompts = flags.merged(from_file) if flags is not None and from_file is not None else (flags or from_file)
    if prompts is None or not len(prompts):
        raise InputError("no prompt given",
                         hint="prompt an object, e.g. --box 1:40,60,200,220 or --point 1:120,80, or pass --prompts FILE.json")
    return prompts


# ---- outputs -----------------------------------------------------------------------------------------------
def _check_outputs(args: argparse.Namespace) -> Optional[str]:
    """Refuse unusable output paths before anything runs; returns "video" / "frames" / None for --out."""
    from samdeploy.errors import InputError
    from samdeploy.runtime.stream import VIDEO_EXTENSIONS

    kind = None
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() in VIDEO_EXTENSIONS:
            if out.is_dir():
                raise InputError(f"--out {out} is a directory", hint="name a video file or a new directory")
            kind = "video"
        elif out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory or a video file",
                             hint=f"use a video file ({', '.join(VIDEO_EXTENSIONS)}) or a directory for PNG frames")
        elif out.suffix and not out.exists():
            raise InputError(f"--out {out}: {out.suffix!r} is not a video extension",
                             hint=f"use {', '.join(VIDEO_EXTENSIONS)}, or a directory name (no extension) for PNG frames")
        else:
            kind = "frames"
    if args.jsonl:
        j = Path(args.jsonl)
        if j.is_dir():
            raise InputError(f"--json {j} is a directory", hint="name a file, e.g. --json frames.jsonl")
        if args.out and j.resolve() == Path(args.out).resolve():
            raise InputError("--json and --out name the same path")
    return kind


class _Progress:
    """``track [#####.....] frame 12/64 | 3.1 fps | 2/2 present`` on stderr (a terminal only)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.t0 = time.monotonic()
        self.last = 0.0
        self.n = 0
        self.shown = False

    def update(self, f) -> None:
        self.n += 1
        if not self.enabled:
            return
        now = time.monotonic()
        done = self.total > 0 and f.index + 1 >= self.total
        if now - self.last < 0.1 and not done:
            return
        self.last = now
        fps = self.n / max(now - self.t0, 1e-6)
        present = sum(1 for o in f.objects if o.present)
        tail = f"{fps:5.1f} fps | {present}/{len(f.objects)} present"
        if self.total > 0:
            frac = min(1.0, (f.index + 1) / self.total)
            bar = "#" * int(frac * 24) + "." * (24 - int(frac * 24))
            line = f"\rtrack [{bar}] frame {f.index + 1}/{self.total} | {tail}"
        else:
            line = f"\rtrack frame {f.index} | processed {self.n} | {tail}"
        print(line, end="", file=sys.stderr, flush=True)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print("", file=sys.stderr, flush=True)


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def run(args: argparse.Namespace) -> int:
    from samdeploy.errors import InputError
    from samdeploy.runtime import tracker as tracker_module
    from samdeploy.runtime.stream import FrameDirSink, JsonlSink, VideoSink, open_source
    from samdeploy.runtime.track_stream import annotate_tracks, run_track

    from ._args import identity_lines, run_identity

    # Everything checkable without the model first: a typo costs milliseconds.
    prompts = build_prompts(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1 (got {args.max_frames})")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1 (got {args.threads})")
    if args.fill_hole_area is not None and args.fill_hole_area < 0:
        raise InputError(f"--fill-hole-area must be >= 0 (got {args.fill_hole_area})")
    if not 1 <= args.max_objects <= tracker_module.MAX_OBJECTS:
        raise InputError(f"--max-objects must be in 1..{tracker_module.MAX_OBJECTS} (got {args.max_objects})")
    prompts.check_objects(args.max_objects)
    out_kind = _check_outputs(args)
    # Probe the source (a wrong path fails fast); for files, decode the first frame for its true size.
    cap, info = open_source(args.source)
    hw = None
    try:
        if not info.live:
            ok, bgr = cap.read()
            hw = bgr.shape[:2] if ok and bgr is not None else None
    finally:
        cap.release()
    if hw is not None:
        prompts.check_frame(hw, args.allow_outside_points)
    known_length = not info.live and info.frame_count > 0
    if known_length:
        prompts.check_length(info.frame_count, info.description)

    if args.engine_dir is not None and args.backend != "tensorrt":
        from ..errors import InputError

        raise InputError("--engine-dir names TensorRT engines; it needs --backend tensorrt",
                         hint="drop --engine-dir to track with the ONNX files of --model-dir")
    tracker = tracker_module.Tracker(
        args.model_dir, backend=args.backend, providers=args.providers, threads=args.threads,
        num_frames=info.frame_count if known_length else None, memory_storage=args.memory_storage,
        fill_hole_area=args.fill_hole_area, max_objects=args.max_objects,
        allow_outside_points=args.allow_outside_points,
        **({"graph_dir": args.engine_dir} if args.engine_dir is not None else {}))
    sink = jsonl = None
    progress = _Progress(info.frame_count if known_length else -1,
                         not args.quiet and not args.summary_json and sys.stderr.isatty())
    ok = False
    try:
        identity = run_identity(tracker.describe())
        if not args.summary_json:  # said once, before the first frame
            print("\n".join(identity_lines(identity, "track")), flush=True)
            print(f"prompts  {prompts.describe()}", flush=True)
        try:
            if out_kind == "video":
                sink = VideoSink(args.out, info.fps)
            elif out_kind == "frames":
                sink = FrameDirSink(args.out)
            jsonl = JsonlSink(args.jsonl, rle=True) if args.jsonl else None
        except OSError as exc:
            raise InputError(f"cannot write the outputs: {exc.strerror or exc} ({exc.filename or ''})",
                             hint="check the output folder exists and is writable") from None

        def on_result(f) -> None:
            if sink is not None:
                img = annotate_tracks(f)
                sink.write(img) if out_kind == "video" else sink.write(img, f.index)
            if jsonl is not None:
                jsonl.write(f)
            progress.update(f)

        stats = run_track(tracker, args.source, prompts, drop=args.drop, queue_size=args.queue_size,
                          max_frames=args.max_frames, on_result=on_result)
        ok = True
    finally:
        # Keep what was written if the user pressed Ctrl-C; discard it on errors.
        interrupted = sys.exc_info()[0] is KeyboardInterrupt
        progress.close()
        for s in (sink, jsonl):
            if s is not None:
                s.close(commit=ok or interrupted)
        tracker.close()
    summary = dict(stats.to_dict(), **identity, frame_count=info.frame_count if known_length else None,
                   prompts=prompts.describe(), out=args.out, json=args.jsonl)
    if args.summary_json:
        print(json.dumps(summary, indent=2, allow_nan=False))
        return 0
    length = f", {info.frame_count} frames" if known_length else ""
    print(f"source   {stats.source}  ({'live' if stats.live else 'file'}, {stats.source_fps:.1f} fps{length}, "
          f"{'drop stale frames' if stats.drop else 'every frame'})")
    print(f"frames   read {stats.frames_read}, processed {stats.frames_processed}, dropped {stats.frames_dropped}")
    model_fps = f"{1e3 / stats.model_ms_mean:.2f} FPS" if stats.model_ms_mean >= 1e-3 else "n/a"
    e2e_fps = f"{stats.fps:.2f} FPS" if stats.fps > 0 else "n/a"
    print(f"speed    {e2e_fps} end to end | model {stats.model_ms_mean:.1f} ms/frame ({model_fps})")
    for oid, s in sorted(stats.objects.items()):
        span = "never tracked" if s["first_frame"] is None else f"from frame {s['first_frame']}"
        if s["removed_at"] is not None:
            span += f", removed on frame {s['removed_at']}"
        print(f"object   {oid}: present on {s['frames_present']}/{s['frames_tracked']} tracked frames ({span})")
    m = stats.memory
    print(f"memory   tracker state {_mb(m.get('maskmem_bytes', 0) + m.get('obj_ptr_bytes', 0))} "
          f"(mask memories {_mb(m.get('maskmem_bytes', 0))}, object pointers {_mb(m.get('obj_ptr_bytes', 0))}, "
          f"{m.get('frames_held', 0)} frame entries held); peak {_mb(stats.memory_peak_bytes)}")
    if stats.events_not_reached:
        print(f"note     prompts/removals on frame(s) {stats.events_not_reached} were not reached (the run stopped first)")
    if args.out or args.jsonl:
        print("wrote    " + ", ".join(x for x in (args.out, args.jsonl) if x))
    return 0
