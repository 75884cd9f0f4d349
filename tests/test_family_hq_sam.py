"""HQ-SAM light (``hq_vit_tiny``) end to end against the official package (segment-anything-hq==0.3,
module ``segment_anything_hq``, test-only oracle).

One seeded model (``random_model("hq_vit_tiny")``: realistic decoder, logits about +-20) is saved as a
plain state_dict -- the official ``sam_hq_vit_tiny.pth`` layout -- loaded strictly by the oracle
(``sam_model_registry["vit_tiny"]`` + ``load_state_dict(strict=True)`` + ``.eval()`` AFTER loading:
the official TinyViT caches its attention biases at ``eval()``) and by ours (``load_checkpoint(path,
"auto")``). Then:

1. the checkpoint is detected as ``hq_vit_tiny`` and both models hold the same tensors;
2. its export (once per module) passes ``run_check`` at fp32 on one photograph;
3. the torch-free ``Predictor`` on the ONNX export vs the oracle ``SamPredictor`` on photographs at
   awkward sizes (1xN, Nx1, odd, > 1024): clicks, a negative click, box, box + click, mask_input fed
   back, no prompt, mask only; every (multimask_output, hq_token_only) mode. One mask per prompt.
   Mask IoU >= 0.99, scores within 1e-4;
4. ``get_image_features()`` holds both encoder outputs; ``set_image_embedding(features, size)`` on a
   second Predictor reproduces the masks; a single array is refused naming both outputs;
5. the contract stored in the graphs / manifest names the two encoder outputs, which the decoder's
   inputs start with.

CPU budget (2 cores): the (multimask, hq_token_only) modes of one prompt differ only after the decoder,
so each side's decoder result is memoised per prompt (ours: the decoder graph's run() keyed by its
feeds; the oracle: MaskDecoderHQ.predict_masks and its image-level HQ feature convolutions keyed by
their inputs). Selection (hq_select / the oracle's forward), scoring and post-processing run in every
mode. Both real encoders (ours: the ONNX graph) run on 'chelsea' only (TinyViT at 1024 costs ~5 s on
the oracle's side); the other sizes reuse each side's own chelsea features, so the prompt transform and
post-processing at that size are what is compared there (the encoder input is always 1024x1024). Our
encoder graph returns F_hq (``hq_features``), the oracle's encoder the early ViT feature it is made of.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from fixtures_families import iou, prompt_suite, rel_l2  # noqa: E402
import torch

pytest.importorskip("segment_anything_hq")

from samdeploy.check.parity import CheckOptions, run_check  # noqa: E402
from samdeploy.contract import (  # noqa: E402
    DECODER_IOU, DECODER_LOW_RES_MASKS, ENCODER_OUTPUT, HQ_FEATURES, read_onnx_contract,
)
from samdeploy.errors import InputError  # noqa: E402
from samdeploy.export.exporter import ExportOptions, export_model  # noqa: E402
from samdeploy.export.manifest import graph_path, manifest_contract, read_manifest  # noqa: E402
from samdeploy.export.source import checkpoint_source, resolved  # noqa: E402
from samdeploy.models.build import random_model  # noqa: E402
from samdeploy.models.checkpoint import load_checkpoint  # noqa: E402
from samdeploy.runtime import Predictor  # noqa: E402

VARIANT = "hq_vit_tiny"
SEED = 4
IOU_MIN = 0.99
SCORE_TOL = 1e-4
OFFICIAL_KEYS = 464  # sam_hq_vit_tiny.pth
FEATURES = (ENCODER_OUTPUT, HQ_FEATURES)  # F_hq once per image, in the encoder graph
MODES = [(mm, hq) for mm in (True, False) for hq in (False, True)]  # (multimask_output, hq_token_only)

MEASURED: dict[str, float] = {"iou_min": 1.0, "score_max_abs": 0.0, "low_res_rel_max": 0.0, "compared": 0}


def _fp(t) -> str:
    """Content fingerprint for the memos: every element of small tensors (prompt tokens, coordinates),
    a fixed 1-in-61 subsample plus the sum of large ones (embeddings, dense prompt maps)."""
    a = np.ascontiguousarray(t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
    flat = a.ravel()
    if flat.size > 65536:
        flat = np.concatenate([flat[::61], [flat.sum(dtype=np.float64)]])
    return hashlib.blake2b(flat.tobytes(), digest_size=16).hexdigest() + str(a.shape) + str(a.dtype)


# ---- memoisation (see the module docstring) ---------------------------------------------------------
def _memoise_oracle(official) -> dict[str, int]:
    """Cache the oracle's prompt encoder, its decoder's prompt-level predict_masks and image-level HQ
    feature convolutions by their inputs (and the constant dense PE); MaskDecoderHQ.forward (token
    selection, hq_token_only) and postprocess_masks still run every call."""
    dec = official.mask_decoder
    counts = {"predict_masks": 0, "hq_feature_convs": 0}
    memo: dict = {}

    def cached(module, kind):
        fn = module.forward

        def forward(x):
            key = (kind, _fp(x))
            if key not in memo:
                counts["hq_feature_convs"] += 1
                memo[key] = fn(x)
            return memo[key]

        module.forward = forward

    cached(dec.embedding_encoder, "embedding_encoder")
    cached(dec.compress_vit_feat, "compress_vit_feat")
    predict_masks = dec.predict_masks

    def predict_masks_cached(**kw):
        key = ("predict_masks",) + tuple((k, _fp(v)) for k, v in sorted(kw.items()))
        if key not in memo:
            counts["predict_masks"] += 1
            memo[key] = predict_masks(**kw)
        return memo[key]

    dec.predict_masks = predict_masks_cached
    pe = official.prompt_encoder
    dense_pe = pe.get_dense_pe()  # a constant of the model (recomputed by every predict() otherwise)
    pe.get_dense_pe = lambda: dense_pe
    encode_prompts = pe.forward

    def prompt_encoder_cached(points, boxes, masks):
        key = ("prompt_encoder", None if points is None else (_fp(points[0]), _fp(points[1])),
               None if boxes is None else _fp(boxes), None if masks is None else _fp(masks))
        if key not in memo:
            memo[key] = encode_prompts(points, boxes, masks)
        return memo[key]

    pe.forward = prompt_encoder_cached
    return counts


def _memoise_graph(graph) -> dict[str, int]:
    """Cache the decoder graph's run() by its feeds (shared by every Predictor on this GraphPair)."""
    run = graph.run
    memo: dict = {}
    counts = {"runs": 0}

    def cached(feeds, *a, **kw):
        key = tuple((k, _fp(v)) for k, v in sorted(feeds.items()))
        if key not in memo:
            counts["runs"] += 1
            memo[key] = run(feeds, *a, **kw)
        return {k: np.array(v) for k, v in memo[key].items()}  # fresh arrays: no aliasing between modes

    graph.run = cached
    return counts


