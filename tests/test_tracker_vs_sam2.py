"""The torch-free ``Tracker`` against the official ``SAM2VideoPredictor`` (``sam2`` 1.1.0, test-only oracle).

One seeded SAM2.1 Hiera-T model (realistic decoder) is saved as ``{"model": state_dict}`` (the official
``sam2.1_hiera_tiny.pt`` layout), loaded by the official video builder and exported by us with the
video graphs (``--video``). Both track the same 64-frame JPEG video made from real photographs (camera
pans and zooms, an object that leaves the frame and comes back, ``fixtures_video``), driven the way a
live user drives SAM2VideoPredictor: prompts are added on a frame, then propagation continues from it.

The model runs at image size ``S`` = 256 here so that the test fits the suite's budget (the graphs and
the tracker are size-agnostic; ``scripts/track_parity.py --image-size 1024`` runs the same comparison at
the official size). ``fill_hole_area`` is 0 on both sides: the official predictor skips hole filling
without its CUDA extension.
"""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from fixtures_video import (SCENARIOS, VIDEO_FRAMES, VIDEO_HW as HW, VIDEO_IMAGE_SIZE, make_video,  # noqa: E402
                            object_prompt_box, run_sam2_video_oracle)

S = VIDEO_IMAGE_SIZE
N_FRAMES = VIDEO_FRAMES
MEAN_IOU_MIN, WORST_IOU_MIN = 0.98, 0.95


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    return folder, make_video(folder, N_FRAMES, HW)


@pytest.fixture(scope="module")
def model_files(sam2_video_model):
    return sam2_video_model


