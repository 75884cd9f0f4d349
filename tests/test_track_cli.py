"""``samdeploy track`` and ``runtime/track_stream.run_track``: prompt parsing (flags, ``--at``, JSON files),
the bad-input corpus (exit 2, one typed message, nothing written), the live-source drop policy, the JSONL
content (COCO RLE decoded by pycocotools against the tracker's masks), the sinks' atomicity (errors discard,
Ctrl-C keeps), the progress bar, the summary; with a fake Tracker (``samdeploy.runtime.tracker.Tracker``
monkeypatched), plus one real end-to-end run on a SAM2.1 video export when the exporter can make one.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from samdeploy.cli.main import build_parser, main
from samdeploy.errors import InputError, MissingFileError, NumericalError
from samdeploy.runtime.tracker import TrackedObject, TrackResult

HW = (96, 128)
N_FRAMES = 6


def write_video(path: Path, n: int = N_FRAMES, hw=HW, fps: float = 25.0) -> Path:
    """A short MJPG/mp4v video of a real photograph whose top-left pixel's red channel encodes the index."""
    import cv2

    from samdeploy.images import default_photographs

    img = default_photographs(("astronaut",))["astronaut"]
    h, w = hw
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    vw = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        vw.write(cv2.cvtColor(np.ascontiguousarray(img[100 + 3 * i: 100 + 3 * i + h, 150: 150 + w]), cv2.COLOR_RGB2BGR))
    vw.release()
    return path


# ---- the fake Tracker ---------------------------------------------------------------------------------------
class FakeTracker:
    """The Tracker's API, no model: each object's mask is its prompt's box (clicks: a 21x21 square around
    the first click) shifted right by one pixel per frame; object 2 is absent on frame 3. Records
    every call; ``fail_on`` = (frame, exception) raises from ``track``; ``delay`` slows it down."""

    last: "FakeTracker | None" = None
    fail_on: tuple[int, BaseException] | None = None
    delay = 0.0

    def __init__(self, model_dir, *, backend="onnxruntime", providers=None, threads=None, num_frames=None,
                 memory_storage=None, fill_hole_area=0, max_objects=16, allow_outside_points=False):
        if not Path(model_dir).is_dir():
            raise MissingFileError(f"model directory not found: {model_dir}")
        self.kwargs = dict(backend=backend, providers=providers, threads=threads, num_frames=num_frames,
                           memory_storage=memory_storage, fill_hole_area=fill_hole_area)
        self.max_objects, self.allow_outside_points = max_objects, allow_outside_points
        self.calls: list[tuple] = []
        self.masks: dict[int, dict[int, np.ndarray]] = {}  # frame_index -> obj -> mask
        self.seen: list[int] = []  # red channel of pixel (0, 0) of each tracked frame
        self.closed = False
        FakeTracker.last = self
        self.reset()

    def reset(self):
        self._objects: dict[int, dict] = {}
        self.frame_index = 0
        self.calls.append(("reset",))

    def add_object(self, obj_id, *, points=None, labels=None, box=None, mask=None, frame_size=None):
        from samdeploy.runtime.prompts import check_boxes, check_points

        h, w = frame_size
        check_points(points, labels, batched=False, image_size=(h, w), allow_outside=self.allow_outside_points)
        check_boxes(box, batched=False, image_size=(h, w), allow_outside=self.allow_outside_points)
        if obj_id not in self._objects and len(self._objects) >= self.max_objects:
            raise InputError(f"already tracking {len(self._objects)} objects (max_objects={self.max_objects})")
        if mask is not None:
            ys, xs = np.nonzero(mask)
            rect = [xs.min(), ys.min(), xs.max(), ys.max()]
        elif box is not None:
            rect = [int(v) for v in box]
        else:
            x, y = (int(v) for v in np.asarray(points)[0])
            rect = [x - 10, y - 10, x + 10, y + 10]
        self._objects[obj_id] = {"rect": rect, "pending": True}
        self.calls.append(("add", self.frame_index, obj_id, {k: v for k, v in
                           dict(points=points, labels=labels, box=box, mask=mask).items() if v is not None}))

    def remove_object(self, obj_id, strict=True):
        if obj_id not in self._objects:
            raise InputError(f"no object with id {obj_id} is tracked (tracked: {sorted(self._objects)})")
        del self._objects[obj_id]
        self.calls.append(("remove", self.frame_index, obj_id))

    def track(self, frame, image_format="RGB", *, return_logits=False):
        if FakeTracker.fail_on is not None and FakeTracker.fail_on[0] == self.frame_index:
            raise FakeTracker.fail_on[1]
        if FakeTracker.delay:
            time.sleep(FakeTracker.delay)
        self.seen.append(int(frame[0, 0, 0]))
        h, w = frame.shape[:2]
        f = self.frame_index
        objs, self.masks[f] = [], {}
        for oid, o in self._objects.items():
            x0, y0, x1, y1 = o["rect"]
            m = np.zeros((h, w), bool)
            absent = oid == 2 and f == 3
            if not absent:
                m[max(y0, 0): max(y1, 0) + 1, max(x0 + f, 0): max(x1 + f, 0) + 1] = True
            ys, xs = np.nonzero(m)
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else None
            self.masks[f][oid] = m
            objs.append(TrackedObject(oid, m, -3.0 if absent else 2.5 + 0.1 * oid, 0.9, not absent, box, o["pending"]))
            o["pending"] = False
        self.frame_index += 1
        return TrackResult(f, objs, {"encoder": 1.0, "total": 2.0}, {})

    def memory_footprint(self):
        n = len(self._objects)
        return {"maskmem_bytes": 4096 * n, "obj_ptr_bytes": 1024 * n, "frames_held": 2 * n}

    def describe(self):
        return {"backend": "onnxruntime", "model_id": "sam2.1/sam2.1_hiera_t@fake", "precision": "FP32",
                "random_weights": False, "decoder": {"providers": ["CPUExecutionProvider"]}}

    def close(self):
        self.closed = True


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setattr("samdeploy.runtime.tracker.Tracker", FakeTracker)
    monkeypatch.setattr(FakeTracker, "fail_on", None)
    monkeypatch.setattr(FakeTracker, "delay", 0.0)
    FakeTracker.last = None
    model = tmp_path / "model"
    model.mkdir()
    return model


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("track_video") / "clip.avi")