# ---- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hq(tmp_path_factory):
    """The official-layout checkpoint, the oracle Sam loaded from it, ours, and the export."""
    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("hq_vit_tiny")
    ckpt = folder / "sam_hq_vit_tiny.pth"
    sd = random_model(VARIANT, seed=SEED).state_dict()
    torch.save(sd, ckpt)  # a plain state_dict, like the official file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation / registry-overwrite noise
        import segment_anything_hq

        official = segment_anything_hq.sam_model_registry["vit_tiny"](checkpoint=None)
    result = official.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    attn = [m for m in official.image_encoder.modules() if hasattr(m, "attention_bias_idxs")]
    stale = [m for m in attn if hasattr(m, "ab") and not torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs])]
    official.eval()  # AFTER loading: re-caches TinyViT's attention biases (`ab`) from the loaded weights

    ours, info = load_checkpoint(ckpt, "auto")
    out = folder / "export"
    export_model(ours, out, resolved(checkpoint_source(ckpt, "auto"), ours), ExportOptions())
    return dict(ckpt=ckpt, sd=sd, official=official, ours=ours, info=info, out=out, attn=attn, stale=stale)


@pytest.fixture(scope="module")
def predictors(hq):
    """Our Predictors for hq_token_only False / True (one ONNX GraphPair), the oracle SamPredictor,
    and the memo counters."""
    from segment_anything_hq import SamPredictor

    ours = Predictor(hq["out"], threads=2)
    ours_hq = Predictor(ours.model, hq_token_only=True)  # same sessions
    assert not ours.hq_token_only and ours_hq.hq_token_only
    counts = {"ours": _memoise_graph(ours.model.decoder), "oracle": _memoise_oracle(hq["official"])}
    yield {False: ours, True: ours_hq}, SamPredictor(hq["official"]), counts
    ours.close()


