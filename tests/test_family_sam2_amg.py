"""Segment-everything on SAM 2.1 exports (``MaskGenerator``) vs ``SAM2AutomaticMaskGenerator`` (``sam2``
1.1.0, test-only oracle).

One seeded SAM2.1 Hiera-T (``random_model("sam2.1_hiera_t", seed=5)``, realistic decoder: logits about
+-20) is exported once per session (``exported_model_dir``) and loaded with the same weights into the
official ``build_sam2`` model.

* **logic** (identical records): both generators are driven by the SAME decoder outputs. Ours runs on
  the ONNX ``Predictor``; the oracle's ``SAM2ImagePredictor._predict`` is replaced by the same
  Predictor's raw decoder + token selection on the prompts the oracle builds, followed by the oracle's
  own ``SAM2Transforms.postprocess_masks`` (its hole/sprinkle filling, with a CPU connected-components
  function since the CUDA extension is absent, and our bilinear resize in place of ``F.interpolate``,
  which differs from OpenCV in the last bits) and the oracle's clamp. The raw decoder is memoised on its
  exact inputs, and every oracle call must hit the memo: the oracle asked for exactly the prompts
  (coordinates bit for bit, labels, batches, mask inputs for m2m) our generator sent. Records --
  RLE, bbox, area, predicted_iou, stability_score, point_coords, crop_box -- must then be equal for:
  the defaults, relaxed filters with and without NMS, ``multimask_output=False``, ``use_m2m=True`` (alone
  and with single masks) and one crop layer with ``min_mask_region_area`` (SAM2's low-res clean-up).
  Crops reuse the whole photograph's features (the generator's crop logic, not the crops' pixels, is
  under test), which keeps this to one encoder run.
* **end to end**: our generator on ONNX Runtime vs the unpatched oracle on PyTorch (its own encoder and
  decoder) on a real photograph; one-to-one mask matching as in ``test_runtime_amg.py``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import types
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hydra")
pytest.importorskip("sam2")

from fixtures_families import sam2_config  # noqa: E402

from samdeploy.errors import InputError  # noqa: E402
from samdeploy.runtime import amg_utils as U  # noqa: E402
from samdeploy.runtime.amg import MaskGenerator  # noqa: E402
from samdeploy.runtime.prompts import pack_for  # noqa: E402
from samdeploy.runtime.rle import rle_to_mask  # noqa: E402
from samdeploy.runtime.transforms import resize_masks_direct  # noqa: E402

VARIANT = "sam2.1_hiera_t"
SEED = 5
PHOTO = "chelsea"  # 300 x 451
# This seeded model: predicted IoUs ~0.78..0.95, stability of the multimask outputs ~0.37..0.85
# (m2m-refined ~0.88..0.95, single masks ~0.98): these keep a few dozen masks, many near the cuts.
RELAXED = dict(stability_score_thresh=0.45)


# ---- fixtures ----------------------------------------------------------------------------------------
class _Memo:
    """Predictor.decode memoised on its exact inputs (a pure speed-up that also proves both generators
    asked for the same decoder work)."""

    def __init__(self, decode):
        self.decode, self.cache, self.hits, self.misses = decode, {}, 0, 0

    @staticmethod
    def _key(*arrays):
        h = hashlib.sha1()
        for a in arrays:
            if a is None:
                h.update(b"none")
            else:
                a = np.ascontiguousarray(a, dtype=np.float32)
                h.update(repr(a.shape).encode())
                h.update(a.tobytes())
        return h.hexdigest()

    def __call__(self, point_coords, point_labels, mask_input=None):
        key = self._key(point_coords, point_labels, mask_input)
        if key in self.cache:
            self.hits += 1
        else:
            self.misses += 1
            iou, low = self.decode(point_coords, point_labels, mask_input)
            self.cache[key] = (iou.copy(), low.copy())
        iou, low = self.cache[key]
        return iou.copy(), low.copy()


@pytest.fixture(scope="module")
def sam2_amg(exported_model_dir, reference_model, photos):
    """(our Predictor with memoised encoder/decoder, official SAM2Base with the same weights, photo)."""
    from sam2.build_sam import build_sam2

    from samdeploy.runtime import Predictor

    torch.set_num_threads(2)
    export = exported_model_dir(VARIANT, seed=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = build_sam2(sam2_config(VARIANT), None, device="cpu")
    result = official.load_state_dict(reference_model(VARIANT, seed=SEED).state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    official.eval()

    pred = Predictor(export, threads=2)
    photo = photos[PHOTO]
    real_set_image = pred.set_image
    real_set_image(photo)
    feats = {k: v.copy() for k, v in pred.get_image_features().items()}
    digest = hashlib.sha1(photo.tobytes()).hexdigest()

    def cached_set_image(image, image_format="RGB"):  # the photo's features are computed once
        if image.shape == photo.shape and hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() == digest:
            pred.set_image_embedding(feats, image.shape[:2])
        else:
            real_set_image(image, image_format)

    pred.set_image = cached_set_image
    pred.decode = _Memo(pred.decode)
    ns = types.SimpleNamespace(pred=pred, official=official, photo=photo, feats=feats, logic_feats=feats,
                               encode=real_set_image)
    yield ns
    pred.close()


def _cpu_connected_components(mask):
    """``sam2.utils.misc.get_connected_components`` (8-connectivity) without the CUDA extension."""
    from scipy import ndimage

    m = mask.detach().cpu().numpy().astype(bool)
    labels = np.zeros(m.shape, np.int32)
    counts = np.zeros(m.shape, np.int32)
    for i in range(m.shape[0]):
        lab, _ = ndimage.label(m[i, 0], structure=np.ones((3, 3), bool))
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        labels[i, 0], counts[i, 0] = lab, sizes[lab]
    return torch.from_numpy(labels), torch.from_numpy(counts)


@pytest.fixture
def oracle_on_our_decoder(sam2_amg, monkeypatch):
    """make(**kw) -> a SAM2AutomaticMaskGenerator whose predictor decodes with our Predictor."""
    import sam2.utils.misc
    import sam2.utils.transforms
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    pred = sam2_amg.pred
    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", _cpu_connected_components)

    def interpolate(masks, size, mode="bilinear", align_corners=False):
        assert mode == "bilinear" and align_corners is False
        return torch.from_numpy(resize_masks_direct(masks.numpy(), tuple(size), None))

    monkeypatch.setattr(sam2.utils.transforms, "F", types.SimpleNamespace(interpolate=interpolate))
    # Crops get the whole image's features (see the module docstring), on both sides.
    monkeypatch.setattr(pred, "set_image", lambda image, image_format="RGB": pred.set_image_embedding(
        sam2_amg.logic_feats, image.shape[:2]))

    def make(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gen = SAM2AutomaticMaskGenerator(sam2_amg.official, **kw)
        sp = gen.predictor

        def set_image(image):
            pred.set_image(image)
            sp._is_image_set = True

        def _predict(point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                     return_logits=False, img_idx=-1):
            assert boxes is None and return_logits
            pc, pl = pack_for(pred.contract, point_coords.numpy(), point_labels.numpy().astype(np.float32), None,
                              point_coords.shape[0])
            iou, low = pred.decode(pc, pl, None if mask_input is None else mask_input.numpy())
            iou, low = pred.select(iou, low, multimask_output)
            low_t = torch.from_numpy(np.ascontiguousarray(low))
            masks = sp._transforms.postprocess_masks(low_t, pred.original_size)  # the oracle's own fill
            return masks, torch.from_numpy(np.ascontiguousarray(iou)), torch.clamp(low_t, -32.0, 32.0)

        sp.set_image, sp._predict = set_image, _predict
        return gen

    return make


def _assert_identical(ref, ours, what):
    assert len(ours) == len(ref), f"{what}: {len(ours)} records vs oracle {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, ours)):
        assert set(a) == set(b), what
        assert a["segmentation"] == b["segmentation"], f"{what}: record {i} RLE"
        assert (a["bbox"], a["area"], a["crop_box"]) == (b["bbox"], b["area"], b["crop_box"]), f"{what}: record {i}"
        assert a["predicted_iou"] == b["predicted_iou"], f"{what}: record {i}"
        assert a["stability_score"] == b["stability_score"], f"{what}: record {i}"
        assert a["point_coords"] == b["point_coords"], f"{what}: record {i}"  # float32 values, bit for bit


def _run_both(sam2_amg, make_oracle, what, image=None, **kw):
    image = sam2_amg.photo if image is None else image
    memo = sam2_amg.pred.decode
    gen = MaskGenerator(sam2_amg.pred, output_mode="coco_rle", **kw)
    ours = gen.generate(image)
    hits, misses = memo.hits, memo.misses
    ref = make_oracle(output_mode="coco_rle", **kw).generate(image)
    assert memo.misses == misses, f"{what}: the oracle made {memo.misses - misses} decoder calls ours did not"
    assert memo.hits - hits == gen.stats.decoder_calls, f"{what}: oracle {memo.hits - hits} decoder calls, ours {gen.stats.decoder_calls}"
    _assert_identical(ref, ours, what)
    return ours, gen


# ---- defaults and options ----------------------------------------------------------------------------
def test_sam2_defaults_follow_the_family_and_are_overridable(sam2_amg):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    official = {k: p.default for k, p in inspect.signature(SAM2AutomaticMaskGenerator.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    gen = MaskGenerator(sam2_amg.pred)
    opts = gen.options
    assert opts["family"] == "sam2"
    for name, value in official.items():
        if name in opts:
            assert opts[name] == pytest.approx(value), name
    assert {k for k in official if k not in opts} == {"point_grids"}  # constructor-only
    assert (opts["pred_iou_thresh"], opts["mask_threshold"], opts["small_region_mode"]) == (0.8, 0.0, "sam2")
    assert opts["multimask_output"] is True and opts["use_m2m"] is False
    over = MaskGenerator(sam2_amg.pred, pred_iou_thresh=0.88, mask_threshold=0.5, small_region_mode="sam",
                         use_m2m=True, multimask_output=False).options
    assert (over["pred_iou_thresh"], over["mask_threshold"], over["small_region_mode"]) == (0.88, 0.5, "sam")
    assert over["use_m2m"] is True and over["multimask_output"] is False
    for bad in (dict(small_region_mode="cv2"), dict(use_m2m="yes"), dict(multimask_output=1),
                dict(mask_threshold=float("nan")), dict(pred_iou_thresh="high")):
        with pytest.raises(InputError):
            MaskGenerator(sam2_amg.pred, **bad)


def test_sam_family_defaults_unchanged_and_m2m_needs_mask_input(fake_model_dir):
    from samdeploy.runtime import Predictor

    with Predictor(fake_model_dir) as pred:
        opts = MaskGenerator(pred).options
        assert (opts["pred_iou_thresh"], opts["small_region_mode"], opts["use_m2m"]) == (0.88, "sam", False)

    class NoMaskInput:
        mask_threshold, accepts_mask_input = 0.0, False

        def set_image(self, image): ...
        def decode(self, points, labels, boxes, multimask): ...
        def upscale(self, low): ...

    MaskGenerator(NoMaskInput())
    with pytest.raises(InputError, match="mask input"):
        MaskGenerator(NoMaskInput(), use_m2m=True)


def test_sam2_coordinates_are_bit_exact_with_sam2_transforms():
    from sam2.utils.transforms import SAM2Transforms

    rng = np.random.default_rng(0)
    tr = SAM2Transforms(1024, 0.0)
    for h, w in ((300, 451), (333, 517), (1031, 1537), (3, 7)):
        pts = (rng.random((2000, 2)) * [w, h]).astype(np.float32)
        ref = tr.transform_coords(torch.from_numpy(pts), normalize=True, orig_hw=(h, w)).numpy()
        assert np.array_equal(U.normalized_prompt_coords(pts, (h, w), (1024, 1024)), ref), (h, w)


# ---- logic: identical records on the same decoder outputs ---------------------------------------------------
def test_grid_records_identical_to_oracle_logic(sam2_amg, oracle_on_our_decoder):
    """The defaults (points_per_side 8), relaxed filters with and without NMS, multimask_output=False.
    (The NMS run uses 4 points per side: the oracle RLE-encodes every mask before NMS, slowly.)"""
    ours, _ = _run_both(sam2_amg, oracle_on_our_decoder, "defaults", points_per_side=8)
    relaxed, gen = _run_both(sam2_amg, oracle_on_our_decoder, "relaxed, no NMS", points_per_side=8,
                             box_nms_thresh=1.0, **RELAXED)
    assert len(relaxed) >= 20 and gen.stats.decoder_calls == 1 and gen.stats.prompts == 64
    nms, gen = _run_both(sam2_amg, oracle_on_our_decoder, "relaxed + NMS", points_per_side=4, **RELAXED)
    assert 1 <= len(nms) < gen.stats.masks_after_filters
    single, gen = _run_both(sam2_amg, oracle_on_our_decoder, "single mask", points_per_side=8, box_nms_thresh=1.0,
                            multimask_output=False)  # the defaults' filters: single masks are stable here
    assert len(single) >= 20 and gen.stats.candidate_masks == 64
    h, w = sam2_amg.photo.shape[:2]
    for r in single:  # one mask per grid point, reported as SAM2 does: float32 pixel coordinates
        (x, y), = r["point_coords"]
        assert np.float32(x) == x and np.float32(y) == y
        assert ((x / w * 8) % 1, (y / h * 8) % 1) == pytest.approx((0.5, 0.5))
    print(f"\nSAM2 grid records identical to the oracle: defaults {len(ours)}, relaxed {len(relaxed)}, "
          f"relaxed + NMS {len(nms)}, single mask {len(single)}")


def test_m2m_records_identical_to_oracle_logic(sam2_amg, oracle_on_our_decoder):
    """use_m2m: every mask is decoded again with its point and clamped low-res logits as mask input."""
    m2m, gen = _run_both(sam2_amg, oracle_on_our_decoder, "m2m", points_per_side=4, box_nms_thresh=1.0, use_m2m=True,
                         stability_score_thresh=0.9)
    assert gen.stats.prompts == 16 + 48 and gen.stats.decoder_calls == 2 and len(m2m) >= 10
    both, gen = _run_both(sam2_amg, oracle_on_our_decoder, "m2m + single mask", points_per_side=4,
                          box_nms_thresh=1.0, use_m2m=True, multimask_output=False, **RELAXED)
    assert gen.stats.prompts == 16 + 16 and len(both) >= 5
    plain = MaskGenerator(sam2_amg.pred, points_per_side=4, box_nms_thresh=1.0, stability_score_thresh=0.9,
                          output_mode="coco_rle").generate(sam2_amg.photo)
    assert [r["predicted_iou"] for r in plain] != [r["predicted_iou"] for r in m2m]  # the second pass matters


def test_crop_layer_and_small_regions_identical_to_oracle_logic(sam2_amg, oracle_on_our_decoder, monkeypatch):
    """crop_n_layers=1 (5 crops, per-crop and cross-crop NMS), without and with SAM2's small-region
    clean-up. This random model's masks on a photograph are image-wide textures, which the crop-edge
    filter always drops in crops; on a patch of the photograph (the cat's head) pasted on grey its masks
    are local, and crop-layer points at the crops' centres (where the shared features put the patch)
    give masks that survive in the crops."""
    img = np.full_like(sam2_amg.photo, 128)
    img[100:200, 170:280] = sam2_amg.photo[60:160, 150:260]
    sam2_amg.encode(img)  # one more encoder run: this image's features for every crop, both sides
    monkeypatch.setattr(sam2_amg, "logic_feats", {k: v.copy() for k, v in sam2_amg.pred.get_image_features().items()})
    grids = [U.build_point_grid(4), U.build_point_grid(2) * 0.2 + 0.4]
    kw = dict(points_per_side=None, point_grids=grids, crop_n_layers=1, stability_score_thresh=0.2, image=img)
    crops, gen = _run_both(sam2_amg, oracle_on_our_decoder, "crops", **kw)
    assert gen.stats.encoder_calls == 5 and gen.stats.prompts == 16 + 4 * 4 and len(crops) >= 1
    cleaned, gen = _run_both(sam2_amg, oracle_on_our_decoder, "crops + small regions", min_mask_region_area=40, **kw)
    assert gen.stats.masks_after_filters > len(cleaned) >= 2  # NMS removed duplicates
    assert len({tuple(r["crop_box"]) for r in cleaned}) >= 2  # masks from the whole image and from a crop
    assert [r["segmentation"] for r in cleaned] != [r["segmentation"] for r in crops]  # the clean-up did something
    print(f"\ncrop layer: {len(crops)} records; with min_mask_region_area=40: {len(cleaned)} records from "
          f"{gen.stats.masks_after_filters} masks, crop boxes {sorted({tuple(r['crop_box']) for r in cleaned})}")


def test_fill_low_res_regions_hand_made():
    logits = np.full((12, 12), 5.0, np.float32)
    logits[2:4, 2:4] = -3.0  # a 4-pixel hole
    logits[6:11, 6:11] = -3.0  # a 25-pixel hole ...
    logits[8, 8] = 2.0  # ... with a 1-pixel sprinkle inside
    logits[0, 11] = -1.0  # a hole in the corner (touching the border: still a hole for SAM2)
    out = U.fill_low_res_regions(logits, 4)
    assert (out[2:4, 2:4] == 10.0).all() and out[0, 11] == 10.0
    assert out[8, 8] == -10.0 and (out[6:11, 6:11][out[6:11, 6:11] != -10.0] == -3.0).all()
    assert np.array_equal(U.fill_low_res_regions(logits, 0), logits)
    big = U.fill_low_res_regions(logits, 24)  # the big hole is 24 pixels after its sprinkle: filled
    assert (big[6:11, 6:11] == 10.0).sum() == 24 and big[8, 8] == -10.0


# ---- end to end: ONNX Runtime vs the official PyTorch generator -----------------------------------------------
def _match(ref, ours):
    from scipy.optimize import linear_sum_assignment

    iou = np.zeros((len(ref), len(ours)))
    for i, a in enumerate(ref):
        for j, b in enumerate(ours):
            if np.allclose(a["point_coords"], b["point_coords"], atol=1e-3):
                sa, sb = a["segmentation"], b["segmentation"]
                iou[i, j] = (sa & sb).sum() / max(1, (sa | sb).sum())
    rows, cols = linear_sum_assignment(-iou)
    return iou[rows, cols]


def test_end_to_end_on_the_export_agrees_with_sam2_generator(sam2_amg):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    img = sam2_amg.photo
    h, w = img.shape[:2]
    kw = dict(points_per_side=4, box_nms_thresh=1.0, **RELAXED)  # NMS off: see test_runtime_amg.py
    gen = MaskGenerator(sam2_amg.pred, **kw)
    ours = gen.generate(img)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SAM2AutomaticMaskGenerator(sam2_amg.official, **kw).generate(img)
    assert gen.stats.prompts == 16 and gen.stats.encoder_calls == 1 and gen.options["family"] == "sam2"
    for r in ours:  # the oracle's record schema; provenance: the grid point and the crop that made it
        assert set(r) == set(ref[0])
        assert r["segmentation"].shape == (h, w) and r["area"] == int(r["segmentation"].sum())
        assert r["crop_box"] == [0, 0, w, h]
        (x, y), = r["point_coords"]
        assert ((x / w * 4) % 1, (y / h * 4) % 1) == pytest.approx((0.5, 0.5))
        assert r["predicted_iou"] > 0.8 and r["stability_score"] >= RELAXED["stability_score_thresh"]
    assert len(ref) >= 5
    assert abs(len(ours) - len(ref)) <= max(2, int(0.05 * len(ref))), (len(ours), len(ref))
    ious = _match(ref, ours)
    good = int((ious >= 0.9).sum())
    assert good >= 0.95 * len(ref) and good >= 0.95 * len(ours), (good, len(ref), len(ours))
    print(f"\nSAM2.1-T everything, ONNX vs official: {len(ours)} vs {len(ref)} masks, {good} matched "
          f"(median IoU {np.median(ious):.4f})")


# ---- CLI ----------------------------------------------------------------------------------------------
def test_everything_cli_sam2_options(fake_model_dir, tmp_path, capsys):
    from samdeploy.cli.main import main

    out = tmp_path / "ev"
    code = main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--points-per-side", "2",
                 "--stability-score-thresh", "0", "--pred-iou-thresh", "0", "--use-m2m", "--no-multimask",
                 "--mask-threshold", "0.25", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "(single mask, m2m)" in text and "mask threshold 0.25" in text
    doc = json.loads((out / "masks.json").read_text())
    assert doc["stats"]["prompts"] == 4 + 4  # first pass + m2m pass, one mask per point
    p = doc["params"]
    assert (p["use_m2m"], p["multimask_output"], p["mask_threshold"], p["small_region_mode"]) == (True, False, 0.25, "sam")
    for a in doc["annotations"]:
        assert rle_to_mask(a["segmentation"]).sum() == a["area"]
    # unset: the family's defaults are resolved into masks.json
    main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--points-per-side", "1",
          "--out", str(tmp_path / "d")])
    p = json.loads((tmp_path / "d" / "masks.json").read_text())["params"]
    assert (p["pred_iou_thresh"], p["mask_threshold"], p["use_m2m"], p["multimask_output"]) == (0.88, 0.0, False, True)
    capsys.readouterr()
    assert main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--out", str(tmp_path / "x"),
                 "--mask-threshold", "nan"]) == 2
    assert "--mask-threshold must be a finite number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's choices: a usage error, exit 2
        main(["everything", "sample:astronaut", "--model-dir", str(fake_model_dir), "--small-region-mode", "x"])
    assert exc.value.code == 2 and "--small-region-mode" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