def _parse(*argv: str):
    from samdeploy.cli.track_cmd import build_prompts

    args = build_parser("track").parse_args(["track", "clip.avi", "--model-dir", "m", *argv])
    return build_prompts(args)


def _outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("model", "clip.avi", "prompts.json"))


# ---- parsing ---------------------------------------------------------------------------------------------------
def test_flags_become_prompts_per_frame_and_object():
    p = _parse("--box", "1:10,20,60,70", "--point", "2:30,40", "--point", "2:35,45,0",
               "--at", "3", "--point", "3:5,6", "--box", "3:1,2,30,40", "--at", "4", "--remove", "2")
    assert sorted(p.frames) == [0, 3] and p.remove == {4: [2]}
    assert p.frames[0][1]["box"].tolist() == [10, 20, 60, 70] and "points" not in p.frames[0][1]
    assert p.frames[0][2]["points"].tolist() == [[30, 40], [35, 45]]  # one multi-click prompt
    assert p.frames[0][2]["labels"].tolist() == [1, 0]
    assert p.frames[3][3]["box"].tolist() == [1, 2, 30, 40] and p.frames[3][3]["points"].tolist() == [[5, 6]]
    assert p.object_ids == [1, 2, 3] and p.frame_indices == [0, 3, 4] and p.max_concurrent == 3


def test_prompt_file_schema_and_merge_with_flags(tmp_path):
    from samdeploy.runtime.rle import mask_to_rle

    m = np.zeros(HW, bool)
    m[10:30, 20:50] = True
    doc = {"version": 1,
           "frames": {"0": {"1": {"box": [1, 2, 3, 4]}},
                      "2": {"2": {"points": [[5, 6], [7, 8]], "labels": [1, 0]}, "3": {"mask": mask_to_rle(m)}}},
           "remove": {"4": [2]}}
    f = tmp_path / "prompts.json"
    f.write_text(json.dumps(doc))
    p = _parse("--prompts", str(f), "--point", "7:1,1")
    assert sorted(p.frames) == [0, 2] and sorted(p.frames[0]) == [1, 7] and p.remove == {4: [2]}
    assert (p.frames[2][3]["mask"] == m).all() and p.frames[2][2]["labels"].tolist() == [1, 0]
    # a mask given as a PNG next to the prompts file (relative path)
    from samdeploy.runtime.overlay import write_png

    write_png(tmp_path / "m.png", m)
    f.write_text(json.dumps({"frames": {"1": {"5": {"mask": "m.png"}}}}))
    assert (_parse("--prompts", str(f)).frames[1][5]["mask"] == m).all()
    with pytest.raises(InputError, match="prompted by both"):
        _parse("--prompts", str(f), "--at", "1", "--box", "5:1,1,2,2")


