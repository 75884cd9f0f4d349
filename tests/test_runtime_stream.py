"""Streaming: the drop-oldest queue (unit, with a fake slow model), ``run_stream`` on generated videos
(fake tiny graphs for the long memory run, the exported MobileSAM for a short real run checked
against direct Predictor calls), and ``samdeploy stream``."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from samdeploy.errors import InputError, MissingFileError
from samdeploy.runtime.stream import FrameQueue, StreamPrompts, rss_bytes, run_stream


def write_video(path: Path, n: int, hw=(96, 128), fps: float = 25.0) -> Path:
    """A video panning over a real photograph (scikit-image 'astronaut'): smooth motion."""
    import cv2

    from samdeploy.images import default_photographs

    img = default_photographs(("astronaut",))["astronaut"]
    h, w = hw
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    vw = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        x = int(150 + 100 * np.sin(i / 15))
        y = int(150 + 60 * np.cos(i / 20))
        vw.write(cv2.cvtColor(img[y : y + h, x : x + w], cv2.COLOR_RGB2BGR))
    vw.release()
    return path


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "pan.avi", 300)


# ---- the queue ------------------------------------------------------------------------------------
def test_queue_drop_keeps_newest():
    q = FrameQueue(1, drop=True)
    for i in range(5):
        assert q.put(i)
    assert q.get() == 4 and q.dropped == 4  # the model sees the newest frame, 4 stale ones dropped
    q2 = FrameQueue(2, drop=True)
    for i in range(5):
        q2.put(i)
    assert [q2.get(), q2.get()] == [3, 4] and q2.dropped == 3
    q2.finish()
    assert q2.get() is None
    with pytest.raises(TimeoutError):
        FrameQueue(1).get(timeout=0.01)


def test_queue_no_drop_blocks_producer_until_consumed():
    q = FrameQueue(1, drop=False)
    got = []

    def produce():
        for i in range(4):
            q.put(i)
        q.finish()

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.05)
    assert len(q) == 1 and t.is_alive()  # blocked on a full queue
    while (item := q.get(timeout=2)) is not None:
        got.append(item)
    t.join(2)
    assert got == [0, 1, 2, 3] and q.dropped == 0


def test_queue_close_releases_blocked_producer():
    q = FrameQueue(1, drop=False)
    q.put(0)
    result = []
    t = threading.Thread(target=lambda: result.append(q.put(1)))
    t.start()
    time.sleep(0.02)
    q.close()
    t.join(2)
    assert result == [False] and not t.is_alive()


class SlowFakePredictor:
    """A model slower than the source: records which frames it saw."""

    def __init__(self, delay: float):
        self.delay = delay
        self.seen: list[int] = []
        self.hw = (0, 0)

    def set_image(self, image):
        self.seen.append(int(image[0, 0, 0]))  # the source writes its index into pixel (0, 0)
        self.hw = image.shape[:2]
        time.sleep(self.delay)

    def predict_batch(self, point_coords=None, point_labels=None, boxes=None, multimask_output=True, **kw):
        k = len(boxes) if boxes is not None else len(point_coords)
        c = 3 if multimask_output else 1
        masks = np.zeros((k, c, *self.hw), bool)
        masks[..., :4, :4] = True
        return masks, np.ones((k, c), np.float32), None


def _live_frames(n: int, period: float):
    for i in range(n):
        f = np.zeros((16, 16, 3), np.uint8)
        f[0, 0, 0] = i
        time.sleep(period)
        yield f


def test_run_stream_drops_stale_frames_with_slow_model():
    model = SlowFakePredictor(delay=0.03)
    results = []
    stats = run_stream(model, _live_frames(60, 0.004), StreamPrompts(boxes=[[0, 0, 8, 8]]),
                       on_result=lambda r: results.append(r.index))
    assert stats.drop and stats.frames_read == 60
    assert stats.frames_dropped > 20  # the model runs at ~1/7 of the source rate
    assert stats.frames_processed + stats.frames_dropped == stats.frames_read
    assert results == model.seen and all(b > a for a, b in zip(results, results[1:]))
    assert results[-1] == 59  # the newest frame is never dropped


def test_run_stream_no_drop_processes_every_frame_in_order():
    model = SlowFakePredictor(delay=0.005)
    stats = run_stream(model, _live_frames(30, 0.0), StreamPrompts(points=[[3, 3]]), drop=False)
    assert model.seen == list(range(30)) and stats.frames_dropped == 0 and stats.frames_processed == 30
    # Stopping early: frames still in flight are not reported as read or dropped.
    stats = run_stream(SlowFakePredictor(0.0), _live_frames(30, 0.0), StreamPrompts(points=[[3, 3]]), drop=False, max_frames=5)
    assert (stats.frames_read, stats.frames_processed, stats.frames_dropped) == (5, 5, 0)


# ---- real graphs on generated videos -------------------------------------------------------------------
def test_long_run_memory_is_flat(fake_model_dir, long_video, tmp_path):
    """300 frames through the (tiny, fast) contract-v1 graphs with tracking, video + JSONL sinks:
    RSS after the last frame stays within a few MB of RSS after frame 50."""
    from samdeploy.runtime import Predictor
    from samdeploy.runtime.stream import JsonlSink, VideoSink, annotate

    rss = {}
    video = VideoSink(tmp_path / "out.avi", 25)
    jsonl = JsonlSink(tmp_path / "frames.jsonl", rle=True)

    def on_result(r):
        video.write(annotate(r))
        jsonl.write(r)
        if r.index in (50, 299):
            rss[r.index] = rss_bytes()

    with Predictor(fake_model_dir, threads=1) as pred:
        stats = run_stream(pred, long_video, StreamPrompts(points=[[60, 40]], boxes=[[10, 10, 50, 60]]),
                           track=True, on_result=on_result)
    video.close()
    jsonl.close()
    assert not stats.drop and stats.frames_read == stats.frames_processed == 300 and stats.frames_dropped == 0
    assert stats.fps > 0 and stats.model_ms_mean > 0
    growth = (rss[299] - rss[50]) / 2**20
    print(f"\nfake graphs: {stats.fps:.1f} FPS, RSS frame 50 {rss[50] / 2**20:.1f} MB -> frame 299 {rss[299] / 2**20:.1f} MB")
    assert growth < 8.0, f"RSS grew by {growth:.1f} MB over 250 frames"
    lines = (tmp_path / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 300 and [json.loads(x)["frame"] for x in lines] == list(range(300))
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 300
    cap.release()


def test_real_model_frames_match_direct_predictor_calls(exported_model_dir, tmp_path):
    """The exported MobileSAM on 3 frames with tracking: every frame's masks equal a direct
    Predictor call with the prompt that frame used, and the tracked box is the enlarged mask box."""
    import cv2

    from samdeploy.runtime import Predictor

    video = write_video(tmp_path / "short.mp4", 3)
    results = []
    with Predictor(exported_model_dir("mobile_sam"), threads=2) as pred:
        stats = run_stream(pred, video, StreamPrompts(points=[[64, 48]], boxes=[[20, 10, 90, 70]]), track=True,
                           on_result=lambda r: results.append(r))
        print(f"\nmobile_sam (ONNX Runtime CPU): {stats.fps:.2f} FPS, model {stats.model_ms_mean:.0f} ms/frame")
        cap = cv2.VideoCapture(str(video))
        for r in results:
            ok, bgr = cap.read()
            assert ok
            pred.set_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            for k in range(2):
                if r.prompt_boxes[k] is not None:
                    m, s, _ = pred.predict_batch(boxes=np.array([r.prompt_boxes[k]]), multimask_output=False)
                    want = m[0, 0]
                else:
                    m, s, _ = pred.predict(point_coords=np.array([r.prompt_points[k]]), point_labels=np.array([1]))
                    want = m[s.argmax()]
                assert (want == r.masks[k]).mean() > 0.999
        cap.release()
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].prompt_points[0] == [64.0, 48.0] and results[1].prompt_points[0] is None
    h, w = results[0].image.shape[:2]
    for k in range(2):
        if results[0].areas[k]:
            x0, y0, x1, y1 = results[0].boxes[k].astype(float)
            mx, my = 0.1 * (x1 + 1 - x0) + 2, 0.1 * (y1 + 1 - y0) + 2
            want = [max(0, x0 - mx), max(0, y0 - my), min(w, x1 + 1 + mx), min(h, y1 + 1 + my)]
            np.testing.assert_allclose(results[1].prompt_boxes[k], want, atol=0.01)


def test_bad_sources_and_prompts():
    from samdeploy.runtime.stream import open_source

    with pytest.raises(MissingFileError):
        run_stream(None, "/nonexistent/video.mp4", StreamPrompts(points=[[1, 1]]))
    with pytest.raises(InputError, match="camera 99"):  # no such camera: a typed error, no hang
        open_source("99")
    with pytest.raises(InputError, match="rtsp://127.0.0.1:1/x"):  # nothing listens on port 1
        open_source("rtsp://127.0.0.1:1/x")
    with pytest.raises(InputError, match="no prompt"):
        StreamPrompts()
    with pytest.raises(InputError, match="x1 >= x0"):
        StreamPrompts(boxes=[[10, 10, 5, 20]])
    with pytest.raises(InputError, match="queue_size"):
        run_stream(None, [np.zeros((4, 4, 3), np.uint8)], StreamPrompts(points=[[1, 1]]), queue_size=5)


# ---- CLI --------------------------------------------------------------------------------------------
def test_stream_cli(fake_model_dir, tmp_path, capsys):
    from samdeploy.cli.main import main

    video = write_video(tmp_path / "clip.mp4", 12)
    code = main(["stream", str(video), "--model-dir", str(fake_model_dir), "--box", "10,10,60,50", "--point", "70,40",
                 "--track", "--out", str(tmp_path / "frames"), "--json", str(tmp_path / "f.jsonl"), "--max-frames", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "processed 5" in out and "FPS" in out
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:06d}.png" for i in range(5)]
    rows = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and len(rows[0]["objects"]) == 2
    assert not list(tmp_path.glob(".*partial*"))  # temporary files renamed away
    assert "[FP32 | onnxruntime CPUExecutionProvider]" in out and "random weights" not in out
    code = main(["stream", str(tmp_path / "missing.mp4"), "--model-dir", str(fake_model_dir), "--point", "1,1"])
    assert code == 2 and "video not found" in capsys.readouterr().err
    code = main(["stream", str(video), "--model-dir", str(fake_model_dir), "--box", "1,2,3"])
    assert code == 2 and "--box" in capsys.readouterr().err


def test_stream_cli_says_once_that_random_weights_are_meaningless(tmp_path, capsys):
    from fixtures_runtime import fake_contract, write_fake_model
    from samdeploy.cli.main import main

    model = write_fake_model(tmp_path / "m", fake_contract(weights="random:fake:seed=0"))
    video = write_video(tmp_path / "clip.mp4", 6)
    code = main(["stream", str(video), "--model-dir", str(model), "--box", "10,10,60,50", "--max-frames", "6"])
    out = capsys.readouterr().out
    assert code == 0 and "processed 6" in out
    assert out.count("random weights") == 1 and "tracking may grow to the whole frame" in out
