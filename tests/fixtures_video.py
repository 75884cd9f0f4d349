"""A short video made from real photographs, for the tracker tests.

The camera pans and zooms over a photograph (scikit-image's ``coffee``) while a second photograph's
patch (the cat of ``chelsea``) moves across it, leaves the frame on the right and comes back. Frames are
written as JPEG files named ``00000.jpg``... (the layout ``SAM2VideoPredictor.init_state`` reads) and
returned as the arrays those files decode to, so both trackers see identical pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: the tracker tests' model: SAM2.1 Hiera-T, seed 5, realistic decoder, at image size 256 (the graphs and
#: the tracker are size-agnostic; 256 keeps 64-frame oracle comparisons within the suite's budget)
VIDEO_VARIANT, VIDEO_SEED, VIDEO_IMAGE_SIZE = "sam2.1_hiera_t", 5, 256
#: the object-score head is shifted by this much so that objects vanish and come back (with seed 5 about
#: two thirds of the object-frames are "absent": the occlusion path runs, not only "present")
OBJECT_SCORE_SHIFT = -6.6


def _crop_resize(img: np.ndarray, x0: float, y0: float, cw: float, ch: float, out_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    box = (int(round(x0)), int(round(y0)), int(round(x0 + cw)), int(round(y0 + ch)))
    return np.asarray(Image.fromarray(img).crop(box).resize((out_hw[1], out_hw[0]), Image.BILINEAR))


def object_box(i: int, n: int, hw: tuple[int, int], size: int = 72) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the moving patch on frame i (may lie partly or wholly outside the frame)."""
    h, w = hw
    # left -> right for the first half (leaves at about 40 % of the video), then back from the right
    t = i / max(n - 1, 1)
    if t < 0.5:
        cx = 0.15 * w + t * 2.0 * 1.2 * w
    else:
        cx = 1.35 * w - (t - 0.5) * 2.0 * 0.9 * w
    cy = 0.45 * h + 0.15 * h * np.sin(6.0 * t)
    x0, y0 = int(cx - size / 2), int(cy - size / 2)
    return x0, y0, x0 + size, y0 + size


#: frames of the tracker tests' video (height, width) and its length
VIDEO_HW, VIDEO_FRAMES = (250, 333), 64


def object_prompt_box(i: int) -> list[float]:
    x0, y0, x1, y1 = object_box(i, VIDEO_FRAMES, VIDEO_HW)
    h, w = VIDEO_HW
    return [max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)]


#: frame -> {object id: prompt} (pixels of the 250x333 frames); removals: frame -> ids removed before it.
#: Used by tests/test_tracker_vs_sam2.py and scripts/track_parity.py.
SCENARIOS = {
    "one_object_box": ({0: {1: {"box": object_prompt_box(0)}}}, {}),
    "three_objects": (
        {
            0: {1: {"box": object_prompt_box(0)}},
            7: {2: {"points": [[250.0, 200.0]], "labels": [1]}},  # one click: the multimask path
            20: {3: {"points": [[60.0, 40.0], [90.0, 120.0]], "labels": [1, 0]}},  # added on frame 20
        },
        {40: [2]},  # object 2 removed on frame 40
    ),
}


def make_video(folder: Path, n: int = 64, hw: tuple[int, int] = (250, 333), quality: int = 92) -> list[np.ndarray]:
    """Write ``n`` JPEG frames into ``folder``; returns the decoded frames (HxWx3 uint8 RGB)."""
    from PIL import Image

    from samdeploy.images import default_photographs

    photos = default_photographs(("coffee", "chelsea"))
    bg, cat = photos["coffee"], photos["chelsea"]
    patch_src = cat[40:220, 120:300]  # the cat's head
    h, w = hw
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n):
        t = i / max(n - 1, 1)
        zoom = 1.0 - 0.35 * np.sin(np.pi * t)  # zoom in and out again
        ch, cw = bg.shape[0] * 0.8 * zoom, bg.shape[1] * 0.8 * zoom
        x0 = (bg.shape[1] - cw) * (0.1 + 0.8 * t)  # pan left -> right
        y0 = (bg.shape[0] - ch) * (0.5 + 0.4 * np.sin(2 * np.pi * t))
        frame = _crop_resize(bg, x0, y0, cw, ch, hw).copy()
        bx0, by0, bx1, by1 = object_box(i, n, hw)
        size = bx1 - bx0
        patch = np.asarray(Image.fromarray(patch_src).resize((size, size), Image.BILINEAR))
        fx0, fy0, fx1, fy1 = max(bx0, 0), max(by0, 0), min(bx1, w), min(by1, h)
        if fx1 > fx0 and fy1 > fy0:
            frame[fy0:fy1, fx0:fx1] = patch[fy0 - by0:fy1 - by0, fx0 - bx0:fx1 - bx0]
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(frame).save(path, quality=quality)
        frames.append(np.asarray(Image.open(path).convert("RGB")))
    return frames