BAD_FILES = [
    ("not json {", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"frame": {}}, "unknown key"),
    ({"frames": {"-1": {"1": {"box": [1, 1, 2, 2]}}}}, "frame '-1'"),
    ({"frames": {"1.5": {"1": {"box": [1, 1, 2, 2]}}}}, "frame '1.5'"),
    ({"frames": {"0": {"one": {"box": [1, 1, 2, 2]}}}}, "object id (frame 0) 'one'"),
    ({"frames": {"0": {"1": {"boxes": [1, 1, 2, 2]}}}}, "unknown prompt key"),
    ({"frames": {"0": {"1": {"box": [1, 1, 2]}}}}, "frame 0, object 1: box must be"),
    ({"frames": {"0": {"1": {"box": [5, 1, 2, 9]}}}}, "inverted"),
    ({"frames": {"0": {"1": {"box": ["a", 1, 2, 9]}}}}, "must be numbers"),
    ('{"frames": {"0": {"1": {"box": [1, NaN, 2, 9]}}}}', "NaN"),
    ({"frames": {"3": {"1": {"points": [[1e39, 5]]}}}}, "frame 3, object 1: points contains NaN or inf"),
    ({"frames": {"0": {"1": {"points": [1, 2]}}}}, "list of [x, y] pairs"),
    ({"frames": {"0": {"1": {"points": [[1, 2]], "labels": [1, 0]}}}}, "labels"),
    ({"frames": {"0": {"1": {"points": [[1, 2]], "labels": [2]}}}}, "1 (foreground) or 0"),
    ({"frames": {"0": {"1": {"labels": [1]}}}}, "labels without points"),
    ({"frames": {"0": {"1": {}}}}, "empty prompt"),
    ({"frames": {"0": {"1": {"mask": "none.png", "box": [1, 1, 2, 2]}}}}, "either a mask"),
    ({"frames": {"0": {"1": {"mask": "none.png"}}}}, "none.png"),
    ({"frames": {"0": {"1": {"mask": {"size": [4, 4], "counts": "zz"}}}}}, "frame 0, object 1: mask"),
    ({"frames": {"0": []}}, "frame 0 must map object ids"),
    ({"frames": {"0": {"1": {"box": [1, 1, 2, 2]}}}, "remove": {"3": 1}}, "remove[3] must be a list"),
    ({"frames": {"0": {"1": {"box": [1, 1, 2, 2]}}}, "remove": {"3": [9]}}, "object 9 is removed on frame 3"),
    ({"frames": {"5": {"1": {"box": [1, 1, 2, 2]}}}, "remove": {"3": [1]}}, "not tracked then"),
    ({"frames": {"3": {"1": {"box": [1, 1, 2, 2]}}}, "remove": {"3": [1]}}, "not tracked then"),  # same frame
    ({"version": 2, "frames": {}}, "version 2"),
    ({"frames": {"0": {"1": {"box": [1, 1, 2, 2]}}, "00": {"2": {"box": [1, 1, 2, 2]}}}}, "given twice"),
]


@pytest.mark.parametrize("content, says", BAD_FILES, ids=[s for _, s in BAD_FILES])
def test_bad_prompt_files_exit_2_and_write_nothing(content, says, fake, clip, tmp_path, capsys):
    f = tmp_path / "prompts.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    rc = main(["track", str(clip), "--model-dir", str(fake), "--prompts", str(f),
               "--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert says in err and str(f) in err and "Traceback" not in err, err
    assert FakeTracker.last is None  # refused before any model is opened
    assert _outputs(tmp_path) == []


def test_missing_prompt_file(fake, clip, tmp_path, capsys):
    rc = main(["track", str(clip), "--model-dir", str(fake), "--prompts", str(tmp_path / "nope.json")])
    assert rc == 2 and "prompts file not found" in capsys.readouterr().err