@pytest.fixture(scope="module")
def test_images(photos):
    """Real photographs and awkward crops/resizes of them."""
    from PIL import Image

    coffee, astro = photos["coffee"], photos["astronaut"]
    big = np.asarray(Image.fromarray(coffee).resize((1537, 1031), Image.BILINEAR))  # long side > 1024, odd
    return {
        "chelsea": photos["chelsea"],  # 300x451
        "big_1031x1537": np.ascontiguousarray(big),
        "row_1x300": np.ascontiguousarray(astro[200:201, 100:400]),
        "col_300x1": np.ascontiguousarray(astro[100:400, 260:261]),
        "odd_333x517": np.ascontiguousarray(np.concatenate([coffee, coffee[:, :117]], axis=1)[:333, :517]),
    }


@pytest.fixture(scope="module")
def chelsea(predictors, test_images):
    """Both real encoders on 'chelsea': (our features, the oracle's (features, interm))."""
    ours, official, _ = predictors
    img = test_images["chelsea"]
    ours[False].set_image(img)
    official.set_image(img)
    return ours[False].get_image_features(), (official.features.clone(), [t.clone() for t in official.interm_features])


def _oracle_state(official, features, interm, hw):
    """SamPredictor as set_image() leaves it, with the given encoder outputs."""
    h, w = hw
    official.reset_image()
    official.original_size = (h, w)
    official.input_size = tuple(official.transform.get_preprocess_shape(h, w, official.transform.target_length))
    tensor = lambda a: a.clone() if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a))  # noqa: E731
    official.features = tensor(features)
    official.interm_features = [tensor(t) for t in interm]
    official.is_image_set = True


def assert_same(got, ref, what: str) -> None:
    m1, s1, l1 = got
    m2, s2, l2 = ref
    assert m1.dtype == m2.dtype == np.bool_, what
    assert m1.shape == m2.shape and s1.shape == s2.shape and l1.shape == l2.shape, what
    ious = [iou(a, b) for a, b in zip(m1, m2)]
    score = float(np.abs(s1 - s2).max())
    scale = float(np.abs(l2).max())
    low = float(np.abs(l1 - l2).max()) / scale
    MEASURED["iou_min"] = min(MEASURED["iou_min"], min(ious))
    MEASURED["score_max_abs"] = max(MEASURED["score_max_abs"], score)
    MEASURED["low_res_rel_max"] = max(MEASURED["low_res_rel_max"], low)
    MEASURED["compared"] += 1
    assert scale > 5.0, f"{what}: logits too small to make the IoU comparison meaningful ({scale})"
    assert min(ious) >= IOU_MIN, f"{what}: IoU {ious}"
    assert score <= SCORE_TOL, f"{what}: scores {s1} vs {s2}"
    assert low <= 1e-4, f"{what}: low-res logits differ by {low} of max |logit|"


def _all_modes(ours, official, kw, h, w, what):
    """Our predict() vs the oracle's in every (multimask, hq_token_only) mode; returns the oracle's
    (multimask=True, hq_token_only=False) answer (for feeding back)."""
    first = None
    for mm, hq in MODES:
        got = ours[hq].predict(**kw, multimask_output=mm)
        ref = official.predict(**kw, multimask_output=mm, hq_token_only=hq)
        # ONE mask per prompt, like HQ-SAM's SamPredictor, whatever multimask_output says
        assert got[0].shape == (1, h, w) and got[1].shape == (1,) and got[2].shape == (1, 256, 256), what
        assert_same(got, ref, f"{what} multimask={mm} hq_token_only={hq}")
        first = ref if first is None else first
    return first


# ---- 1. checkpoint ---------------------------------------------------------------------------------
def test_checkpoint_detected_and_loaded_strictly_by_both(hq):
    info, ours, official, sd = hq["info"], hq["ours"], hq["official"], hq["sd"]
    assert type(sd).__name__ == "OrderedDict" and len(sd) == OFFICIAL_KEYS
    assert info.variant == VARIANT and info.family == "hq_sam" and info.container == "state_dict"
    assert info.num_tensors == OFFICIAL_KEYS
    assert ours.variant == VARIANT and ours.weights_sha256 == info.sha256
    ref, got = official.state_dict(), ours.state_dict()
    assert list(got) == list(ref) == list(sd)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    # the TinyViT gotcha: the registry builder caches `ab` at construction; load_state_dict leaves it
    # stale; eval() after loading re-caches it from the loaded attention biases
    assert hq["attn"] and len(hq["stale"]) == len(hq["attn"])
    assert all(torch.equal(m.ab, m.attention_biases[:, m.attention_bias_idxs]) for m in hq["attn"])


