"""Segment everything on the exported runtime (no torch): ``MaskGenerator``.

Three ways to place prompts, one record type out:

* ``generate(image)``: SAM's automatic mask generator. A point grid (per crop layer) is decoded in
  batches (3 multimask outputs per point, logits kept), masks are filtered by predicted IoU and
  stability score, boxes near crop edges are dropped, duplicates removed by box NMS per crop and
  across crops, and optionally small holes/islands are cleaned up.
* ``generate(image)`` with ``hierarchical=True``: TinySAM's two rounds. A sparse grid
  (``points_per_side // 4`` per side) first; pixels covered by confident masks (logits >
  ``high_score_thresh``) mark finished regions; the dense round only decodes points outside them.
  Both rounds are merged and NMS'd. Typically far fewer decoder prompts for the same masks.
* ``generate_from_boxes(image, boxes)``: MobileSAMv2-style. Boxes from any detector (snapped to the
  image border within 20 px) are decoded as box prompts, one mask per box, up to 320 per decoder
  call. One record per box, in input order, no filtering.

Batches are handed to ``Predictor.decode``, which splits them further if the Predictor's
``max_batch`` (or a TensorRT profile's maximum) is smaller -- create the Predictor with
``max_batch=320`` to decode 320 boxes per graph run.

**SAM2 / SAM2.1** exports (contract family ``sam2``) follow ``SAM2AutomaticMaskGenerator`` instead,
automatically: ``pred_iou_thresh`` 0.8, the grid points and record ``point_coords`` in float32, the
prompt coordinates normalised by the crop size then scaled to the 1024 frame (SAM2's arithmetic,
bit-exact), and ``min_mask_region_area`` as SAM2's predictor applies it (holes and sprinkles filled
in the low-res logits before upscaling, no second NMS). Options of SAM2's generator, usable with
every family that takes a mask input: ``multimask_output`` (False: one mask per point, SAM2's
dynamic single mask), ``use_m2m`` (a second decoder pass per mask: the same point plus the first
pass's low-res logits, clamped as the contract says, as mask input; its single answer replaces the
mask and its IoU) and ``mask_threshold``. Every default is overridable; ``MaskGenerator.options``
lists the values in effect.

Records are dicts with SAM's keys (drop-in for code written against SamAutomaticMaskGenerator):
``segmentation`` (HxW bool or COCO RLE), ``area``, ``bbox`` (XYWH), ``predicted_iou``,
``point_coords``, ``stability_score``, ``crop_box`` (XYWH); box mode adds ``prompt_box`` (XYXY).
``MaskGenerator.stats`` describes the last run (prompts issued, decoder calls, timings).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from ..errors import InputError

# Upper limits that keep a typo from asking for billions of prompts (1024 per side = 1M prompts).
MAX_POINTS_PER_SIDE = 1024
MAX_CROP_LAYERS = 4
from . import amg_utils as U
from . import rle as R

OUTPUT_MODES = ("binary_mask", "coco_rle", "uncompressed_rle")
#: ``min_mask_region_area`` clean-up: "sam" (holes/islands of the final masks, then NMS preferring
#: unchanged masks: SamAutomaticMaskGenerator) or "sam2" (holes/sprinkles in the low-res logits before
#: upscaling: SAM2ImagePredictor's max_hole_area / max_sprinkle_area, as SAM2AutomaticMaskGenerator).
SMALL_REGION_MODES = ("sam", "sam2")

#: Defaults that differ between the two reference generators, by contract family (every other
#: family uses SAM's). Everything else (points_per_batch 64, stability 0.95 / offset 1.0, NMS 0.7,
#: crops, multimask_output True, use_m2m False) is the same in both.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sam": {"pred_iou_thresh": 0.88, "small_region_mode": "sam"},
    "sam2": {"pred_iou_thresh": 0.8, "small_region_mode": "sam2"},
}


def family_defaults(family: str) -> dict[str, Any]:
    """The generator defaults for a contract family (SAM's for every family but ``sam2``)."""
    return dict(FAMILY_DEFAULTS["sam2" if family == "sam2" else "sam"])

#: (prompts decoded so far, prompts planned so far) -> None; the plan grows in hierarchical mode.
ProgressFn = Callable[[int, int], None]


class PromptDecoder(Protocol):
    """What the generator needs from a predictor (``_PredictorDecoder`` adapts ``Predictor``)."""

    mask_threshold: float
    # Optional attributes (read with getattr): ``family`` (contract family, default "sam": picks the
    # generator defaults), ``low_res_clamp`` (clamp of logits fed back as mask input, default None),
    # ``accepts_mask_input`` (default True; use_m2m needs it).

    def set_image(self, image: np.ndarray) -> None: ...

    def decode(
        self, points: Optional[np.ndarray], labels: Optional[np.ndarray], boxes: Optional[np.ndarray], multimask: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """K prompts in the set image's pixel frame (points [K, N, 2] + labels [K, N] and/or
        boxes [K, 4] XYXY) -> (iou [K, C], low-res logits [K, C, h, w]), C = 3 or 1.
        With ``use_m2m`` it is also called with a keyword ``mask_input=[K, 1, h, w]``."""
        ...

    def upscale(self, low_res: np.ndarray) -> np.ndarray:
        """Low-res logits [K, h, w] -> logits [K, H, W] at the set image's size."""
        ...


@dataclass
class GenerationStats:
    """What the last ``generate*`` call did. Times are wall-clock milliseconds."""

    mode: str = ""
    image_hw: tuple[int, int] = (0, 0)
    prompts: int = 0  # decoder prompts issued (points or boxes)
    decoder_calls: int = 0  # batches handed to the predictor (it may split them into smaller graph runs)
    encoder_calls: int = 0
    candidate_masks: int = 0  # decoder outputs looked at
    masks_after_filters: int = 0  # passed IoU / stability / crop-edge filters
    masks: int = 0  # records returned
    rounds: list[dict[str, Any]] = field(default_factory=list)  # hierarchical: one entry per round
    timings_ms: dict[str, float] = field(default_factory=dict)  # encode, decode, postprocess, nms, total

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["image_hw"] = list(self.image_hw)
        d["timings_ms"] = {k: round(v, 2) for k, v in self.timings_ms.items()}
        return d


class _Masks:
    """Masks kept so far, struct-of-arrays. Each mask is stored cropped to its box (orig frame)."""

    def __init__(self) -> None:
        self.boxes: list[np.ndarray] = []  # [4] int64 XYXY (inclusive), original frame
        self.iou: list[float] = []
        self.stability: list[float] = []
        self.points: list[np.ndarray] = []  # [2] float64 (SAM2: float32, as SAM2 keeps them), original frame
        self.crop_boxes: list[list[int]] = []
        self.local: list[np.ndarray] = []  # bool [y1-y0+1, x1-x0+1]

    def __len__(self) -> int:
        return len(self.boxes)

    def extend(self, other: "_Masks") -> None:
        for name in ("boxes", "iou", "stability", "points", "crop_boxes", "local"):
            getattr(self, name).extend(getattr(other, name))

    def select(self, idx: Sequence[int]) -> "_Masks":
        out = _Masks()
        for name in ("boxes", "iou", "stability", "points", "crop_boxes", "local"):
            src = getattr(self, name)
            setattr(out, name, [src[i] for i in idx])
        return out

    def boxes_array(self) -> np.ndarray:
        return np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)

    def full(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        m = np.zeros(hw, dtype=bool)
        x0, y0 = int(self.boxes[i][0]), int(self.boxes[i][1])
        loc = self.local[i]
        m[y0 : y0 + loc.shape[0], x0 : x0 + loc.shape[1]] = loc
        return m

    def set_full(self, i: int, mask: np.ndarray) -> None:
        box = U.masks_to_boxes(mask)
        self.boxes[i] = box
        self.local[i] = _crop_to_box(mask, box)


def _crop_to_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    return np.ascontiguousarray(mask[y0 : y1 + 1, x0 : x1 + 1])


class MaskGenerator:
    """Automatic mask generation on a :class:`~samdeploy.runtime.predictor.Predictor`.

    Parameters and defaults are those of SAM's ``SamAutomaticMaskGenerator`` (and TinySAM's
    ``SamHierarchicalMaskGenerator`` for ``hierarchical``/``high_score_thresh``); for SAM2 exports
    those of ``SAM2AutomaticMaskGenerator``. ``None`` means "the model family's default":
    ``pred_iou_thresh`` 0.88 (SAM2: 0.8), ``mask_threshold`` the contract's (0.0),
    ``small_region_mode`` "sam" (SAM2: "sam2", see ``SMALL_REGION_MODES``)."""

    def __init__(
        self,
        predictor: Any,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: Optional[float] = None,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: Optional[float] = None,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[list[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
        small_region_mode: Optional[str] = None,
        hierarchical: bool = False,
        high_score_thresh: float = 8.5,
        box_batch: int = 320,
        border_snap: float = 20.0,
        upscale_chunk: int = 16,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise InputError("give exactly one of points_per_side or point_grids")
        if output_mode not in OUTPUT_MODES:
            raise InputError(f"unknown output_mode {output_mode!r}", hint=f"use one of {', '.join(OUTPUT_MODES)}")
        if points_per_batch < 1 or box_batch < 1:
            raise InputError("points_per_batch and box_batch must be >= 1")
        if not 0 <= crop_n_layers <= MAX_CROP_LAYERS:
            raise InputError(f"crop_n_layers must be in 0..{MAX_CROP_LAYERS} (got {crop_n_layers})",
                             hint="layer n has 4**n crops; SAM's own settings use at most 1")
        if crop_n_points_downscale_factor < 1:
            raise InputError(f"crop_n_points_downscale_factor must be >= 1 (got {crop_n_points_downscale_factor})")
        if hierarchical:
            if points_per_side is None or points_per_side < 4:
                raise InputError(
                    "hierarchical mode needs points_per_side >= 4 (its first round uses points_per_side // 4)",
                    hint="pass points_per_side (e.g. 32), not point_grids",
                )
            if crop_n_layers:
                raise InputError("hierarchical mode works on the whole image; use crop_n_layers=0")
        if points_per_side is not None:
            if not 1 <= points_per_side <= MAX_POINTS_PER_SIDE:
                raise InputError(f"points_per_side must be in 1..{MAX_POINTS_PER_SIDE} (got {points_per_side})",
                                 hint="SAM uses 32 (1,024 prompts); the count grows with the square")
            self.point_grids = U.build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            grids = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in point_grids]  # type: ignore[union-attr]
            if len(grids) < crop_n_layers + 1:
                raise InputError(f"point_grids has {len(grids)} grids; crop_n_layers={crop_n_layers} needs {crop_n_layers + 1}")
            if any(((g < 0) | (g > 1)).any() for g in grids):
                raise InputError("point_grids must be normalised to [0, 1] (x / width, y / height)")
            self.point_grids = grids
        for name, v in (("use_m2m", use_m2m), ("multimask_output", multimask_output), ("hierarchical", hierarchical)):
            if not isinstance(v, (bool, np.bool_)):
                raise InputError(f"{name} must be True or False, got {v!r}")
        if small_region_mode is not None and small_region_mode not in SMALL_REGION_MODES:
            raise InputError(f"unknown small_region_mode {small_region_mode!r}",
                             hint="use 'sam' (full-resolution holes/islands, SAM) or 'sam2' (low-res holes/sprinkles, SAM2)")
        for name, v in (("pred_iou_thresh", pred_iou_thresh), ("mask_threshold", mask_threshold)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v)):
                raise InputError(f"{name} must be a finite number or None (the model family's default), got {v!r}")
        self.decoder: PromptDecoder = _as_prompt_decoder(predictor)
        self.family = str(getattr(self.decoder, "family", "sam"))
        self._sam2 = self.family == "sam2"
        defaults = family_defaults(self.family)
        if use_m2m and not getattr(self.decoder, "accepts_mask_input", True):
            raise InputError("use_m2m feeds each mask back as mask input, but this model's decoder has no mask input",
                             hint="drop use_m2m for this model")
        self.points_per_side = points_per_side
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(defaults["pred_iou_thresh"] if pred_iou_thresh is None else pred_iou_thresh)
        self.mask_threshold = float(self.decoder.mask_threshold if mask_threshold is None else mask_threshold)
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)
        self.small_region_mode = defaults["small_region_mode"] if small_region_mode is None else small_region_mode
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.crop_n_points_downscale_factor = int(crop_n_points_downscale_factor)
        self.min_mask_region_area = int(min_mask_region_area)
        self.output_mode = output_mode
        self.hierarchical = bool(hierarchical)
        self.high_score_thresh = float(high_score_thresh)
        self.box_batch = int(box_batch)
        self.border_snap = float(border_snap)
        self.upscale_chunk = max(1, int(upscale_chunk))
        self.stats = GenerationStats()

    @property
    def options(self) -> dict[str, Any]:
        """The generator options in effect (family defaults resolved), e.g. for a run's log."""
        return {
            "family": self.family,
            "points_per_side": self.points_per_side,
            "points_per_batch": self.points_per_batch,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "stability_score_offset": self.stability_score_offset,
            "mask_threshold": self.mask_threshold,
            "box_nms_thresh": self.box_nms_thresh,
            "crop_n_layers": self.crop_n_layers,
            "crop_nms_thresh": self.crop_nms_thresh,
            "crop_overlap_ratio": self.crop_overlap_ratio,
            "crop_n_points_downscale_factor": self.crop_n_points_downscale_factor,
            "min_mask_region_area": self.min_mask_region_area,
            "small_region_mode": self.small_region_mode,
            "multimask_output": self.multimask_output,
            "use_m2m": self.use_m2m,
            "output_mode": self.output_mode,
            "hierarchical": self.hierarchical,
            "high_score_thresh": self.high_score_thresh,
        }

    # ---- public ---------------------------------------------------------------------------------
    def generate(self, image: np.ndarray, progress: Optional[ProgressFn] = None) -> list[dict[str, Any]]:
        """All masks of an HxWx3 uint8 RGB image (grid or hierarchical, per the constructor)."""
        image = _check_image(image)
        self._begin("hierarchical" if self.hierarchical else "grid", image, progress)
        t0 = time.perf_counter()
        data = self._generate_hierarchical(image) if self.hierarchical else self._generate_grid(image)
        if self.min_mask_region_area > 0 and self.small_region_mode == "sam" and len(data):
            data = self._remove_small_regions(data, image.shape[:2])
        records = self._records(data, image.shape[:2])
        self._finish(t0, records)
        return records

    def generate_from_boxes(
        self, image: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]], progress: Optional[ProgressFn] = None
    ) -> list[dict[str, Any]]:
        """One mask per XYXY box (original pixel frame), in the order given. Boxes within
        ``border_snap`` px of the image border are snapped to it (as MobileSAMv2 does)."""
        image = _check_image(image)
        h, w = image.shape[:2]
        boxes = _check_boxes(boxes)
        boxes = snap_boxes_to_border(boxes, (h, w), self.border_snap)
        self._begin("boxes", image, progress)
        t0 = time.perf_counter()
        if len(boxes):
            self._encode(image)
        self._planned(len(boxes))
        data = _Masks()
        for start in range(0, len(boxes), self.box_batch):
            chunk = boxes[start : start + self.box_batch]
            iou, low = self._decode(None, None, chunk, multimask=False)
            if iou.shape[1] > 1:  # decoders that always answer with 3 masks (TinySAM): take the best
                best = np.argmax(iou, axis=1)
                iou = np.take_along_axis(iou, best[:, None], axis=1)
                low = np.take_along_axis(low, best[:, None, None, None], axis=1)
            tp = time.perf_counter()
            for s in range(0, len(chunk), self.upscale_chunk):
                logits = self.decoder.upscale(low[s : s + self.upscale_chunk, 0])
                stab = U.stability_score(logits, self.mask_threshold, self.stability_score_offset)
                masks = logits > self.mask_threshold
                bxs = U.masks_to_boxes(masks)
                for k in range(len(masks)):
                    j = s + k
                    data.boxes.append(bxs[k])
                    data.iou.append(float(iou[j, 0]))
                    data.stability.append(float(stab[k]))
                    data.points.append(chunk[j])
                    data.crop_boxes.append([0, 0, w, h])
                    data.local.append(_crop_to_box(masks[k], bxs[k]))
            self._add_time("postprocess", tp)
        self.stats.candidate_masks = self.stats.masks_after_filters = len(data)
        records = self._records(data, (h, w), box_prompts=True)
        self._finish(t0, records)
        return records

    # ---- SAM grid mode ------------------------------------------------------------------------------
    def _generate_grid(self, image: np.ndarray) -> _Masks:
        h, w = image.shape[:2]
        crop_boxes, layers = U.generate_crop_boxes((h, w), self.crop_n_layers, self.crop_overlap_ratio)
        self._planned(sum(len(self.point_grids[layer]) for layer in layers))
        data = _Masks()
        for crop_box, layer in zip(crop_boxes, layers):
            x0, y0, x1, y1 = crop_box
            crop = image[y0:y1, x0:x1]
            self._encode(crop)
            points = self.point_grids[layer] * np.asarray([[x1 - x0, y1 - y0]], dtype=np.float64)
            crop_data, _ = self._decode_points(points, crop_box, (h, w))
            # Duplicates within this crop, scored by predicted IoU.
            tn = time.perf_counter()
            keep = U.box_nms(crop_data.boxes_array(), np.asarray(crop_data.iou, np.float32), self.box_nms_thresh)
            self._add_time("nms", tn)
            data.extend(crop_data.select(keep))
        if len(crop_boxes) > 1 and len(data):
            # Duplicates across crops: prefer masks from smaller crops (score = 1 / crop area).
            tn = time.perf_counter()
            cb = np.asarray(data.crop_boxes, dtype=np.int64)
            area = ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
            keep = U.box_nms(data.boxes_array(), np.float32(1) / area, self.crop_nms_thresh)
            data = data.select(keep)
            self._add_time("nms", tn)
        return data

    # ---- TinySAM hierarchical mode ------------------------------------------------------------------------
    def _generate_hierarchical(self, image: np.ndarray) -> _Masks:
        h, w = image.shape[:2]
        full = [0, 0, w, h]
        pps = int(self.points_per_side)  # type: ignore[arg-type]
        self._encode(image)

        sparse = U.build_point_grid(pps // 4) * np.asarray([[w, h]], dtype=np.float64)
        self._planned(len(sparse))
        first, covered = self._decode_points(sparse, full, (h, w), high_thresh=self.high_score_thresh)
        self.stats.rounds.append({"points_per_side": pps // 4, "prompts": len(sparse), "masks": len(first)})

        dense, n_covered = hierarchical_second_round_points(sparse, covered, (h, w), pps)
        self._planned(len(dense))
        second, _ = self._decode_points(dense, full, (h, w)) if len(dense) else (_Masks(), None)
        self.stats.rounds.append(
            {
                "points_per_side": pps,
                "candidates": len(dense) + n_covered,  # neighbours inside the image
                "skipped_covered": n_covered,  # ... inside a confident first-round mask
                "prompts": len(dense),
                "covered_fraction": float(covered.mean()) if covered is not None else 0.0,
                "masks": len(second),
            }
        )
        # Merge (second round first, as TinySAM does) and remove duplicates.
        second.extend(first)
        tn = time.perf_counter()
        keep = U.box_nms(second.boxes_array(), np.asarray(second.iou, np.float32), self.box_nms_thresh)
        self._add_time("nms", tn)
        return second.select(keep)

    # ---- shared: decode points, filter, keep masks ------------------------------------------------------
    def _decode_points(
        self,
        points: np.ndarray,
        crop_box: Sequence[int],
        orig_hw: tuple[int, int],
        high_thresh: Optional[float] = None,
    ) -> tuple[_Masks, Optional[np.ndarray]]:
        """Decode single positive points (crop pixel frame) in batches; keep masks that pass the
        filters. With ``high_thresh``, also return the OR of ``logits > high_thresh`` over the masks
        that passed the IoU and stability filters (TinySAM's confident area)."""
        x0, y0 = int(crop_box[0]), int(crop_box[1])
        crop_hw = (int(crop_box[3]) - y0, int(crop_box[2]) - x0)
        orig_box = [0, 0, orig_hw[1], orig_hw[0]]
        thr = self.mask_threshold
        # SAM2 keeps the grid points in float32 (decoded and reported); SAM in float64.
        pdt = np.float32 if self._sam2 else np.float64
        offset = np.asarray([x0, y0], dtype=pdt)
        fill_area = self.min_mask_region_area if self.small_region_mode == "sam2" else 0
        covered = np.zeros(crop_hw, dtype=bool) if high_thresh is not None else None
        out = _Masks()
        for start in range(0, len(points), self.points_per_batch):
            pts = points[start : start + self.points_per_batch].astype(pdt, copy=False)
            iou, low = self._decode(pts[:, None, :], np.ones((len(pts), 1), np.float32), None, multimask=self.multimask_output)
            tp = time.perf_counter()
            n_out = iou.shape[1]
            iou = iou.reshape(-1)
            low = low.reshape(-1, *low.shape[-2:])
            pts_rep = np.repeat(pts, n_out, axis=0)
            self.stats.candidate_masks += iou.size
            if self.use_m2m:  # SAM2's refinement: every mask (before any filter) goes round once more
                self._add_time("postprocess", tp)
                iou, low = self._refine_m2m(pts_rep, low)
                tp = time.perf_counter()
            # The IoU filter needs no pixels: apply it before upscaling (same result, far less work).
            idx = np.flatnonzero(iou > np.float32(self.pred_iou_thresh)) if self.pred_iou_thresh > 0.0 else np.arange(iou.size)
            for s in range(0, len(idx), self.upscale_chunk):
                sel = idx[s : s + self.upscale_chunk]
                low_sel = low[sel]
                if fill_area > 0:  # SAM2ImagePredictor's max_hole_area / max_sprinkle_area, before upscaling
                    low_sel = U.fill_low_res_regions(low_sel, fill_area, self.decoder.mask_threshold)
                logits = self.decoder.upscale(low_sel)
                stab = U.stability_score(logits, thr, self.stability_score_offset)
                ok = stab >= np.float32(self.stability_score_thresh) if self.stability_score_thresh > 0.0 else np.ones(len(sel), bool)
                if not ok.any():
                    continue
                sel, stab, logits = sel[ok], stab[ok], logits[ok]
                if covered is not None:
                    covered |= np.any(logits > high_thresh, axis=0)
                masks = logits > thr
                del logits
                boxes = U.masks_to_boxes(masks)
                near = U.is_box_near_crop_edge(boxes, crop_box, orig_box)
                for k in np.flatnonzero(~near):
                    out.boxes.append(boxes[k] + np.asarray([x0, y0, x0, y0], dtype=np.int64))
                    out.iou.append(float(iou[sel[k]]))
                    out.stability.append(float(stab[k]))
                    out.points.append(pts_rep[sel[k]] + offset)
                    out.crop_boxes.append([int(v) for v in crop_box])
                    out.local.append(_crop_to_box(masks[k], boxes[k]))
            self._add_time("postprocess", tp)
        self.stats.masks_after_filters += len(out)
        return out, covered

    def _refine_m2m(self, points: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM2's ``refine_with_m2m``: each mask's point again, with its low-res logits (clamped like the
        predictor returns them, SAM2: +-32) as mask input, one answer each (``multimask_output=False``),
        in batches of ``points_per_batch``. Returns (iou [M], low-res logits [M, h, w]), unclamped."""
        clamp = getattr(self.decoder, "low_res_clamp", None)
        mask_in = low if clamp is None else np.clip(low, np.float32(-clamp), np.float32(clamp))
        self._planned(len(points))
        ious, lows = [], []
        for s in range(0, len(points), self.points_per_batch):
            pts = points[s : s + self.points_per_batch]
            iou, lr = self._decode(pts[:, None, :], np.ones((len(pts), 1), np.float32), None, multimask=False,
                                   mask_input=np.ascontiguousarray(mask_in[s : s + self.points_per_batch, None]))
            if iou.shape[1] > 1:  # decoders that always answer with 3 masks (TinySAM): take the best
                best = np.argmax(iou, axis=1)
                iou = np.take_along_axis(iou, best[:, None], axis=1)
                lr = np.take_along_axis(lr, best[:, None, None, None], axis=1)
            ious.append(iou[:, 0])
            lows.append(lr[:, 0])
        return np.concatenate(ious), np.concatenate(lows)

    # ---- small regions -------------------------------------------------------------------------------
    def _remove_small_regions(self, data: _Masks, hw: tuple[int, int]) -> _Masks:
        """SAM's postprocess: fill small holes, drop small islands, then NMS again preferring masks
        that did not change (a cleaned mask can duplicate another)."""
        tp = time.perf_counter()
        new_masks: list[np.ndarray] = []
        unchanged: list[float] = []
        for i in range(len(data)):
            m, c1 = U.remove_small_regions(data.full(i, hw), self.min_mask_region_area, "holes")
            m, c2 = U.remove_small_regions(m, self.min_mask_region_area, "islands")
            new_masks.append(m if (c1 or c2) else None)  # type: ignore[arg-type]
            unchanged.append(float(not (c1 or c2)))
        boxes = np.stack([U.masks_to_boxes(m) if m is not None else data.boxes[i] for i, m in enumerate(new_masks)])
        keep = U.box_nms(boxes, np.asarray(unchanged, np.float32), max(self.box_nms_thresh, self.crop_nms_thresh))
        for i in keep:
            if new_masks[i] is not None:
                data.set_full(int(i), new_masks[i])
        self._add_time("postprocess", tp)
        return data.select(keep)

    # ---- output ---------------------------------------------------------------------------------
    def _records(self, data: _Masks, hw: tuple[int, int], box_prompts: bool = False) -> list[dict[str, Any]]:
        tp = time.perf_counter()
        records = []
        for i in range(len(data)):
            mask = data.full(i, hw)
            if self.output_mode == "binary_mask":
                seg: Any = mask
            elif self.output_mode == "coco_rle":
                seg = R.mask_to_rle(mask)
            else:
                seg = R.mask_to_uncompressed_rle(mask)
            rec = {
                "segmentation": seg,
                "area": int(data.local[i].sum()),
                "bbox": [int(v) for v in U.box_xyxy_to_xywh(data.boxes[i])],
                "predicted_iou": float(data.iou[i]),
                "point_coords": [] if box_prompts else [[float(v) for v in data.points[i]]],
                "stability_score": float(data.stability[i]),
                "crop_box": [int(v) for v in U.box_xyxy_to_xywh(data.crop_boxes[i])],
            }
            if box_prompts:
                rec["prompt_box"] = [float(v) for v in np.asarray(data.points[i]).reshape(-1)]
            records.append(rec)
        self._add_time("postprocess", tp)
        return records

    # ---- bookkeeping -------------------------------------------------------------------------------
    def _begin(self, mode: str, image: np.ndarray, progress: Optional[ProgressFn]) -> None:
        self.stats = GenerationStats(mode=mode, image_hw=(int(image.shape[0]), int(image.shape[1])))
        self.stats.timings_ms = {"encode": 0.0, "decode": 0.0, "postprocess": 0.0, "nms": 0.0}
        self._progress = progress
        self._planned_total = 0

    def _planned(self, n: int) -> None:
        self._planned_total += int(n)
        if self._progress is not None:
            self._progress(self.stats.prompts, self._planned_total)

    def _finish(self, t0: float, records: list[dict[str, Any]]) -> None:
        self.stats.masks = len(records)
        self.stats.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        self._progress = None

    def _add_time(self, key: str, since: float) -> None:
        self.stats.timings_ms[key] = self.stats.timings_ms.get(key, 0.0) + (time.perf_counter() - since) * 1e3

    def _encode(self, image: np.ndarray) -> None:
        t = time.perf_counter()
        self.decoder.set_image(image)
        self.stats.encoder_calls += 1
        self._add_time("encode", t)

    def _decode(
        self, points: Optional[np.ndarray], labels: Optional[np.ndarray], boxes: Optional[np.ndarray], multimask: bool,
        mask_input: Optional[np.ndarray] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        t = time.perf_counter()
        if mask_input is None:  # the four-argument call every PromptDecoder supports
            iou, low = self.decoder.decode(points, labels, boxes, multimask)
        else:
            iou, low = self.decoder.decode(points, labels, boxes, multimask, mask_input=mask_input)
        self.stats.decoder_calls += 1
        self.stats.prompts += len(iou)
        self._add_time("decode", t)
        if self._progress is not None:
            self._progress(self.stats.prompts, self._planned_total)
        return np.asarray(iou, dtype=np.float32), np.asarray(low, dtype=np.float32)


# ---- helpers usable on their own ---------------------------------------------------------------------------
def hierarchical_second_round_points(
    sparse_points: np.ndarray, covered: Optional[np.ndarray], hw: tuple[int, int], points_per_side: int
) -> tuple[np.ndarray, int]:
    """TinySAM's dense-round prompts: around each sparse point (x, y), the points
    (x + a*sx, y + b*sy) for a, b in {-1, 0, 1, 2} except (0, 0), with the dense stride
    sx = W // points_per_side, sy = H // points_per_side; +2 offsets only while inside the image;
    points whose pixel is covered by a confident first-round mask are skipped.
    Returns (points [M, 2], number of candidates skipped because they were covered)."""
    h, w = hw
    sx, sy = w // points_per_side, h // points_per_side
    out: list[tuple[float, float]] = []
    n_covered = 0

    def take(x: float, y: float) -> None:
        nonlocal n_covered
        if covered is not None and covered[int(y), int(x)]:
            n_covered += 1
        else:
            out.append((x, y))

    for px, py in np.asarray(sparse_points, dtype=np.float64):
        for a in (-1, 0, 1):  # same visiting order as TinySAM: x offset outer, y offset inner
            for b in (-1, 0, 1):
                if a == 0 and b == 0:
                    continue
                take(px + sx * a, py + sy * b)
        if px + 2 * sx < w:
            for b in (-1, 0, 1):
                take(px + 2 * sx, py + sy * b)
        if py + 2 * sy < h:
            for a in (-1, 0, 1):
                take(px + sx * a, py + 2 * sy)
        if px + 2 * sx < w and py + 2 * sy < h:
            take(px + 2 * sx, py + 2 * sy)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2), n_covered


def snap_boxes_to_border(boxes: np.ndarray, hw: tuple[int, int], threshold: float = 20.0) -> np.ndarray:
    """Move box edges within ``threshold`` px of the image border onto it (MobileSAMv2)."""
    h, w = hw
    b = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    if threshold > 0:
        b[b[:, 0] < threshold, 0] = 0
        b[b[:, 1] < threshold, 1] = 0
        b[b[:, 2] > w - threshold, 2] = w
        b[b[:, 3] > h - threshold, 3] = h
    return b


def _check_image(image: np.ndarray) -> np.ndarray:
    from ..images import to_rgb_uint8

    return to_rgb_uint8(image, "image")


def _check_boxes(boxes: Any) -> np.ndarray:
    try:
        b = np.asarray(boxes, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("boxes must be numbers: a list of [x0, y0, x1, y1]") from None
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim == 1 and b.size == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must have shape [K, 4] (x0, y0, x1, y1); got {b.shape}")
    if not np.isfinite(b).all():
        raise InputError("boxes contain NaN or inf")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise InputError("every box needs x1 >= x0 and y1 >= y0 (XYXY pixel coordinates)")
    return b


def _as_prompt_decoder(predictor: Any) -> PromptDecoder:
    if all(hasattr(predictor, a) for a in ("decode", "upscale", "set_image", "mask_threshold")):
        return predictor  # already speaks the protocol (tests inject reference decoders this way)
    return _PredictorDecoder(predictor)


class _PredictorDecoder:
    """Adapter: :class:`~samdeploy.runtime.predictor.Predictor` -> :class:`PromptDecoder`."""

    def __init__(self, predictor: Any) -> None:
        for attr in ("set_image", "decode", "select", "postprocess", "contract"):
            if not hasattr(predictor, attr):
                raise InputError(
                    f"MaskGenerator needs a samdeploy Predictor (got {type(predictor).__name__})",
                    hint="pass samdeploy.runtime.Predictor(model_dir)",
                )
        self.predictor = predictor
        c = predictor.contract
        self.mask_threshold = float(c.decoder.mask_threshold)
        self.family = str(c.family)
        self.low_res_clamp = None if c.decoder.low_res_clamp is None else float(c.decoder.low_res_clamp)
        self.accepts_mask_input = bool(c.decoder.mask_input)
        # SAM2 maps pixels to the stretched frame as SAM2Transforms does (normalise, then scale).
        self._normalized_coords = self.family == "sam2"

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def decode(
        self, points: Optional[np.ndarray], labels: Optional[np.ndarray], boxes: Optional[np.ndarray], multimask: bool,
        mask_input: Optional[np.ndarray] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # The building blocks rather than predict_batch: the generator filters on predicted IoU
        # before paying for full-resolution logits.
        from .prompts import pack_for
        from .transforms import apply_boxes, apply_coords

        p = self.predictor
        k = len(points) if points is not None else len(boxes)  # type: ignore[arg-type]
        if self._normalized_coords:
            c_in = U.normalized_prompt_coords(points, p.original_size, p.input_size) if points is not None else None
            b_in = (U.normalized_prompt_coords(np.asarray(boxes, np.float32).reshape(-1, 2, 2), p.original_size, p.input_size)
                    if boxes is not None else None)
        else:
            c_in = apply_coords(points, p.original_size, p.input_size) if points is not None else None
            b_in = apply_boxes(boxes, p.original_size, p.input_size) if boxes is not None else None
        pc, pl = pack_for(p.contract, c_in, labels, b_in, k)
        iou, low = p.decode(pc, pl, mask_input)
        return p.select(iou, low, multimask)

    def upscale(self, low_res: np.ndarray) -> np.ndarray:
        return self.predictor.postprocess(low_res, threshold=None)