def run_ours(export, frames, prompts, removals):
    from samdeploy.runtime.tracker import Tracker

    with Tracker(export, threads=2, num_frames=len(frames), fill_hole_area=0) as tr:  # as the CPU oracle
        res = {r.frame_index: {o.obj_id: (o.mask, o.score) for o in r.objects}
               for r in tr.track_video(frames, prompts, removals)}
        footprint = tr.memory_footprint()
    return res, footprint


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_tracker_follows_sam2_video_predictor(scenario, video, model_files):
    folder, frames = video
    ckpt, export = model_files
    prompts, removals = SCENARIOS[scenario]
    ref = run_sam2_video_oracle(ckpt, folder, prompts, removals, N_FRAMES, S)
    got, footprint = run_ours(export, frames, prompts, removals)
    assert sorted(got) == sorted(ref) == list(range(N_FRAMES))
    ious, absent, score_err = [], 0, 0.0
    for f in range(N_FRAMES):
        assert sorted(got[f]) == sorted(ref[f]), f"frame {f}: objects {sorted(got[f])} vs {sorted(ref[f])}"
        for oid, (mask_ref, score_ref) in ref[f].items():
            mask, score = got[f][oid]
            ious.append(_iou(mask, mask_ref))
            score_err = max(score_err, abs(score - score_ref))
            absent += int(score_ref <= 0)
            assert (score > 0) == (score_ref > 0) or abs(score_ref) < 0.05, (f, oid, score, score_ref)
    ious = np.array(ious)
    print(f"\n{scenario}: {len(ious)} object-frames, mask IoU mean {ious.mean():.4f} worst {ious.min():.4f}, "
          f"object score max |diff| {score_err:.2e}, absent object-frames {absent}, state {footprint}")
    assert ious.mean() >= MEAN_IOU_MIN and ious.min() >= WORST_IOU_MIN
    assert 0 < absent < len(ious) - 5  # objects vanish and come back: both paths of the object score ran
    # bounded memory: per object its conditioning frames, masks of the last 6 frames, pointers of the last 15
    tokens = (S // 16) ** 2
    n_obj, n_cond = len(got[N_FRAMES - 1]), sum(len(per) for per in prompts.values()) - sum(map(len, removals.values()))
    assert footprint["frames_held"] == n_cond + 15 * n_obj
    assert footprint["maskmem_bytes"] == (n_cond + 6 * n_obj) * tokens * 64 * 2  # bfloat16
    if scenario == "three_objects":
        assert 2 not in got[40] and 3 in got[20] and 3 not in got[19] and 2 in got[7]


CHILD = r"""
import json, sys
import numpy as np
from PIL import Image
try:
    import torch  # noqa: F401
    raise SystemExit("the torch blocker does not work")
except ImportError:
    pass
from samdeploy.runtime import Tracker
frames = [np.asarray(Image.open(f"{FOLDER}/{i:05d}.jpg").convert("RGB")) for i in range(N)]
with Tracker(MODEL_DIR, threads=1, num_frames=N, fill_hole_area=0) as tr:
    res = list(tr.track_video(frames, PROMPTS))
np.savez(OUT, **{f"{r.frame_index}_{o.obj_id}": o.mask for r in res for o in r.objects},
         **{f"score_{r.frame_index}_{o.obj_id}": o.score for r in res for o in r.objects})
print(json.dumps({"torch_loaded": "torch" in sys.modules, "oracles": [m for m in ("sam2",) if m in sys.modules]}))
"""


def test_tracker_runs_without_torch(video, model_files, tmp_path):
    """The tracker imports and runs in a process where torch cannot be imported, with the same answers."""
    import json

    from fixtures_runtime import run_without_torch

    folder, frames = video
    n, prompts = 6, {0: {1: {"box": object_prompt_box(0)}}, 2: {2: {"points": [[250.0, 200.0]], "labels": [1]}}}
    consts = dict(FOLDER=str(folder), N=n, MODEL_DIR=str(model_files[1]), OUT=str(tmp_path / "child.npz"),
                  PROMPTS=prompts)
    proc = run_without_torch("".join(f"{k} = {v!r}\n" for k, v in consts.items()) + CHILD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"torch_loaded": False, "oracles": []}
    child = np.load(tmp_path / "child.npz")
    got, _ = run_ours(model_files[1], frames[:n], prompts, {})
    assert sorted(k for k in child.files if not k.startswith("score")) == sorted(
        f"{f}_{oid}" for f in range(n) for oid in got[f])
    for f in range(n):
        for oid, (mask, score) in got[f].items():
            assert (child[f"{f}_{oid}"] == mask).mean() > 0.999
            assert abs(float(child[f"score_{f}_{oid}"]) - score) <= 1e-4


def test_tracker_bad_input_is_typed(video, model_files, fake_model_dir):
    from samdeploy.errors import ContractError, InputError, PredictorStateError
    from samdeploy.runtime.tracker import Tracker

    _, frames = video
    with pytest.raises(ContractError, match="no video graphs"):
        Tracker(fake_model_dir)
    with Tracker(model_files[1], threads=2, fill_hole_area=0) as tr:
        with pytest.raises(PredictorStateError, match="frame size"):
            tr.add_object(1, box=object_prompt_box(0))
        tr.add_object(1, box=object_prompt_box(0), frame_size=HW)
        with pytest.raises(InputError, match="too large for float32"):
            tr.add_object(2, points=[[1e39, 5.0]], labels=[1])
        with pytest.raises(InputError, match="outside"):
            tr.add_object(2, points=[[HW[1] + 40.0, 5.0]], labels=[1])
        with pytest.raises(InputError, match="object ids"):
            tr.add_object(-3, box=object_prompt_box(0))
        with pytest.raises(InputError, match="points .*box.*mask|give points"):
            tr.add_object(4)
        with pytest.raises(InputError, match="no object with id 9"):
            tr.remove_object(9)
        r = tr.track(frames[0])
        assert [o.obj_id for o in r.objects] == [1] and r.objects[0].prompted
        assert r.provenance.get("backend") == "onnxruntime", r.provenance
        with pytest.raises(InputError, match="frame 1 is"):
            tr.track(frames[1][:100])
        with pytest.raises(InputError, match="mask has shape"):
            tr.add_object(5, mask=np.zeros((3, 3), bool))
    with pytest.raises(InputError, match="video has 2 frames"):
        with Tracker(model_files[1], threads=2) as tr:
            list(tr.track_video(frames[:2], {0: {1: {"box": object_prompt_box(0)}}, 5: {2: {"box": object_prompt_box(0)}}}))
