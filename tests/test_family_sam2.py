"""SAM 2.1 Hiera-T image path end to end against the official package (``sam2`` 1.1.0, test-only oracle).

One seeded model (``random_model("sam2.1_hiera_t")``: realistic decoder, logits about +-20) is saved as
``{"model": state_dict}`` -- the official ``sam2.1_hiera_tiny.pt`` layout -- and loaded both by the
official builder (``build_sam2(config, file)``: default ``apply_postprocessing=True``, i.e. the dynamic
single-mask fallback; its own strict key check) and by ours (``load_checkpoint(file, "auto")``). Then:

1. the file layout, auto-detection (SAM 2.1 vs SAM 2.0 told apart on the oracle's own meta-built models);
2. the export of that checkpoint passes ``samdeploy check`` at fp32 on one photograph;
3. preprocessing: our encoder input (Pillow float resize, stretch), normalised as the graph does, equals
   ``SAM2Transforms`` (ToTensor, antialiased Resize((1024, 1024)), Normalize) at awkward sizes;
4. the torch-free ``Predictor`` on the ONNX export vs ``SAM2ImagePredictor``: clicks, negative click, box,
   box + click, mask_input fed back, no prompt, mask only, multimask True/False, and the dynamic-stability
   fallback (an unstable token 0); object-score logits vs the oracle decoder's;
5. ``predict_batch`` with K boxes vs the oracle's batched ``predict(box=[K, 4])``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fixtures_families import iou, prompt_suite, rel_l2, sam2_config as _config, sam2_oracle_on_meta as _oracle_on_meta  # noqa: E402
import torch

pytest.importorskip("hydra")
pytest.importorskip("iopath")
pytest.importorskip("sam2")

from samdeploy.check.parity import CheckOptions, run_check  # noqa: E402
from samdeploy.export.exporter import ExportOptions, export_model  # noqa: E402
from samdeploy.export.source import checkpoint_source, resolved  # noqa: E402
from samdeploy.models.build import random_model  # noqa: E402
from samdeploy.models.checkpoint import detect_variant, load_checkpoint  # noqa: E402
from samdeploy.models.sam2 import IMAGENET_MEAN, IMAGENET_STD, SAM2_OUTPUT_NAMES  # noqa: E402
from samdeploy.runtime import Predictor  # noqa: E402
from samdeploy.runtime.prompts import pack_for  # noqa: E402
from samdeploy.runtime.transforms import apply_coords, preprocess_image  # noqa: E402
from samdeploy.contract import ENCODER_OUTPUT, SAM2_ENCODER_OUTPUTS, SAM2_OBJECT_SCORE

VARIANT = "sam2.1_hiera_t"
SEED = 5
IOU_MIN = 0.99
SCORE_TOL = 1e-4
OBJ = SAM2_OBJECT_SCORE

MEASURED: dict[str, float] = {"iou_min": 1.0, "score_max_abs": 0.0, "low_res_max_abs": 0.0, "obj_max_abs": 0.0,
                              "cases": 0}


# ---- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t21(tmp_path_factory):
    """(checkpoint path, official SAM2Base, our Sam2Image, CheckpointInfo) from one official-layout file."""
    from sam2.build_sam import build_sam2

    torch.set_num_threads(2)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": random_model(VARIANT, seed=SEED).state_dict()}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        official = build_sam2(_config(VARIANT), str(path), device="cpu")  # the official loader (strict keys)
    ours, info = load_checkpoint(path, "auto")
    return path, official.eval(), ours, info


@pytest.fixture(scope="module")
def t21_export(tmp_path_factory, t21):
    """``samdeploy export --checkpoint <file>`` (variant auto-detected), once per module."""
    path, _, ours, _ = t21
    out = tmp_path_factory.mktemp("sam2_export") / "export"
    export_model(ours, out, resolved(checkpoint_source(path, "auto"), ours), ExportOptions())
    return out


class _Spy:
    """Records what the official mask decoder computed in the last ``SAM2ImagePredictor._predict``:
    all four tokens (``predict_masks``) and the object-score logits (``forward``'s 4th output)."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.all_masks = self.all_iou = self.obj = None
        inner = decoder.predict_masks

        def predict_masks(*args, **kwargs):
            out = inner(*args, **kwargs)
            self.all_masks, self.all_iou = out[0].detach().numpy().copy(), out[1].detach().numpy().copy()
            return out

        decoder.predict_masks = predict_masks  # instance attribute: forward() calls self.predict_masks
        decoder.register_forward_hook(lambda m, i, o: setattr(self, "obj", o[3].detach().numpy().copy()))


@pytest.fixture(scope="module")
def predictors(t21, t21_export):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ours = Predictor(t21_export, threads=2)
    official = SAM2ImagePredictor(t21[1])
    spy = _Spy(t21[1].sam_mask_decoder)
    yield ours, official, spy
    ours.close()


@pytest.fixture(scope="module")
def test_images(photos):
    """Real photographs and awkward crops/resizes of them."""
    from PIL import Image

    coffee, astro = photos["coffee"], photos["astronaut"]
    big = np.asarray(Image.fromarray(coffee).resize((1537, 1031), Image.BILINEAR))  # > 1024, not square
    return {
        "chelsea": photos["chelsea"],  # 300x451
        "retina_1411": photos["retina"],  # > 1024
        "big_1031x1537": np.ascontiguousarray(big),
        "row_1x300": np.ascontiguousarray(astro[200:201, 100:400]),
        "col_300x1": np.ascontiguousarray(astro[100:400, 260:261]),
        "odd_333x517": np.ascontiguousarray(np.concatenate([coffee, coffee[:, :117]], axis=1)[:333, :517]),
    }


def official_set_features(official, feats: dict[str, np.ndarray], hw: tuple[int, int]) -> None:
    """``SAM2ImagePredictor`` state after ``set_image`` of an ``hw`` image whose features are ``feats``
    (names of our contract; the oracle's set_image computes exactly these three, see test_sam2_models)."""
    official.reset_predictor()
    emb, hr0, hr1 = (torch.from_numpy(np.array(feats[n])) for n in SAM2_ENCODER_OUTPUTS)
    official._features = {"image_embed": emb, "high_res_feats": [hr0, hr1]}
    official._orig_hw = [tuple(int(v) for v in hw)]
    official._is_image_set = True


@pytest.fixture(scope="module")
def chelsea_features(predictors, test_images):
    """Both real encoders on 'chelsea' (oracle: SAM2Transforms + Hiera; ours: preprocess + ONNX).
    Returns (official features, our features) by our output names."""
    ours, official, _ = predictors
    img = test_images["chelsea"]
    official.set_image(img)
    ours.set_image(img)
    f = official._features
    ref = dict(zip(SAM2_ENCODER_OUTPUTS, (t.numpy().copy() for t in (f["image_embed"], *f["high_res_feats"]))))
    return ref, {k: v.copy() for k, v in ours.get_image_features().items()}


def set_both(predictors, chelsea_features, hw, feats=None):
    """Same features on both sides for an ``hw`` image (prompt transform, decoder, post-processing)."""
    ours, official, _ = predictors
    feats = chelsea_features[1] if feats is None else feats
    ours.set_image_embedding(feats, hw)
    official_set_features(official, feats, hw)


def assert_same(ours, official, spy, got, ref, what: str) -> None:
    """Predictor.predict(_batch) outputs vs SAM2ImagePredictor.predict outputs (+ object scores)."""
    m1, s1, l1 = got
    m2, s2, l2 = ref
    m2 = m2 > 0.5  # the oracle returns thresholded masks as float 0/1
    assert m1.dtype == np.bool_ and m1.shape == m2.shape, (what, m1.shape, m2.shape)
    assert s1.shape == s2.shape and l1.shape == l2.shape, what
    ious = [iou(a, b) for a, b in zip(m1.reshape(-1, *m1.shape[-2:]), m2.reshape(-1, *m2.shape[-2:]))]
    score = float(np.abs(s1 - s2).max())
    low = float(np.abs(l1 - l2).max())
    assert np.abs(l2).max() <= 32.0 and np.abs(l1).max() <= 32.0, what  # both clamp the returned logits
    o1, o2 = ours.extra_outputs[OBJ], spy.obj
    assert o1.shape == o2.shape == (l1.shape[0] if l1.ndim == 4 else 1, 1), (what, o1.shape, o2.shape)
    obj = float(np.abs(o1 - o2).max())
    MEASURED["iou_min"] = min(MEASURED["iou_min"], min(ious))
    MEASURED["score_max_abs"] = max(MEASURED["score_max_abs"], score)
    MEASURED["low_res_max_abs"] = max(MEASURED["low_res_max_abs"], low)
    MEASURED["obj_max_abs"] = max(MEASURED["obj_max_abs"], obj)
    MEASURED["cases"] += 1
    assert min(ious) >= IOU_MIN, f"{what}: IoU {ious}"
    assert score <= SCORE_TOL, f"{what}: scores {s1} vs {s2}"
    assert low <= 1e-3 * max(1.0, float(np.abs(l2).max())), f"{what}: low-res logits differ by {low}"
    assert obj <= 1e-3 * max(1.0, float(np.abs(o2).max())), f"{what}: object scores {o1} vs {o2}"


def compare(predictors, prompt: dict, multimask: bool, what: str):
    ours, official, spy = predictors
    got = ours.predict(**prompt, multimask_output=multimask)
    ref = official.predict(**prompt, multimask_output=multimask)
    assert got[0].shape[0] == (3 if multimask else 1), what
    assert_same(ours, official, spy, got, ref, f"{what} multimask={multimask}")
    return got, ref


# ---- 1. official checkpoint layout, detection ---------------------------------------------------------
def test_official_layout_checkpoint_loads_strictly_both_ways(t21, predictors):
    path, official, ours, info = t21
    obj = torch.load(path, weights_only=True)
    assert list(obj) == ["model"] and len(obj["model"]) == 471  # sam2.1_hiera_tiny.pt: {"model": sd}
    assert info.variant == VARIANT and info.family == "sam2" and info.container == "dict['model']"
    assert ours.variant == VARIANT
    result = official.load_state_dict(obj["model"], strict=True)  # explicit, again (build_sam2 did it too)
    assert not result.missing_keys and not result.unexpected_keys
    ref, got = official.state_dict(), ours.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    # build_sam2's default apply_postprocessing=True: the dynamic single mask our contract describes
    dec, contract = official.sam_mask_decoder, predictors[0].contract
    assert dec.dynamic_multimask_via_stability and not dec.training
    assert contract.decoder.single_mask == "dynamic_stability"
    assert contract.decoder.dynamic_stability_delta == dec.dynamic_multimask_stability_delta == 0.05
    assert contract.decoder.dynamic_stability_thresh == dec.dynamic_multimask_stability_thresh == 0.98
    assert contract.decoder.low_res_clamp == 32.0 and OBJ in contract.decoder.extra_outputs


@pytest.mark.parametrize("name", ["sam2_hiera_t", "sam2.1_hiera_t"])
def test_sam2_and_sam21_told_apart(name):
    """The oracle's own meta-built models (no weights): SAM 2.0 lacks no_obj_embed_spatial/obj_ptr_tpos_proj."""
    sd = _oracle_on_meta(name).state_dict()
    det = detect_variant(sd)
    assert det.family == "sam2" and det.variant == name and not det.ambiguous_with, det
    assert ("SAM 2.1" in det.description) == name.startswith("sam2.1"), det.description


# ---- 2. export + samdeploy check ----------------------------------------------------------------------
def test_export_passes_samdeploy_check_fp32(t21, t21_export, photos):
    from samdeploy.export.manifest import manifest_contract, read_manifest

    _, _, sam, _ = t21
    contract = manifest_contract(read_manifest(t21_export))
    assert contract.variant == VARIANT and contract.preprocess.resize == "stretch"
    assert [o.name for o in contract.encoder.outputs] == list(SAM2_OUTPUT_NAMES)
    report = run_check(t21_export, sam=sam, images={"coffee": photos["coffee"]}, options=CheckOptions(threads=2))
    print("\n" + report.table())
    assert report.precision == "fp32"
    assert report.passed, [f"{g.section}.{g.name}={g.value}" for g in report.failures]
    assert report.reference_logit_median_abs > 1.0  # IoU gates are binding, not advisory


# ---- 3. preprocessing vs SAM2Transforms ---------------------------------------------------------------
# Pillow's float ("F") BILINEAR resize and torchvision's antialiased bilinear Resize use the same
# separable triangle filter (support scaled by the downscale factor), both in float32 but with a
# different accumulation order: after the 1/(255*std) normalisation the difference is float32 rounding,
# measured <= 1.5e-6 at every size here (<= 1e-4 grey levels on the 0..255 scale; 1 grey level = 0.017).
PRE_TOL = 5e-6


def test_encoder_input_matches_sam2transforms(predictors, test_images, photos):
    from PIL import Image

    ours, official, _ = predictors
    pre = ours.contract.preprocess
    assert (pre.resize, pre.interpolation, pre.normalize_in_graph) == ("stretch", "bilinear_antialias_float", True)
    assert tuple(pre.pixel_mean) == tuple(official._transforms.mean) == IMAGENET_MEAN
    assert tuple(pre.pixel_std) == tuple(official._transforms.std) == IMAGENET_STD
    mean = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    coffee = photos["coffee"]
    sizes = {**test_images,
             "exact_1024": np.asarray(Image.fromarray(coffee).resize((1024, 1024), Image.BILINEAR)),  # no resize
             "tall_2000x37": np.asarray(Image.fromarray(coffee).resize((37, 2000), Image.BILINEAR)),
             "hubble_872x1000": photos["hubble_deep_field"]}
    worst = {}
    for name, img in sizes.items():
        img = np.ascontiguousarray(img)
        x, hw = preprocess_image(img, pre)
        assert hw == (1024, 1024) and x.shape == (1, 3, 1024, 1024) and x.dtype == np.float32, name
        assert 0.0 <= x.min() and x.max() <= 255.0, name  # 0..255 into the graph
        got = (x / np.float32(255.0) - mean) / std  # Sam2Image.encode's first line
        ref = official._transforms(img)[None].numpy()
        worst[name] = float(np.abs(got - ref).max())
    print("\npreprocess max |ours - SAM2Transforms| (normalised units): "
          + ", ".join(f"{k} {v:.2g}" for k, v in worst.items()))
    assert worst["exact_1024"] == 0.0
    assert max(worst.values()) <= PRE_TOL, worst


# ---- 4. Predictor on ONNX vs SAM2ImagePredictor --------------------------------------------------------
def test_full_path_on_a_photo_matches_official(predictors, chelsea_features, test_images):
    """Both real encoders on 'chelsea' (300x451), then every prompt kind, multimask True and False."""
    ours, official, spy = predictors
    ref_feats, our_feats = chelsea_features
    for n in SAM2_OUTPUT_NAMES:
        assert our_feats[n].shape == ref_feats[n].shape, n
        assert rel_l2(our_feats[n], ref_feats[n]) <= 1e-5, (n, rel_l2(our_feats[n], ref_feats[n]))
    img = test_images["chelsea"]
    h, w = img.shape[:2]
    official_set_features(official, ref_feats, (h, w))  # oracle on its own features
    ours.set_image_embedding(our_feats, (h, w))
    assert ours.original_size == (h, w) and ours.input_size == (1024, 1024)
    suite = prompt_suite(h, w)
    for case, multimask in [("click", True), ("click", False), ("clicks_neg", False), ("box", True),
                            ("box_click", False)]:
        compare(predictors, suite[case], multimask, f"chelsea {case}")
    # mask_input fed back: the oracle's returned (clamped) low-res logits of its best multimask answer
    _, ref = compare(predictors, suite["clicks_neg"], True, "chelsea clicks_neg")
    prev = ref[2][np.argmax(ref[1])][None]
    assert np.abs(prev).max() > 5.0  # realistic logits
    compare(predictors, {**suite["clicks_neg"], "mask_input": prev}, False, "chelsea clicks+mask_input")
    compare(predictors, {"mask_input": prev}, True, "chelsea mask only")
    for multimask in (True, False):  # SAM2ImagePredictor accepts no prompt at all (N = 0 points)
        compare(predictors, {}, multimask, "chelsea no prompt")


AWKWARD = {  # (prompt, multimask) pairs per size (time budget: ~0.5-1 s per oracle call on 2 cores)
    "big_1031x1537": [("click", True), ("box_click", False)],
    "row_1x300": [("clicks_neg", True), ("box", False)],
    "col_300x1": [("click", False), ("box_click", True)],
    "odd_333x517": [("box", True), ("clicks_neg", False)],
}


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_sizes_match_official(predictors, chelsea_features, test_images, name):
    """Same (ONNX) features on both sides: prompt scaling to the stretched 1024 frame, the decoder and
    the direct resize of the logits to H x W are what is compared."""
    ours, official, _ = predictors
    h, w = test_images[name].shape[:2]
    set_both(predictors, chelsea_features, (h, w))
    assert ours.input_size == (1024, 1024)
    suite = prompt_suite(h, w)
    for case, multimask in AWKWARD[name]:
        compare(predictors, suite[case], multimask, f"{name} {case}")


def _token_of(low: np.ndarray, all_masks: np.ndarray) -> int:
    """Which of the four raw tokens a returned (clamped) low-res mask is."""
    d = [np.abs(np.clip(all_masks[t], -32, 32) - low).max() for t in range(all_masks.shape[0])]
    assert min(d) <= 1e-3 * 32, d
    return int(np.argmin(d))


def test_dynamic_stability_fallback_matches_official(predictors, chelsea_features, test_images):
    """multimask_output=False: token 0 unless its stability (area(l > 0.05) / area(l > -0.05)) is < 0.98,
    then the best of tokens 1..3 by IoU. Real features give stable token-0 masks for this model, so an
    unstable case is constructed: the same chelsea features with the high-res skip features scaled by
    0.1 (flatter token-0 logits) on both sides. Only clear cases (stability off 0.98 by >= 0.004, IoU
    winner ahead by >= 1e-4) are asserted, so float noise cannot flip a choice."""
    ours, official, spy = predictors
    h, w = test_images["odd_333x517"].shape[:2]
    base = chelsea_features[1]
    flat = {k: (v if k == ENCODER_OUTPUT else v * np.float32(0.1)) for k, v in base.items()}
    d = ours.contract.decoder
    gy, gx = np.meshgrid(np.linspace(0.1, 0.9, 3) * (h - 1), np.linspace(0.1, 0.9, 3) * (w - 1), indexing="ij")
    clicks = np.stack([gx, gy], -1).reshape(-1, 1, 2)
    chosen = {"stable": [], "unstable": []}
    for feats in (base, flat):
        ours.set_image_embedding(feats, (h, w))
        pc, pl = pack_for(ours.contract, apply_coords(clicks, (h, w), ours.input_size), np.ones((len(clicks), 1)),
                          None, len(clicks), ours.no_points_ok)
        iou_all, low_all = ours.decode(pc, pl)
        t0 = low_all[:, 0]
        stab = np.count_nonzero(t0 > 0.05, axis=(1, 2)) / np.maximum(np.count_nonzero(t0 > -0.05, axis=(1, 2)), 1)
        top2 = np.sort(iou_all[:, 1:], axis=1)[:, -2:]
        for i, s in enumerate(stab):
            clear = abs(s - d.dynamic_stability_thresh) >= 0.004 and top2[i, 1] - top2[i, 0] >= 1e-4
            if clear:
                chosen["stable" if s >= d.dynamic_stability_thresh else "unstable"].append((feats is flat, i, float(s)))
    assert chosen["unstable"] and chosen["stable"], {k: len(v) for k, v in chosen.items()}
    picks = []
    for kind, n in (("stable", 1), ("unstable", 2)):
        for is_flat, i, s in chosen[kind][:n]:
            set_both(predictors, chelsea_features, (h, w), flat if is_flat else base)
            prompt = {"point_coords": clicks[i], "point_labels": np.array([1])}  # Predictor keywords
            got, ref = compare(predictors, prompt, False, f"dynamic {kind} click {i} (stability {s:.4f})")
            ref_token = _token_of(ref[2][0], spy.all_masks[0])
            our_token = _token_of(got[2][0], spy.all_masks[0])
            assert our_token == ref_token, (kind, i, s, our_token, ref_token)
            assert (ref_token == 0) == (kind == "stable"), (kind, i, s, ref_token)
            if kind == "unstable":
                assert ref_token == 1 + int(np.argmax(spy.all_iou[0, 1:]))
            picks.append((kind, round(s, 4), ref_token))
    print(f"\ndynamic single mask (kind, token-0 stability, token chosen by both): {picks}")


# ---- 5. predict_batch vs the oracle's batched predict ---------------------------------------------------
def test_predict_batch_boxes_match_official_batched_predict(predictors, chelsea_features, test_images):
    ours, official, spy = predictors
    h, w = test_images["odd_333x517"].shape[:2]
    set_both(predictors, chelsea_features, (h, w))
    rng = np.random.default_rng(7)
    k = 4
    lo = rng.uniform(0, 0.5, (k, 2)) * [w, h]
    boxes = np.concatenate([lo, lo + rng.uniform(0.2, 0.5, (k, 2)) * [w, h]], axis=1)
    clicks = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None]
    for multimask in (True, False):
        got = ours.predict_batch(boxes=boxes, multimask_output=multimask)
        ref = official.predict(box=boxes, multimask_output=multimask)
        assert got[0].shape == (k, 3 if multimask else 1, h, w) and ref[0].shape == got[0].shape
        assert_same(ours, official, spy, got, ref, f"batch {k} boxes multimask={multimask}")
    got = ours.predict_batch(point_coords=clicks, point_labels=np.ones((k, 1)), boxes=boxes, multimask_output=False)
    ref = official.predict(point_coords=clicks, point_labels=np.ones((k, 1)), box=boxes, multimask_output=False)
    assert_same(ours, official, spy, got, ref, f"batch {k} boxes+clicks multimask=False")
    # ours decodes in chunks of max_batch: a chunked call gives the unchunked answer
    small = Predictor(ours.model, max_batch=3)  # shares the sessions; not closed here
    small.set_image_embedding(chelsea_features[1], (h, w))
    chunked = small.predict_batch(point_coords=clicks, point_labels=np.ones((k, 1)), boxes=boxes,
                                  multimask_output=False)
    assert np.array_equal(chunked[0], got[0]) and np.allclose(chunked[1], got[1], atol=1e-6)
    assert np.allclose(chunked[2], got[2], atol=1e-4)
    assert np.allclose(small.extra_outputs[OBJ], ours.extra_outputs[OBJ], atol=1e-5)
    print(f"\nSAM2.1-T Predictor vs SAM2ImagePredictor over {MEASURED['cases']} calls: min mask IoU "
          f"{MEASURED['iou_min']:.5f}, max |score diff| {MEASURED['score_max_abs']:.2g}, max |low-res logit diff| "
          f"{MEASURED['low_res_max_abs']:.2g}, max |object score diff| {MEASURED['obj_max_abs']:.2g}")