# ---- the bad-input corpus ---------------------------------------------------------------------------------------
# (id, extra argv, text the error must contain). Every case: exit 2, one short message, no output left.
BAD_CLI = [
    ("no-prompt", [], "no prompt given"),
    ("box-no-id", ["--box", "1,1,9,9"], "has no object id"),
    ("box-bad-id", ["--box", "x:1,1,9,9"], "object id 'x'"),
    ("box-negative-id", ["--box", "-1:1,1,9,9"], "object id '-1'"),
    ("box-arity", ["--box", "1:1,1,9"], "has 3 values"),
    ("box-text", ["--box", "1:a,b,c,d"], "cannot parse --box"),
    ("box-inverted", ["--box", "1:50,20,10,80"], "inverted"),
    ("box-twice", ["--box", "1:1,1,9,9", "--box", "1:2,2,9,9"], "already has a box"),
    ("box-outside", ["--box", "1:0,0,500,50"], "--allow-outside-points"),
    ("point-nan", ["--point", "1:nan,5"], "NaN"),
    ("point-inf", ["--point", "1:inf,5"], "NaN or inf"),
    ("point-1e39", ["--point", "1:1e39,5"], "float32"),
    ("point-label", ["--point", "1:5,5,7"], "label 7"),
    ("point-outside-later-frame", ["--box", "1:1,1,9,9", "--at", "3", "--point", "2:129,5"], "frame 3, object 2"),
    ("point-negative", ["--point", "1:-5,10"], "outside"),
    ("mask-missing", ["--mask", "1:nope.png"], "nope.png"),
    ("at-negative", ["--at", "-1", "--box", "1:1,1,9,9"], "--at '-1'"),
    ("at-text", ["--at", "x", "--box", "1:1,1,9,9"], "--at 'x'"),
    ("at-dangling", ["--box", "1:1,1,9,9", "--at", "3"], "followed by no"),
    ("remove-without-at", ["--box", "1:1,1,9,9", "--remove", "1"], "needs a frame"),
    ("remove-unknown-id", ["--box", "1:1,1,9,9", "--at", "2", "--remove", "7"], "object 7 is removed on frame 2"),
    ("frame-beyond-video", ["--box", "1:1,1,9,9", "--at", "99", "--box", "2:1,1,9,9"], "frame(s) [99]"),
    ("max-frames", ["--box", "1:1,1,9,9", "--max-frames", "0"], "--max-frames"),
    ("max-objects", ["--box", "1:1,1,9,9", "--box", "2:1,1,9,9", "--max-objects", "1"], "max_objects is 1"),
    ("fill-hole-area", ["--box", "1:1,1,9,9", "--fill-hole-area", "-1"], "--fill-hole-area"),
    ("out-extension", ["--box", "1:1,1,9,9", "--out", "{tmp}/x.gif"], "not a video extension"),
    ("json-is-dir", ["--box", "1:1,1,9,9", "--json", "{tmp}"], "is a directory"),
]