# ---- 2. export + fp32 gate ---------------------------------------------------------------------------
def test_export_passes_fp32_check(hq, photos):
    report = run_check(hq["out"], sam=hq["ours"], images={"chelsea": photos["chelsea"]},
                       options=CheckOptions(precision="fp32", threads=2))
    print("\n" + report.table())
    assert report.precision == "fp32"
    assert report.passed, [f"{g.section}.{g.name}={g.value}" for g in report.failures]
    assert {g.section for g in report.gates} == {"encoder", "decoder", "end_to_end"}
    assert report.reference_logit_median_abs > 1.0  # the IoU gates are binding, not advisory
    assert not report.notes, report.notes


# ---- 3. Predictor on ONNX vs the oracle SamPredictor ---------------------------------------------------
CASES = {  # prompt kinds per image (mask kinds feed back the previous prompt's oracle logits)
    "chelsea": ["clicks_neg", "box", "box_click", "mask_input", "no_prompt", "mask_only"],
    "big_1031x1537": ["click", "box_click", "mask_input"],
    "row_1x300": ["clicks_neg", "mask_only"],
    "col_300x1": ["box", "no_prompt"],
    "odd_333x517": ["click", "mask_input", "no_prompt"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_predictor_matches_official_predictor(predictors, chelsea, test_images, name):
    ours, official, counts = predictors
    img = test_images[name]
    h, w = img.shape[:2]
    if name == "chelsea":  # both encoders already ran (fixture `chelsea`)
        feats, (f_ref, i_ref) = chelsea
        assert rel_l2(feats[ENCODER_OUTPUT], f_ref) <= 1e-5
        dec = official.model.mask_decoder  # F_hq as the official MaskDecoderHQ.forward computes it
        with torch.no_grad():
            hq_ref = dec.embedding_encoder(f_ref) + dec.compress_vit_feat(i_ref[0].permute(0, 3, 1, 2))
        assert rel_l2(feats[HQ_FEATURES], hq_ref) <= 1e-5
    else:  # the chelsea features on both sides (each side's own encoder: the frame below is this image's)
        feats, (f_ref, i_ref) = chelsea
    _oracle_state(official, f_ref, i_ref, (h, w))
    for p in ours.values():
        p.set_image_embedding(feats, (h, w))
        assert p.original_size == tuple(official.original_size) == (h, w)
        assert p.input_size == tuple(official.input_size)
    suite = prompt_suite(h, w)
    runs0, masks0 = counts["ours"]["runs"], counts["oracle"]["predict_masks"]
    last_kw, prev = None, None
    for case in CASES[name]:
        if case == "mask_input":  # the previous prompt again, with the oracle's logits fed back
            kw = dict(last_kw, mask_input=prev)
        elif case == "mask_only":
            kw = dict(mask_input=prev)
        elif case == "no_prompt":
            kw = {}
        else:
            kw = last_kw = suite[case]
        ref = _all_modes(ours, official, kw, h, w, f"{name} {case}")
        if case not in ("no_prompt", "mask_only"):
            prev = ref[2]  # [1, 256, 256] low-res logits (SAM token + HQ token)
        elif prev is None:
            prev = ref[2]
    # one decoder run per prompt on each side, shared by the four modes
    assert counts["ours"]["runs"] - runs0 <= len(CASES[name])
    assert counts["oracle"]["predict_masks"] - masks0 <= len(CASES[name])
    assert ours[False].no_points_ok  # no prompt / mask only decode N = 0 points, like the oracle
    print(f"\n{name}: Predictor vs SamPredictor so far {MEASURED}")


def test_predict_batch_one_mask_per_prompt(predictors, chelsea, test_images):
    """K boxes at once: [K, 1, H, W] in both multimask settings, equal to the oracle's batched
    predict_torch."""
    ours, official, _ = predictors
    img = test_images["odd_333x517"]
    h, w = img.shape[:2]
    feats, (f_ref, i_ref) = chelsea
    _oracle_state(official, f_ref, i_ref, (h, w))
    boxes = np.array([[20.0, 30.0, 300.0, 250.0], [200.0, 100.0, 517.0, 333.0]])
    t_boxes = torch.as_tensor(official.transform.apply_boxes(boxes, (h, w)), dtype=torch.float)
    for mm, hq in MODES:
        p = ours[hq]
        p.set_image_embedding(feats, (h, w))
        masks, scores, low = p.predict_batch(boxes=boxes, multimask_output=mm)
        assert masks.shape == (2, 1, h, w) and scores.shape == (2, 1) and low.shape == (2, 1, 256, 256)
        rm, rs, rl = official.predict_torch(None, None, t_boxes, multimask_output=mm, hq_token_only=hq)
        for k in range(2):
            assert_same((masks[k], scores[k], low[k]), (rm[k].numpy(), rs[k].numpy(), rl[k].numpy()),
                        f"predict_batch box {k} multimask={mm} hq_token_only={hq}")
    empty = ours[False].predict_batch(boxes=np.zeros((0, 4)), multimask_output=True)
    assert empty[0].shape == (0, 1, h, w) and empty[1].shape == (0, 1)


# ---- 4. both encoder outputs through get_image_features / set_image_embedding ----------------------
def test_image_features_round_trip_on_a_second_predictor(hq, predictors, chelsea, test_images):
    ours = predictors[0][False]
    img = test_images["odd_333x517"]
    h, w = img.shape[:2]
    feats = chelsea[0]
    ours.set_image_embedding(feats, (h, w))
    got = ours.get_image_features()
    assert set(got) == set(FEATURES)
    assert got[ENCODER_OUTPUT].shape == (1, 256, 64, 64)
    assert got[HQ_FEATURES].shape == (1, 32, 256, 256)
    assert np.array_equal(ours.get_image_embedding(), got[ENCODER_OUTPUT])
    assert not got[HQ_FEATURES].flags.writeable

    second = Predictor(hq["out"], threads=2)  # its own sessions (no memo)
    try:
        second.set_image_embedding(got, (h, w))
        assert second.input_size == ours.input_size
        kw = prompt_suite(h, w)["box_click"]
        for mm in (True, False):
            a, b = ours.predict(**kw, multimask_output=mm), second.predict(**kw, multimask_output=mm)
            assert np.array_equal(a[0], b[0]) and a[0].shape == (1, h, w)
            np.testing.assert_allclose(a[1], b[1], atol=1e-6)
            np.testing.assert_allclose(a[2], b[2], atol=1e-4)
        # the HQ features are consumed: zeroing them changes the answer
        zeroed = {**got, HQ_FEATURES: np.zeros_like(got[HQ_FEATURES])}
        second.set_image_embedding(zeroed, (h, w))
        c = second.predict(**kw, multimask_output=False)
        assert np.abs(c[2] - a[2]).max() > 1e-2

        for bad in (got[ENCODER_OUTPUT], {ENCODER_OUTPUT: got[ENCODER_OUTPUT]}):
            with pytest.raises(InputError) as exc:
                second.set_image_embedding(bad, (h, w))
            assert all(n in str(exc.value) for n in FEATURES), str(exc.value)
        with pytest.raises(InputError, match=HQ_FEATURES):  # a transposed feature is refused
            narrow = got[HQ_FEATURES].transpose(0, 1, 3, 2)[:, :, :, :128]
            second.set_image_embedding({**got, HQ_FEATURES: narrow}, (h, w))
    finally:
        second.close()


# ---- 5. the contract of the graphs -----------------------------------------------------------------
def test_contract_names_the_two_encoder_outputs(hq):
    import onnx

    out = hq["out"]
    manifest = read_manifest(out)
    from_manifest = manifest_contract(manifest)
    enc, enc_role = read_onnx_contract(str(graph_path(out, manifest, "encoder")))
    dec, dec_role = read_onnx_contract(str(graph_path(out, manifest, "decoder")))
    assert (enc_role, dec_role) == ("encoder", "decoder")
    for c in (from_manifest, enc, dec):
        assert c.contract_version == 2 and c.family == "hq_sam" and c.variant == VARIANT
        assert c.encoder.output_names == FEATURES
        assert tuple(c.decoder.embedding_inputs) == FEATURES
        assert c.decoder_io[0][:2] == FEATURES
        assert c.embedding_shape(HQ_FEATURES) == (32, 256, 256)
        assert c.decoder.hq_token == 4 and c.decoder.num_mask_tokens == 5
        assert c.model_id == from_manifest.model_id
    # the graphs themselves agree with their contract
    e = onnx.load(str(graph_path(out, manifest, "encoder")), load_external_data=False).graph
    d = onnx.load(str(graph_path(out, manifest, "decoder")), load_external_data=False).graph
    assert tuple(o.name for o in e.output) == FEATURES
    dims = [d_.dim_value for d_ in e.output[1].type.tensor_type.shape.dim]
    assert dims == [1, 32, 256, 256]
    assert tuple(i.name for i in d.input)[:2] == FEATURES
    assert tuple(i.name for i in d.input) == dec.decoder_io[0]
    assert tuple(o.name for o in d.output) == (DECODER_IOU, DECODER_LOW_RES_MASKS)

