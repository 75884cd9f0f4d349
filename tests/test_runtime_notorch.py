"""The runtime imports and runs with torch (and the oracle packages) impossible to import."""

from __future__ import annotations

import json

import numpy as np
from fixtures_runtime import run_without_torch

CHILD = r"""
import json, sys
import numpy as np
try:
    import torch  # noqa: F401
    raise SystemExit("the torch blocker does not work")
except ImportError:
    pass
import samdeploy.runtime as rt
from samdeploy.runtime import Predictor
from samdeploy.images import default_photographs
from samdeploy.cli.main import main  # the CLI entry point must not need torch either
p = Predictor(MODEL_DIR, threads=1)
img = default_photographs(("chelsea",))["chelsea"]
p.set_image(img)
masks, scores, low = p.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
bm, bs, _ = p.predict_batch(boxes=np.array([[10, 10, 200, 200], [100, 50, 400, 290]]), multimask_output=False)
np.savez(OUT, masks=masks, scores=scores, low=low, bm=bm, bs=bs)
# the CLI commands of this area, end to end
assert main(["predict", IMAGE, "--model-dir", MODEL_DIR, "--point", "200,150", "--out", CLI_OUT, "--threads", "1"]) == 0
assert main(["bench", "--model-dir", FAKE_DIR, "--runs", "1", "--warmup", "0", "--batch-sizes", "1,2", "--quiet"]) == 0
# tracking: the frame loop, JSON lines with RLE and drawing, and the track command up to the Tracker
import cv2
from samdeploy.runtime.track_stream import annotate_tracks, run_track
from samdeploy.runtime.tracker import TrackedObject, TrackResult

class TinyTracker:
    max_objects, allow_outside_points = 4, False
    def reset(self): self.ids, self.n = [], 0
    def add_object(self, oid, frame_size=None, **p): self.ids.append(oid)
    def remove_object(self, oid): self.ids.remove(oid)
    def track(self, frame):
        m = np.zeros(frame.shape[:2], bool); m[2:6, 2:6] = True
        self.n += 1
        return TrackResult(self.n - 1, [TrackedObject(i, m, 1.0, 0.5, True, (2, 2, 5, 5), self.n == 1) for i in self.ids], {}, {})
    def memory_footprint(self): return {"maskmem_bytes": 0, "obj_ptr_bytes": 0, "frames_held": 0}

rows = []
run_track(TinyTracker(), [np.zeros((16, 16, 3), np.uint8)] * 3, {0: {1: {"box": [1, 1, 8, 8]}}}, drop=False,
          on_result=lambda f: rows.append((f.to_json(), annotate_tracks(f).shape)))
assert len(rows) == 3 and rows[0][0]["objects"][0]["segmentation"]["size"] == [16, 16]
vw = cv2.VideoWriter(VIDEO, cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
for _ in range(3):
    vw.write(np.zeros((48, 64, 3), np.uint8))
vw.release()
assert main(["track", VIDEO, "--model-dir", FAKE_DIR, "--box", "1:1,1,9,9"]) == 2  # no video graphs: typed error
print(json.dumps({"torch_loaded": "torch" in sys.modules, "oracles": [m for m in ("segment_anything", "mobile_sam") if m in sys.modules]}))
"""


def test_runtime_runs_without_torch(checkpoint_export_dir, fake_model_dir, photos, tmp_path):
    import cv2

    out_dir, _, _ = checkpoint_export_dir("mobile_sam")
    out = tmp_path / "child.npz"
    image = tmp_path / "cat.png"
    cv2.imwrite(str(image), cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR))
    consts = dict(MODEL_DIR=str(out_dir), OUT=str(out), IMAGE=str(image), CLI_OUT=str(tmp_path / "cli"),
                  FAKE_DIR=str(fake_model_dir), VIDEO=str(tmp_path / "clip.avi"))
    code = "".join(f"{k} = {v!r}\n" for k, v in consts.items()) + CHILD
    proc = run_without_torch(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "cli" / "overlay.png").exists() and (tmp_path / "cli" / "masks.json").exists()
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"torch_loaded": False, "oracles": []}
    child = np.load(out)

    # Same results as the in-process predictor (which runs in a process where torch is loaded).
    from samdeploy.runtime import Predictor

    p = Predictor(out_dir, threads=1)
    p.set_image(photos["chelsea"])
    masks, scores, low = p.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
    assert child["masks"].shape == (3, 300, 451)
    assert (child["masks"] == masks).mean() > 0.999
    np.testing.assert_allclose(child["scores"], scores, atol=1e-5)
    np.testing.assert_allclose(child["low"], low, atol=1e-3)
    assert child["bm"].shape == (2, 1, 300, 451) and child["bs"].shape == (2, 1)
    p.close()