def sam2_video_oracle(ckpt: Path, image_size: int = 1024, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"):
    """The official ``SAM2VideoPredictor`` (``build_sam2_video_predictor``, default post-processing) on
    an official-layout checkpoint, at ``image_size`` (hydra override ``++model.image_size``)."""
    import warnings

    from sam2.build_sam import build_sam2_video_predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = build_sam2_video_predictor(config, str(ckpt), device="cpu",
                                          hydra_overrides_extra=[f"++model.image_size={image_size}"])
    pred.fill_hole_area = 0  # what the official predictor does on a machine without its CUDA extension
    return pred


def run_sam2_video_oracle(ckpt: Path, folder: Path, prompts: dict, removals: dict, n_frames: int,
                          image_size: int = 1024, timings: list | None = None,
                          config: str = "configs/sam2.1/sam2.1_hiera_t.yaml") -> dict:
    """frame -> {obj id: (mask [H,W] bool, object-score logit)} from SAM2VideoPredictor, driven as a live
    user drives it: at each event frame, remove objects / add prompts, then propagate up to the next event.

    ``prompts = {frame: {obj_id: {"points", "labels", "box"}}}``, ``removals = {frame: [obj_id]}``.
    ``timings``: if given, gets the seconds each propagated frame took."""
    import time

    import torch

    pred = sam2_video_oracle(ckpt, image_size, config)
    events = sorted(set(prompts) | set(removals) | {0})
    out: dict[int, dict[int, tuple[np.ndarray, float]]] = {}
    with torch.inference_mode():
        state = pred.init_state(str(folder))
        for k, start in enumerate(events):
            stop = events[k + 1] - 1 if k + 1 < len(events) else n_frames - 1
            for oid in removals.get(start, ()):
                pred.remove_object(state, oid)
            for oid, p in prompts.get(start, {}).items():
                pred.add_new_points_or_box(state, frame_idx=start, obj_id=oid,
                                           points=p.get("points"), labels=p.get("labels"), box=p.get("box"))
            t0 = time.perf_counter()
            for f, ids, masks in pred.propagate_in_video(state, start_frame_idx=start,
                                                         max_frame_num_to_track=stop - start):
                if timings is not None:
                    timings.append(time.perf_counter() - t0)
                out[f] = {}
                for i, oid in enumerate(ids):
                    o = state["output_dict_per_obj"][state["obj_id_to_idx"][oid]]
                    entry = o["cond_frame_outputs"].get(f) or o["non_cond_frame_outputs"].get(f)
                    out[f][oid] = ((masks[i, 0] > 0).numpy(), float(entry["object_score_logits"].reshape(-1)[0]))
                t0 = time.perf_counter()
    return out


def make_video_model_files(root: Path, image_size: int = VIDEO_IMAGE_SIZE, variant: str = VIDEO_VARIANT,
                           object_score_shift: float = OBJECT_SCORE_SHIFT) -> tuple[Path, Path]:
    """(official-layout checkpoint ``{"model": state_dict}``, our export with the video graphs at
    ``image_size``) under ``root``; ``variant`` = sam2.1_hiera_t (the tests') or another SAM2.1 size;
    ``object_score_shift`` > 0 makes every object present (masks on every frame)."""
    import dataclasses

    import torch

    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import checkpoint_source, resolved, with_image_size
    from samdeploy.models.build import random_model
    from samdeploy.models.checkpoint import load_checkpoint

    model = random_model(variant, seed=VIDEO_SEED)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += object_score_shift
    ckpt = root / f"{variant}.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    ours = with_image_size(load_checkpoint(ckpt, "auto")[0], image_size)
    src = dataclasses.replace(checkpoint_source(ckpt, "auto"), image_size=image_size)
    out = root / "export"
    export_model(ours, out, resolved(src, ours), ExportOptions(video=True))
    return ckpt, out


@pytest.fixture(scope="session")
def sam2_video_model(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, export dir with --video graphs) of :func:`make_video_model_files`, once per session."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return make_video_model_files(tmp_path_factory.mktemp("sam2_video"))