@pytest.mark.parametrize("extra, says", [pytest.param(e, s, id=i) for i, e, s in BAD_CLI])
def test_bad_cli_input_exits_2_before_the_model_opens(extra, says, fake, clip, tmp_path, capsys):
    argv = ["track", str(clip), "--model-dir", str(fake), *[a.format(tmp=tmp_path) for a in extra]]
    if "--out" not in extra and "--json" not in extra:
        argv += ["--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "o.jsonl")]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert says in err and "Traceback" not in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) <= 3, err
    assert FakeTracker.last is None
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize("content, says", [(None, "video not found"), (b"", "cannot open"),
                                           (b"not a video" * 50, "cannot open")])
def test_unreadable_videos(content, says, fake, tmp_path, capsys):
    video = tmp_path / "bad.mp4"
    if content is not None:
        video.write_bytes(content)
    rc = main(["track", str(video), "--model-dir", str(fake), "--box", "1:1,1,9,9", "--json", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and says in err and str(video) in err and "Traceback" not in err, err
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".*partial*"))


def test_zero_frame_video(fake, tmp_path, capsys):
    import cv2

    video = tmp_path / "zero.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    vw.release()
    rc = main(["track", str(video), "--model-dir", str(fake), "--box", "1:1,1,9,9", "--json", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and ("yielded no frames" in err or "cannot open" in err), err
    assert not (tmp_path / "o.jsonl").exists() and not list(tmp_path.glob(".*partial*"))


def test_real_tracker_refuses_missing_model_and_image_only_export(fake_model_dir, clip, tmp_path, capsys):
    """The real Tracker (not the fake): a missing directory, and an export without the video graphs
    (ContractError), are one clear message each, exit 2, nothing written."""
    for model, says in ((tmp_path / "no_model", "model directory not found"), (fake_model_dir, "no video graphs")):
        rc = main(["track", str(clip), "--model-dir", str(model), "--box", "1:1,1,9,9",
                   "--out", str(tmp_path / "o.mp4"), "--json", str(tmp_path / "o.jsonl")])
        err = capsys.readouterr().err
        assert rc == 2 and says in err and "export" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["o.mp4", "frames"])
def test_errors_while_tracking_discard_partial_outputs(out, fake, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(FakeTracker, "fail_on", (3, NumericalError("the track_decoder graph produced non-finite values")))
    rc = main(["track", str(clip), "--model-dir", str(fake), "--box", "1:10,10,40,40",
               "--out", str(tmp_path / out), "--json", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite" in err and "Traceback" not in err
    assert FakeTracker.last.closed and _outputs(tmp_path) == []  # no video, no frames dir, no JSONL, no .partial


def test_tracker_input_error_mid_run_names_the_frame_and_object(fake, clip, tmp_path, capsys, monkeypatch):
    """A prompt the Tracker refuses when it is applied (here: too many objects at once for the tracker)."""
    monkeypatch.setattr("samdeploy.runtime.track_stream.TrackPrompts.check_objects", lambda self, n: None)
    rc = main(["track", str(clip), "--model-dir", str(fake), "--box", "1:1,1,9,9", "--at", "2", "--box", "2:1,1,9,9",
               "--max-objects", "1", "--json", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "frame 2, object 2: already tracking 1 objects" in err, err
    assert _outputs(tmp_path) == []


def test_ctrl_c_keeps_what_was_written(fake, clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(FakeTracker, "fail_on", (3, KeyboardInterrupt()))
    rc = main(["track", str(clip), "--model-dir", str(fake), "--box", "1:10,10,40,40",
               "--out", str(tmp_path / "frames"), "--json", str(tmp_path / "o.jsonl")])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    rows = (tmp_path / "o.jsonl").read_text().splitlines()
    assert [json.loads(r)["frame"] for r in rows] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:06d}.png" for i in range(3)]
    assert not list(tmp_path.glob(".*partial*"))


# ---- a full run through the fake ------------------------------------------------------------------------------------
def test_jsonl_rle_round_trip_video_and_summary(fake, clip, tmp_path, capsys):
    from pycocotools import mask as mask_utils

    rc = main(["track", str(clip), "--model-dir", str(fake), "--box", "1:10,20,40,50",
               "--at", "1", "--point", "2:80,40", "--point", "2:90,45,0", "--at", "4", "--remove", "2",
               "--out", str(tmp_path / "o.avi"), "--json", str(tmp_path / "o.jsonl"), "--threads", "1"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    tr = FakeTracker.last
    assert tr.kwargs["num_frames"] == N_FRAMES and tr.kwargs["threads"] == 1 and tr.closed
    assert [c[:3] for c in tr.calls if c[0] != "reset"] == [("add", 0, 1), ("add", 1, 2), ("remove", 4, 2)]
    assert next(c for c in tr.calls if c[:3] == ("add", 1, 2))[3]["labels"].tolist() == [1, 0]
    lines = cap.out.splitlines()
    assert lines[0].startswith("model    sam2.1/sam2.1_hiera_t@fake  [FP32 | onnxruntime CPUExecutionProvider]")
    assert any(x.startswith("object   1: present on 6/6 tracked frames (from frame 0)") for x in lines), cap.out
    assert any(x.startswith("object   2: present on 2/3 tracked frames (from frame 1, removed on frame 4)")
               for x in lines), cap.out
    assert any(x.startswith("memory   tracker state") and "peak 10.0 KB" in x for x in lines), cap.out
    assert "frames   read 6, processed 6, dropped 0" in cap.out and cap.err == ""

    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(N_FRAMES)) and [r["step"] for r in rows] == list(range(N_FRAMES))
    assert [[o["id"] for o in r["objects"]] for r in rows] == [[1], [1, 2], [1, 2], [1, 2], [1], [1]]
    assert rows[4]["removed"] == [2]
    for r in rows:
        for o in r["objects"]:
            want = tr.masks[r["frame"]][o["id"]]
            rle = dict(o["segmentation"], counts=o["segmentation"]["counts"].encode("ascii"))
            got = mask_utils.decode(rle).astype(bool)
            assert got.shape == HW and (got == want).all()
            assert o["area"] == int(want.sum()) == int(mask_utils.area(rle))
            if o["area"]:
                assert o["bbox"] == [int(v) for v in mask_utils.toBbox(rle)]
            else:
                assert o["bbox"] == [0, 0, 0, 0]
            assert o["present"] == (o["score"] > 0) and o["iou"] == 0.9
            assert o["prompted"] == (r["frame"] == {1: 0, 2: 1}[o["id"]])
    assert rows[1]["objects"][1]["prompt"] == {"points": [[80.0, 40.0], [90.0, 45.0]], "labels": [1, 0]}
    assert rows[0]["objects"][0]["prompt"] == {"box": [10.0, 20.0, 40.0, 50.0]} and "prompt" not in rows[2]["objects"][0]
    assert rows[1]["objects"][1]["present"] and not rows[3]["objects"][1]["present"]  # object 2 absent on frame 3
    assert rows[3]["objects"][1]["area"] == 0 and rows[3]["objects"][1]["score"] == -3.0

    import cv2

    vc = cv2.VideoCapture(str(tmp_path / "o.avi"))
    n, first = 0, None
    while True:
        ok, bgr = vc.read()
        if not ok:
            break
        first = bgr if first is None else first
        n += 1
    vc.release()
    assert n == N_FRAMES and first.shape[:2] == HW
    assert not list(tmp_path.glob(".*partial*"))


def test_summary_json(fake, clip, tmp_path, capsys):
    rc = main(["track", str(clip), "--model-dir", str(fake), "--box", "1:10,20,40,50", "--at", "5", "--box", "2:1,1,5,5",
               "--out", str(tmp_path / "frames"), "--max-frames", "4", "--summary-json"])
    out = capsys.readouterr().out
    assert rc == 0
    s = json.loads(out)
    assert s["frames_processed"] == 4 and s["model"] == "sam2.1/sam2.1_hiera_t@fake" and s["precision"] == "FP32"
    assert s["providers"] == ["CPUExecutionProvider"] and s["frame_count"] == N_FRAMES
    assert s["objects"]["1"]["frames_present"] == 4 and s["events_not_reached"] == [5]
    assert s["memory"] == {"maskmem_bytes": 4096, "obj_ptr_bytes": 1024, "frames_held": 2}
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:06d}.png" for i in range(4)]


def test_mask_prompts_from_png_and_npy(fake, clip, tmp_path, capsys, monkeypatch):
    from samdeploy.runtime.overlay import write_png

    m = np.zeros(HW, bool)
    m[30:60, 40:90] = True
    write_png(tmp_path / "m.png", m)
    np.save(tmp_path / "m.npy", m)
    monkeypatch.chdir(tmp_path)
    rc = main(["track", str(clip), "--model-dir", str(fake), "--mask", "1:m.png", "--at", "2", "--mask", "2:m.npy",
               "--json", "o.jsonl"])
    assert rc == 0, capsys.readouterr().err
    adds = {c[2]: c for c in FakeTracker.last.calls if c[0] == "add"}
    assert adds[1][1] == 0 and adds[2][1] == 2
    assert (adds[1][3]["mask"] == m).all() and (adds[2][3]["mask"] == m).all()
    row = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[2])
    assert row["objects"][1]["prompt"] == {"mask_area": int(m.sum())}
    small = np.zeros((10, 10), bool)
    np.save(tmp_path / "small.npy", small)
    assert main(["track", str(clip), "--model-dir", str(fake), "--mask", "1:small.npy"]) == 2
    assert "mask is 10x10 (HxW) but the video frames are 96x128" in capsys.readouterr().err


def test_progress_bar_only_on_a_terminal(fake, clip, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["track", str(clip), "--model-dir", str(fake), "--box", "1:10,20,40,50"]) == 0
    err = capsys.readouterr().err
    assert f"frame {N_FRAMES}/{N_FRAMES}" in err and "track [" in err and "present" in err
    assert main(["track", str(clip), "--model-dir", str(fake), "--box", "1:10,20,40,50", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_help_lists_track(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "track" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["track", "--help"])
    text = capsys.readouterr().out
    for flag in ("--box", "--point", "--mask", "--at", "--remove", "--prompts", "--drop", "--no-drop", "--max-frames",
                 "--json", "--out", "--quiet", "--summary-json", "--providers"):
        assert flag in text


# ---- run_track from Python: the live-source drop policy ----------------------------------------------------------------
def _live_frames(n: int, period: float):
    for i in range(n):
        f = np.zeros((16, 16, 3), np.uint8)
        f[0, 0, 0] = i
        time.sleep(period)
        yield f


def test_run_track_live_source_drops_stale_frames(monkeypatch):
    from samdeploy.runtime.track_stream import TrackPrompts, run_track

    monkeypatch.setattr(FakeTracker, "fail_on", None)
    monkeypatch.setattr(FakeTracker, "delay", 0.03)
    tr = FakeTracker(Path("."))
    prompts = TrackPrompts({0: {1: {"box": [0, 0, 4, 4]}}, 20: {2: {"points": [[8, 8]]}}}, remove={45: [1]})
    got = []
    stats = run_track(tr, _live_frames(60, 0.004), prompts, on_result=got.append)
    assert stats.live and stats.drop and stats.frames_read == 60
    assert stats.frames_dropped > 20 and stats.frames_processed + stats.frames_dropped == stats.frames_read
    idx = [f.index for f in got]
    assert idx == tr.seen and all(b > a for a, b in zip(idx, idx[1:])) and idx[-1] == 59  # newest never dropped
    assert [f.step for f in got] == list(range(len(got)))  # the tracker saw consecutive frames
    # frame 0 is always processed; the frame-20 prompt lands on the first processed frame >= 20
    assert got[0].index == 0 and 1 in got[0].prompts
    first20 = next(f for f in got if f.index >= 20)
    assert 2 in first20.prompts and all(2 not in [o.obj_id for o in f.objects] for f in got if f.index < 20)
    first45 = next(f for f in got if f.index >= 45)
    assert first45.removed == [1] and all(1 not in [o.obj_id for o in f.objects] for f in got if f.index >= 45)


def test_run_track_no_drop_processes_every_frame_and_checks_events():
    from samdeploy.runtime.track_stream import run_track

    tr = FakeTracker(Path("."))
    got = []
    stats = run_track(tr, _live_frames(12, 0.0), {0: {1: {"box": [0, 0, 4, 4]}}}, remove={5: [1]}, drop=False,
                      on_result=got.append)
    assert tr.seen == list(range(12)) and stats.frames_dropped == 0 and stats.frames_processed == 12
    assert stats.objects[1]["frames_tracked"] == 5 and stats.objects[1]["removed_at"] == 5
    assert stats.memory == {"maskmem_bytes": 0, "obj_ptr_bytes": 0, "frames_held": 0}
    assert stats.memory_peak_bytes == 4096 + 1024
    # prompts the source never reaches are an error; stopping early only lists them
    with pytest.raises(InputError, match=r"frame\(s\) \[20\].*ended after 12 frames"):
        run_track(FakeTracker(Path(".")), _live_frames(12, 0.0), {20: {1: {"box": [0, 0, 4, 4]}}}, drop=False)
    s = run_track(FakeTracker(Path(".")), _live_frames(12, 0.0), {0: {1: {"box": [0, 0, 4, 4]}}, 20: {2: {"box": [0, 0, 4, 4]}}},
                  drop=False, max_frames=3)
    assert s.frames_processed == 3 and s.events_not_reached == [20]
    # the first frame's size checks every prompt, before anything is tracked
    tr = FakeTracker(Path("."))
    with pytest.raises(InputError, match="frame 7, object 3: point_coords has a coordinate"):
        run_track(tr, _live_frames(12, 0.0), {0: {1: {"box": [0, 0, 4, 4]}}, 7: {3: {"points": [[40, 1]]}}})
    assert tr.seen == []
    with pytest.raises(InputError, match="no prompt"):
        run_track(tr, _live_frames(2, 0.0), {})
    with pytest.raises(InputError, match="max_frames"):
        run_track(tr, _live_frames(2, 0.0), {0: {1: {"box": [0, 0, 4, 4]}}}, max_frames=0)


def test_run_track_stop_event_and_capture_errors():
    from samdeploy.runtime.track_stream import run_track

    stop = threading.Event()
    got = []

    def on_result(f):
        got.append(f.index)
        if f.index == 2:
            stop.set()

    run_track(FakeTracker(Path(".")), _live_frames(50, 0.0), {0: {1: {"box": [0, 0, 4, 4]}}}, drop=False,
              on_result=on_result, stop=stop)
    assert got == [0, 1, 2]

    def broken():
        yield np.zeros((16, 16, 3), np.uint8)
        raise OSError("camera unplugged")

    with pytest.raises(InputError, match="camera unplugged"):
        run_track(FakeTracker(Path(".")), broken(), {0: {1: {"box": [0, 0, 4, 4]}}}, drop=False)


def test_annotate_tracks_colours_follow_object_ids():
    from samdeploy.runtime.overlay import id_colours
    from samdeploy.runtime.track_stream import TrackFrame, annotate_tracks

    img = np.full((128, 128, 3), 128, np.uint8)
    m1 = np.zeros((128, 128), bool)
    m1[2:60, 2:60] = True
    m5 = np.zeros((128, 128), bool)
    m5[70:120, 70:120] = True
    objs = [TrackedObject(5, m5, 3.0, 0.9, True, (70, 70, 119, 119), False),
            TrackedObject(1, m1, 2.0, 0.9, True, (2, 2, 59, 59), False),
            TrackedObject(7, np.zeros((128, 128), bool), -2.0, 0.1, False, None, False)]
    out = annotate_tracks(TrackFrame(0, 0, 0.0, img, objs, {}, [], {}))
    c1, c5 = id_colours([1, 5]).astype(float)
    # the inside of each mask is tinted towards its id's colour, whatever the order of the objects
    assert np.abs(out[50, 50].astype(float) - (128 * 0.5 + c1 * 0.5)).max() <= 1
    assert np.abs(out[110, 110].astype(float) - (128 * 0.5 + c5 * 0.5)).max() <= 1
    assert (out[100, 10] == 128).all()  # no mask there (object 7 is absent)


# ---- one real run -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sam2_video_export(sam2_video_model):
    """The session's SAM2.1 Hiera-T video export (``fixtures_video.sam2_video_model``)."""
    return sam2_video_model[1]


def test_real_tracker_end_to_end(sam2_video_export, tmp_path, capsys):
    """8 frames of the fixtures_video clip through the real Tracker: the JSONL masks equal Tracker.track_video's."""
    import cv2
    from fixtures_video import make_video, object_box

    frames = make_video(tmp_path / "jpg", 8)
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    x0, y0, x1, y1 = object_box(0, 8, frames[0].shape[:2])
    box = [max(x0, 0), max(y0, 0), x1, y1]
    rc = main(["track", str(video), "--model-dir", str(sam2_video_export), "--box", f"1:{','.join(map(str, box))}",
               "--at", "3", "--point", "2:250,200", "--threads", "2", "--json", str(tmp_path / "t.jsonl"),
               "--out", str(tmp_path / "t.mp4")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.startswith("model    ") and "memory   tracker state" in cap.out
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(8))

    from samdeploy.runtime.rle import rle_to_mask
    from samdeploy.runtime.tracker import Tracker

    # the same decoded frames, driven through track_video
    vc = cv2.VideoCapture(str(video))
    decoded = []
    while True:
        ok, bgr = vc.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    vc.release()
    with Tracker(sam2_video_export, threads=2, num_frames=8) as tr:
        ref = list(tr.track_video(decoded, {0: {1: {"box": box}}, 3: {2: {"points": [[250, 200]], "labels": [1]}}}))
    for r, want in zip(rows, ref):
        by = want.by_id()
        assert sorted(o["id"] for o in r["objects"]) == sorted(by)
        for o in r["objects"]:
            got_mask, want_mask = rle_to_mask(o["segmentation"]), by[o["id"]].mask
            assert (got_mask == want_mask).all(), (r["frame"], o["id"], (got_mask != want_mask).sum())
            assert abs(o["score"] - by[o["id"]].score) < 1e-3
