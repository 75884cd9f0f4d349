"""``samdeploy stream SOURCE --model-dir DIR [--point X,Y] [--box X0,Y0,X1,Y1] [--track] [--out video.mp4|DIR] [--json frames.jsonl]``

SOURCE is a video file, a camera index (``0``) or a stream URL (``rtsp://...``). Every frame is
encoded once and every object decoded: each ``--point`` is one object (a positive click), each
``--box`` one object. ``--track`` carries each object's box from its previous mask (simple
tracking). Writes an annotated video (``--out x.mp4``/``.avi``) or PNG frames (``--out DIR``) and
one JSON line per frame (``--json``). Live sources drop stale frames (the newest frame is always
processed next); files are processed frame by frame (``--drop`` to change either). Prints FPS.
Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "segment a video file / camera / RTSP stream frame by frame"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .predict_cmd import add_model_arguments

    p.add_argument("source", help="video file, camera index (0, 1, ...) or stream URL (rtsp://...)")
    add_model_arguments(p)
    g = p.add_argument_group("prompts")
    g.add_argument("--point", action="append", default=[], metavar="X,Y",
                   help="a positive click in frame pixels; each --point is one object. Repeatable")
    g.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box in frame pixels; each --box is one object. Repeatable")
    g.add_argument("--track", action="store_true",
                   help="follow objects: each frame's prompt is the (enlarged) box of the object's previous mask")
    g.add_argument("--track-margin", type=float, default=0.1, help="box enlargement per side, as a fraction (0.1)")
    s = p.add_argument_group("stream")
    d = s.add_mutually_exclusive_group()
    d.add_argument("--drop", dest="drop", action="store_true", default=None,
                   help="drop stale frames when the model is slower than the source (default for cameras/URLs)")
    d.add_argument("--no-drop", dest="drop", action="store_false",
                   help="process every frame (default for files)")
    s.add_argument("--queue-size", type=int, default=1, choices=[1, 2], help="frames waiting for the model (1)")
    s.add_argument("--max-frames", type=int, default=None, help="stop after this many processed frames")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, help="annotated video (.mp4/.avi/.mkv/.mov) or a directory for PNG frames")
    o.add_argument("--json", dest="jsonl", default=None, metavar="FILE.jsonl", help="per-frame results, one JSON line each")
    o.add_argument("--rle", action="store_true", help="include each mask as COCO RLE in the JSON lines")
    o.add_argument("--quiet", action="store_true", help="no per-second progress line")
    o.add_argument("--summary-json", action="store_true", help="print the final summary as JSON")


def run(args: argparse.Namespace) -> int:
    from samdeploy.runtime import Predictor
    from samdeploy.runtime.stream import (
        VIDEO_EXTENSIONS, FrameDirSink, JsonlSink, StreamPrompts, VideoSink, annotate, open_source, run_stream,
    )

    from ._args import identity_lines, run_identity
    from .predict_cmd import parse_floats

    prompts = StreamPrompts(points=[parse_floats(s, (2,), "--point") for s in args.point],
                            boxes=[parse_floats(s, (4,), "--box") for s in args.box])
    # Probe the source before loading the model: a wrong path fails fast.
    cap, info = open_source(args.source)
    cap.release()

    sink = None
    if args.out:
        out = Path(args.out)
        sink = VideoSink(out, info.fps) if out.suffix.lower() in VIDEO_EXTENSIONS else FrameDirSink(out)
    jsonl = JsonlSink(args.jsonl, rle=args.rle) if args.jsonl else None
    pred = Predictor(args.model_dir, encoder=args.encoder, decoder=args.decoder, backend=args.backend,
                     providers=args.providers, threads=args.threads)
    identity = run_identity(pred.describe())
    if not args.summary_json:  # said once, before the first frame
        print("\n".join(identity_lines(identity, "stream")), flush=True)
    progress = {"last": 0.0, "n": 0}
    verbose = not args.quiet and not args.summary_json and sys.stderr.isatty()

    def on_result(r) -> None:
        import time

        if isinstance(sink, VideoSink):
            sink.write(annotate(r))
        elif sink is not None:
            sink.write(annotate(r), r.index)
        if jsonl is not None:
            jsonl.write(r)
        progress["n"] += 1
        now = time.monotonic()
        if verbose and now - progress["last"] >= 1.0:
            progress["last"] = now
            areas = " ".join(str(int(a)) for a in r.areas)
            print(f"\rframe {r.index:6d}  processed {progress['n']:6d}  areas [{areas}]", end="", file=sys.stderr, flush=True)

    ok = False
    try:
        stats = run_stream(pred, args.source, prompts, track=args.track, track_margin=args.track_margin,
                           drop=args.drop, queue_size=args.queue_size, max_frames=args.max_frames, on_result=on_result)
        ok = True
    finally:
        # Keep what was written if the user pressed Ctrl-C; discard it on errors.
        interrupted = sys.exc_info()[0] is KeyboardInterrupt
        for s in (sink, jsonl):
            if s is not None:
                s.close(commit=ok or interrupted)
        pred.close()
        if verbose:
            print("", file=sys.stderr)
    summary = dict(stats.to_dict(), **identity, out=args.out, json=args.jsonl)
    if args.summary_json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"source   {stats.source}  ({'live' if stats.live else 'file'}, {stats.source_fps:.1f} fps, "
          f"{'drop stale frames' if stats.drop else 'every frame'})")
    print(f"frames   read {stats.frames_read}, processed {stats.frames_processed}, dropped {stats.frames_dropped}")
    # Guard the divisions: a sub-microsecond (or zero) mean would print an absurd FPS.
    model_fps = f"{1e3 / stats.model_ms_mean:.2f} FPS" if stats.model_ms_mean >= 1e-3 else "n/a"
    e2e_fps = f"{stats.fps:.2f} FPS" if stats.fps > 0 else "n/a"
    print(f"speed    {e2e_fps} end to end | model {stats.model_ms_mean:.1f} ms/frame "
          f"({model_fps}) | {stats.objects} object(s)"
          + (f", tracked ({stats.lost_frames} object-frames lost)" if args.track else ""))
    if args.out or args.jsonl:
        print("wrote    " + ", ".join(x for x in (args.out, args.jsonl) if x))
    return 0
