"""EfficientSAM (yformer) ViT-T/ViT-S end to end. There is no Python package of the official code, so
the oracles are (a) the key/shape list written below from the official code's facts (models.md 3.8:
``build_efficient_sam``, ``ImageEncoderViT``, ``PromptEncoder``, ``MaskDecoder``, ``MLPBlock``,
``TwoWayTransformer``), (b) hand computations of single blocks, and (c) a PyTorch pipeline written here
with the official model's own semantics (``EfficientSam.preprocess``' bilinear stretch, ``get_rescaled_pts``,
the 6-point pad, bicubic output resize) around our modules' ``decode_reference`` (the official arithmetic).

One seeded ViT-T model (realistic decoder scale) is saved as ``{"model": state_dict}`` (the official
file layout), loaded with ``--model auto``, exported, checked with ``samdeploy check`` at fp32, and the
torch-free ``Predictor`` is compared with the PyTorch pipeline on photographs at awkward sizes. ViT-S is
only built on meta tensors (keys, shapes, detection).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samdeploy.check.parity import CheckOptions, run_check
from samdeploy.errors import CheckpointError, InputError
from samdeploy.export.exporter import ExportOptions, export_model
from samdeploy.export.source import checkpoint_source, resolved
from samdeploy.models.build import build_model
from samdeploy.models.checkpoint import detect_variant, load_checkpoint
from samdeploy.models.efficient_sam import bicubic_resize_matrix, random_efficient_sam
from samdeploy.models.registry import REGISTRY
from samdeploy.models.variants import contract_for, get_variant
from samdeploy.runtime import Predictor
from samdeploy.runtime.transforms import preprocess_image, resize_masks_direct

VARIANT = "efficient_sam_vitt"
SEED = 5
IOU_MIN = 0.99
SCORE_TOL = 1e-4
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # EfficientSam(pixel_mean=...) on 0..1
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MEASURED: dict[str, float] = {"iou_min": 1.0, "score_max_abs": 0.0, "low_res_max_abs": 0.0}


# ---- (a) the official key/shape list ------------------------------------------------------------------
def official_keys(c: int) -> dict[str, tuple[int, ...]]:
    """state_dict of ``build_efficient_sam(c, heads)`` (patch 16, depth 12, mlp_ratio 4, neck [256, 256],
    decoder dim 256, MLP 2048, upscaling [64, 32], 3 multimask outputs, iou_head_depth 3 - 1 = 2)."""
    d = 256
    k: dict[str, tuple[int, ...]] = {}
    e = "image_encoder."
    k[e + "pos_embed"] = (1, (224 // 16) ** 2 + 1, c)  # pretrained at 224 with a cls token
    k[e + "patch_embed.proj.weight"], k[e + "patch_embed.proj.bias"] = (c, 3, 16, 16), (c,)
    for i in range(12):
        b = f"{e}blocks.{i}."
        for name, shape in (("norm1.weight", (c,)), ("norm1.bias", (c,)), ("attn.qkv.weight", (3 * c, c)),
                            ("attn.qkv.bias", (3 * c,)), ("attn.proj.weight", (c, c)), ("attn.proj.bias", (c,)),
                            ("norm2.weight", (c,)), ("norm2.bias", (c,)), ("mlp.fc1.weight", (4 * c, c)),
                            ("mlp.fc1.bias", (4 * c,)), ("mlp.fc2.weight", (c, 4 * c)), ("mlp.fc2.bias", (c,))):
            k[b + name] = shape
    k[e + "neck.0.weight"] = (d, c, 1, 1)  # Conv1x1, no bias
    k[e + "neck.1.weight"], k[e + "neck.1.bias"] = (d,), (d,)
    k[e + "neck.2.weight"] = (d, d, 3, 3)  # Conv3x3, no bias
    k[e + "neck.3.weight"], k[e + "neck.3.bias"] = (d,), (d,)
    p = "prompt_encoder."
    k[p + "pe_layer.positional_encoding_gaussian_matrix"] = (2, d // 2)
    for name in ("invalid_points", "point_embeddings", "bbox_top_left_embeddings", "bbox_bottom_right_embeddings"):
        k[f"{p}{name}.weight"] = (1, d)
    m = "mask_decoder."

    def attention(prefix: str, internal: int) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            k[f"{prefix}.{proj}.weight"], k[f"{prefix}.{proj}.bias"] = (internal, d), (internal,)
        k[f"{prefix}.out_proj.weight"], k[f"{prefix}.out_proj.bias"] = (d, internal), (d,)

    for i in range(2):
        t = f"{m}transformer.layers.{i}."
        attention(t + "self_attn", d)
        attention(t + "cross_attn_token_to_image", d // 2)
        attention(t + "cross_attn_image_to_token", d // 2)
        for n in (1, 2, 3, 4):
            k[f"{t}norm{n}.weight"], k[f"{t}norm{n}.bias"] = (d,), (d,)
        k[t + "mlp.layers.0.0.weight"], k[t + "mlp.layers.0.0.bias"] = (2048, d), (2048,)  # MLPBlock(num_layers=1)
        k[t + "mlp.fc.weight"], k[t + "mlp.fc.bias"] = (d, 2048), (d,)
    attention(m + "transformer.final_attn_token_to_image", d // 2)
    k[m + "transformer.norm_final_attn.weight"], k[m + "transformer.norm_final_attn.bias"] = (d,), (d,)
    k[m + "iou_token.weight"], k[m + "mask_tokens.weight"] = (1, d), (4, d)
    u = m + "final_output_upscaling_layers."
    k[u + "0.0.weight"], k[u + "0.0.bias"] = (d, 64, 2, 2), (64,)  # ConvTranspose2d 256 -> 64
    k[u + "0.1.weight"], k[u + "0.1.bias"] = (64,), (64,)  # GroupNorm(1, 64)
    k[u + "1.0.weight"], k[u + "1.0.bias"] = (64, 32, 2, 2), (32,)  # ConvTranspose2d 64 -> 32 (then Identity)

    def mlp(prefix: str, out: int) -> None:  # MLPBlock(num_layers=2): layers.{0,1} = Linear+GELU, fc
        for j in (0, 1):
            k[f"{prefix}.layers.{j}.0.weight"], k[f"{prefix}.layers.{j}.0.bias"] = (d, d), (d,)
        k[f"{prefix}.fc.weight"], k[f"{prefix}.fc.bias"] = (out, d), (out,)

    for i in range(4):
        mlp(f"{m}output_hypernetworks_mlps.{i}", 32)
    mlp(m + "iou_prediction_head", 4)
    return k


@pytest.mark.parametrize("variant,dim,params", [("efficient_sam_vitt", 192, 10.22e6), ("efficient_sam_vits", 384, 26.41e6)])
def test_state_dict_is_the_official_key_and_shape_list(variant, dim, params):
    sd = build_model(variant, device="meta").state_dict()
    want = official_keys(dim)
    assert len(want) == len(sd) == 278  # models.md 3.8
    assert {n: tuple(t.shape) for n, t in sd.items()} == want
    assert abs(sum(t.numel() for t in sd.values()) - params) < 0.005e6
    assert get_variant(variant).encoder_args["num_heads"] == dim // 64  # ViT-T (192, 3), ViT-S (384, 6)
    det = detect_variant(sd)  # --model auto on meta tensors (shapes only)
    assert (det.family, det.variant, det.ambiguous_with) == ("efficient_sam", variant, ())
    enc = detect_variant({n[len("image_encoder."):]: t for n, t in sd.items() if n.startswith("image_encoder.")})
    assert enc.family == "efficient_sam" and enc.variant is None and "image encoder only" in enc.description


def test_registry_and_contract():
    for name, size in (("efficient_sam_vitt", 41_000_290), ("efficient_sam_vits", None)):
        c = REGISTRY[name]
        assert (c.variant, c.family, c.license, c.size) == (name, "efficient_sam", "Apache-2.0", size)
    assert REGISTRY["efficient_sam_vitt"].url.endswith("/weights/efficient_sam_vitt.pt")
    k = contract_for(VARIANT, "h")
    pre, pr, dec = k.preprocess, k.prompts, k.decoder
    assert (pre.resize, pre.interpolation, pre.pixel_scale, pre.input_size) == ("stretch", "bilinear_float", 1.0, 1024)
    assert (pr.max_decoder_points, pr.pad_point_when_no_box, k.frame_size) == (6, False, 1024)
    assert (dec.mask_input, dec.postprocess, dec.mask_interpolation, dec.score) == (False, "direct", "bicubic", "iou_head")
    sam = contract_for("vit_b", "h")  # the defaults other families keep
    assert (sam.prompts.max_decoder_points, sam.decoder.mask_interpolation) == (None, "bilinear")


# ---- the seeded model in the official file layout --------------------------------------------------------
@pytest.fixture(scope="module")
def vitt(tmp_path_factory):
    """(checkpoint path, seeded model, model loaded from the file with --model auto, CheckpointInfo)."""
    torch.set_num_threads(2)
    path = tmp_path_factory.mktemp("efficient_sam") / "efficient_sam_vitt.pt"
    model = random_efficient_sam(VARIANT, seed=SEED)
    torch.save({"model": model.state_dict()}, path)  # build_efficient_sam loads state_dict["model"]
    ours, info = load_checkpoint(path, "auto")
    return path, model, ours, info


def test_official_file_loads_strictly_with_auto_detection(vitt):
    path, model, ours, info = vitt
    raw = torch.load(path, weights_only=True)
    assert list(raw) == ["model"] and len(raw["model"]) == 278
    assert (info.variant, info.family, info.container, info.num_tensors) == (VARIANT, "efficient_sam", "dict['model']", 278)
    assert ours.variant == VARIANT and ours.weights_sha256 == info.sha256
    ref, got = model.state_dict(), ours.state_dict()
    assert list(got) == list(ref) and all(torch.equal(got[n], ref[n]) for n in ref)
    with pytest.raises(CheckpointError, match="efficient_sam_vitt"):  # a ViT-T file named as ViT-S
        load_checkpoint(path, "efficient_sam_vits")
    broken = {n: t for n, t in raw["model"].items() if not n.startswith("mask_decoder.iou_prediction_head.")}
    det = detect_variant(broken)  # a file missing keys is recognised as the family but matches no variant
    assert det.family == "efficient_sam" and det.variant is None and "match none" in det.description


# ---- (b) block-level checks against hand computations ------------------------------------------------------
def _hand_tokens(pe, coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The official prompt path by hand (NumPy float64): coordinates < 0 -> -1, pad/truncate to 6 with
    (-1, -1, -1), +0.5, / 1024, Fourier features, + the label's table (label 0: nothing)."""
    g = pe.pe_layer.positional_encoding_gaussian_matrix.double().numpy()
    tables = {-1: pe.invalid_points, 1: pe.point_embeddings, 2: pe.bbox_top_left_embeddings,
              3: pe.bbox_bottom_right_embeddings}
    c = np.where(coords >= 0, coords, -1.0)[:6]
    lab = labels[:6]
    c = np.concatenate([c, np.full((6 - len(c), 2), -1.0)])
    lab = np.concatenate([lab, np.full(6 - len(lab), -1.0)])
    f = 2 * np.pi * ((2 * (c + 0.5) / 1024.0 - 1) @ g)
    out = np.concatenate([np.sin(f), np.cos(f)], axis=-1)
    for i, v in enumerate(lab):
        if int(v) in tables:
            out[i] += tables[int(v)].weight.detach().double().numpy()[0]
    return out


def test_prompt_tokens_match_hand_computation(vitt):
    pe = vitt[2].prompt_encoder
    cases = {
        "click_neg": (np.array([[500.0, 300.0], [120.5, 900.0]]), np.array([1.0, 0.0])),
        "box_and_pad": (np.array([[10.0, 20.0], [800.0, 700.0], [0.0, 0.0]]), np.array([2.0, 3.0, -1.0])),
        "outside_negative": (np.array([[-3.0, 40.0], [50.0, -0.5]]), np.array([1.0, 0.0])),
        "truncated_8": (np.random.default_rng(0).uniform(0, 1024, (8, 2)), np.array([1.0, 0, 1, 0, 1, 0, 2, 3])),
        "none": (np.zeros((0, 2)), np.zeros(0)),
    }
    for name, (c, lab) in cases.items():
        tc, tl = torch.tensor(c[None], dtype=torch.float32), torch.tensor(lab[None], dtype=torch.float32)
        with torch.no_grad():
            got = pe.embed_points(*pe.fit_points(tc, tl, torch.zeros(1, 1, 1))).double().numpy()[0]
        want = _hand_tokens(pe, c, lab)
        assert got.shape == (6, 256), name
        np.testing.assert_allclose(got, want, atol=2e-4, err_msg=name)  # float32 sin/cos of ~1e2 radians
    # label 0 carries no embedding: a negative click is its positional encoding alone, and differs
    # from a positive one by exactly point_embeddings
    two = torch.tensor([[[300.0, 300.0], [300.0, 300.0]]]), torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        t = pe.embed_points(*pe.fit_points(*two, torch.zeros(1, 1, 1)))[0]
        pure = pe.pe_layer.forward_with_coords(torch.tensor([[300.5, 300.5]]), (1024, 1024))[0]
    torch.testing.assert_close(t[0], pure)
    torch.testing.assert_close(t[1] - t[0], pe.point_embeddings.weight[0])


def test_pos_embed_is_bicubic_interpolated(vitt):
    enc = vitt[2].image_encoder
    with torch.no_grad():
        grid = enc.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)  # cls row dropped
        want = F.interpolate(grid, size=(64, 64), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        got = enc.abs_pos()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    m = bicubic_resize_matrix(14, 64)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)  # interpolation weights
    assert (m < 0).any()  # a cubic kernel (bilinear weights are never negative)


def test_decoder_block_semantics(vitt):
    """The two-way block keeps the self-attention residual in layer 0 and, in later layers, adds the query PE
    to the residual stream itself; mask_input has no effect; decode == the official arithmetic."""
    model = vitt[2]
    dec, pe = model.mask_decoder, model.prompt_encoder
    g = torch.Generator().manual_seed(1)
    q, keys, qpe = torch.randn(1, 11, 256, generator=g), torch.randn(1, 4096, 256, generator=g), torch.randn(1, 11, 256, generator=g)
    kpe = pe.get_dense_pe().flatten(2).transpose(1, 2)
    l0, l1 = dec.transformer.layers
    with torch.no_grad():
        out0, _ = l0(q, keys, qpe, kpe)
        a = l0.self_attn(q, q, q)
        ref_q1 = l0.norm1(q + a)  # residual kept (SAM's first layer drops it)
        ref = l0.norm2(ref_q1 + l0.cross_attn_token_to_image(ref_q1 + qpe, keys + kpe, keys))
        ref = l0.norm3(ref + l0.mlp(ref))
        torch.testing.assert_close(out0, ref)
        l1_out = l1(q, keys, qpe, kpe)
        l1.skip_first_layer_pe = True
        try:
            l1_shifted = l1(q + qpe, keys, qpe, kpe)  # PE added to the queries, then the same block
        finally:
            l1.skip_first_layer_pe = False
        torch.testing.assert_close(l1_out[0], l1_shifted[0])
        emb = torch.randn(1, 256, 64, 64, generator=g)
        for n in (0, 4, 9):  # padded, padded, truncated
            pc = torch.rand(1, n, 2, generator=g) * 1100 - 40  # some coordinates < 0
            pl = torch.randint(-1, 4, (1, n), generator=g).float()
            got = model.decode(emb, pc, pl, torch.randn(1, 1, 256, 256, generator=g), torch.ones(1))
            ref = model.decode_reference(emb, pc, pl)
            if n == 4:  # mask_input / has_mask_input do not change anything
                nomask = model.decode(emb, pc, pl, torch.zeros(1, 1, 256, 256), torch.zeros(1))
                torch.testing.assert_close(got, nomask, rtol=0, atol=0)
            torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got[1], ref[1], atol=1e-4, rtol=1e-5)
    assert isinstance(dec.final_output_upscaling_layers[0][1], torch.nn.GroupNorm)
    assert dec.final_output_upscaling_layers[0][1].num_groups == 1  # over C, H, W (SAM: LN2d over C)
    assert isinstance(dec.iou_prediction_head.layers[0][1], torch.nn.GELU)


# ---- (c) the PyTorch pipeline with the official semantics ---------------------------------------------------
def torch_stretch(image: np.ndarray) -> torch.Tensor:
    """EfficientSam.preprocess on ToTensor(image): bilinear (no antialias) to 1024x1024, ImageNet."""
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    if x.shape[-2:] != (1024, 1024):
        x = F.interpolate(x, (1024, 1024), mode="bilinear")
    return (x - MEAN) / STD


def torch_predict(model, image, emb=None, point_coords=None, point_labels=None, box=None, multimask_output=True):
    """Official-semantics prediction: points (clicks, then box corners 2/3) rescaled by get_rescaled_pts,
    decoded with the official arithmetic, tokens 1..3 (multimask) or 0, logits resized BICUBIC to (H, W),
    masks = logits >= 0. Returns (masks, scores, low-res logits, embedding)."""
    h, w = image.shape[:2]
    with torch.no_grad():
        if emb is None:
            emb = model.image_encoder(torch_stretch(image))
        pts = [] if point_coords is None else [np.asarray(point_coords, np.float64)]
        labs = [] if point_labels is None else [np.asarray(point_labels, np.float64)]
        if box is not None:
            pts.append(np.asarray(box, np.float64).reshape(2, 2))
            labs.append(np.array([2.0, 3.0]))
        p = torch.tensor(np.concatenate(pts) if pts else np.zeros((0, 2)), dtype=torch.float32)[None]
        lab = torch.tensor(np.concatenate(labs) if labs else np.zeros(0), dtype=torch.float32)[None]
        p = torch.stack([torch.where(p[..., 0] >= 0, p[..., 0] * 1024 / w, -1.0),
                         torch.where(p[..., 1] >= 0, p[..., 1] * 1024 / h, -1.0)], dim=-1)
        iou, low = model.decode_reference(emb, p, lab)
        sel = [1, 2, 3] if multimask_output else [0]
        up = F.interpolate(low[:, sel], (h, w), mode="bicubic")
    return (up[0] >= 0).numpy(), iou[0, sel].numpy(), low[0, sel].numpy(), emb


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def rel_l2(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def assert_same(ours, ref, what: str) -> None:
    m1, s1, l1 = ours
    m2, s2, l2 = ref[:3]
    assert m1.shape == m2.shape and m1.dtype == m2.dtype == np.bool_, what
    assert s1.shape == s2.shape and l1.shape == l2.shape, what
    ious = [iou(a, b) for a, b in zip(m1, m2)]
    score, low = float(np.abs(s1 - s2).max()), float(np.abs(l1 - l2).max())
    MEASURED["iou_min"] = min(MEASURED["iou_min"], min(ious))
    MEASURED["score_max_abs"] = max(MEASURED["score_max_abs"], score)
    MEASURED["low_res_max_abs"] = max(MEASURED["low_res_max_abs"], low)
    assert min(ious) >= IOU_MIN, f"{what}: IoU {ious}"
    assert score <= SCORE_TOL, f"{what}: scores {s1} vs {s2}"
    assert low <= 1e-3 * max(1.0, float(np.abs(l2).max())), f"{what}: low-res logits differ by {low}"


@pytest.fixture(scope="module")
def test_images(photos):
    from PIL import Image

    coffee, astro = photos["coffee"], photos["astronaut"]
    big = np.asarray(Image.fromarray(coffee).resize((1537, 1031), Image.BILINEAR))  # > 1024: stretch downscales
    return {
        "chelsea": photos["chelsea"],  # 300x451
        "big_1031x1537": np.ascontiguousarray(big),
        "row_1x300": np.ascontiguousarray(astro[200:201, 100:400]),
        "col_300x1": np.ascontiguousarray(astro[100:400, 260:261]),
        "odd_333x517": np.ascontiguousarray(np.concatenate([coffee, coffee[:, :117]], axis=1)[:333, :517]),
    }


def test_stretch_preprocessing_matches_official(test_images, photos):
    """Our 0..255 stretched input, normalised as the graph does, equals EfficientSam.preprocess(ToTensor(img))
    at every size (incl. a 1024x1024 image, where the official code skips the resize)."""
    pre = contract_for(VARIANT, "h").preprocess
    mean, std = np.array(pre.pixel_mean, np.float32).reshape(1, 3, 1, 1), np.array(pre.pixel_std, np.float32).reshape(1, 3, 1, 1)
    square = np.ascontiguousarray(np.tile(photos["astronaut"], (2, 2, 1)))  # 1024x1024
    for name, img in {**test_images, "square_1024": square}.items():
        x, hw = preprocess_image(img, pre)
        assert hw == (1024, 1024) and x.shape == (1, 3, 1024, 1024), name
        np.testing.assert_allclose((x / 255.0 - mean) / std, torch_stretch(img).numpy(), atol=3e-5, err_msg=name)


def test_mask_resize_is_bicubic():
    g = torch.Generator().manual_seed(2)
    low = F.avg_pool2d(torch.randn(1, 3, 264, 264, generator=g), 9, 1) * 40  # smooth logits, +-20
    for hw in ((300, 451), (1, 300), (300, 1), (1031, 1537)):
        want = F.interpolate(low, hw, mode="bicubic")[0].numpy()
        got = resize_masks_direct(low[0].numpy(), hw, None, "bicubic")
        assert np.abs(got - want).max() <= 1e-3, hw
        assert min(iou(a, b) for a, b in zip(resize_masks_direct(low[0].numpy(), hw, 0.0, "bicubic"), want >= 0)) >= 0.999
        bilinear = F.interpolate(low, hw, mode="bilinear")[0].numpy()
        assert np.abs(got - bilinear).max() > 1e-2  # the two kernels really differ


# ---- export + samdeploy check ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vitt_export(tmp_path_factory, vitt):
    path, _, ours, _ = vitt
    out = tmp_path_factory.mktemp("efficient_sam_export") / "export"
    export_model(ours, out, resolved(checkpoint_source(path, "auto"), ours), ExportOptions())
    return out


def test_export_passes_samdeploy_check_fp32(vitt, vitt_export, test_images):
    import onnx

    from samdeploy.export.manifest import manifest_contract, read_manifest

    contract = manifest_contract(read_manifest(vitt_export))
    assert contract.variant == VARIANT and contract.decoder.accepts_no_points and not contract.decoder.mask_input
    ops = {n.op_type for n in onnx.load(str(vitt_export / "encoder.onnx")).graph.node}
    assert "Resize" not in ops  # bicubic pos-embed interpolation folded into matrices
    report = run_check(vitt_export, sam=vitt[2], images={"chelsea": test_images["chelsea"]}, options=CheckOptions(threads=2))
    print("\n" + report.table())
    assert report.precision == "fp32"
    assert report.passed, [f"{g.section}.{g.name}={g.value}" for g in report.failures]
    assert report.reference_logit_median_abs > 1.0  # IoU gates are binding


# ---- Predictor (ONNX, no torch) vs the PyTorch pipeline --------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(vitt_export):
    p = Predictor(vitt_export, threads=2)
    yield p
    p.close()


FULL_PATH = "big_1031x1537"  # > 1024: the stretch downscales; both real encoders run on it


@pytest.fixture(scope="module")
def full_path(vitt, predictor, test_images):
    """Both encoders on FULL_PATH: (our ONNX embedding via Predictor.set_image, the PyTorch pipeline's)."""
    img = test_images[FULL_PATH]
    predictor.set_image(img)
    with torch.no_grad():
        ref = vitt[2].image_encoder(torch_stretch(img))
    return predictor.get_image_embedding().copy(), ref


def prompt_suite(h: int, w: int) -> dict[str, dict]:
    def pt(fx, fy):
        return [min(w - 1, fx * w), min(h - 1, fy * h)]

    box = np.array([0.1 * w, 0.15 * h, 0.75 * w, 0.9 * h])
    return {
        "click": {"point_coords": np.array([pt(0.45, 0.5)]), "point_labels": np.array([1])},
        "clicks_neg": {"point_coords": np.array([pt(0.3, 0.4), pt(0.7, 0.6), pt(0.5, 0.2)]), "point_labels": np.array([1, 0, 1])},
        "box": {"box": box},
        "box_clicks4": {"box": box, "point_coords": np.array([pt(0.6, 0.3), pt(0.2, 0.8), pt(0.5, 0.5), pt(0.9, 0.1)]),
                        "point_labels": np.array([0, 1, 1, 0])},  # exactly the 6 decoder points
    }


CASES = {
    "chelsea": [("click", False), ("clicks_neg", True), ("box", False), ("box_clicks4", True)],
    FULL_PATH: [("click", True), ("box_clicks4", False)],
}
OTHER_CASES = {"odd_333x517": [("clicks_neg", True), ("box", False)]}  # else: one case (time budget)


@pytest.mark.parametrize("name", ["chelsea", "big_1031x1537", "row_1x300", "col_300x1", "odd_333x517"])
def test_predictor_matches_pytorch(vitt, predictor, full_path, test_images, name):
    model = vitt[2]
    img = test_images[name]
    h, w = img.shape[:2]
    onnx_emb, torch_emb = full_path
    if name == FULL_PATH:  # each side with its own preprocessing and encoder
        print(f"\n{name} embedding rel L2, ONNX (Predictor) vs the PyTorch pipeline: {rel_l2(onnx_emb, torch_emb.numpy()):.3g}")
        assert rel_l2(onnx_emb, torch_emb.numpy()) <= 1e-5
        predictor.set_image_embedding(onnx_emb, (h, w))
        emb = torch_emb
    else:  # the same embedding on both sides: prompts and post-processing at this size are compared
        predictor.set_image_embedding(onnx_emb, (h, w))
        emb = torch.from_numpy(np.array(onnx_emb))
    assert predictor.original_size == (h, w) and predictor.input_size == (1024, 1024)
    suite = prompt_suite(h, w)
    for case, multimask in CASES.get(name, OTHER_CASES.get(name, [("box_clicks4", True)])):
        got = predictor.predict(**suite[case], multimask_output=multimask)
        ref = torch_predict(model, img, emb, multimask_output=multimask, **suite[case])
        assert got[0].shape == (3 if multimask else 1, h, w)
        assert_same(got, ref, f"{name} {case} multimask={multimask}")
    if name == "chelsea":  # no prompt at all: N = 0 reaches the graph, which pads 6 invalid points
        assert predictor.no_points_ok
        assert_same(predictor.predict(multimask_output=True), torch_predict(model, img, emb), "chelsea no prompt")
    if name == "odd_333x517":
        print(f"\nPredictor vs PyTorch: min mask IoU {MEASURED['iou_min']:.5f}, max |score diff| "
              f"{MEASURED['score_max_abs']:.2g}, max |low-res logit diff| {MEASURED['low_res_max_abs']:.2g}")


def test_predictor_refuses_what_the_decoder_cannot_do(predictor, full_path, test_images):
    img = test_images["chelsea"]
    h, w = img.shape[:2]
    predictor.set_image_embedding(full_path[0], (h, w))
    suite = prompt_suite(h, w)
    with pytest.raises(InputError, match="no mask input"):
        predictor.predict(**suite["click"], mask_input=np.zeros((1, 256, 256), np.float32))
    seven = {"point_coords": np.tile([[10.0, 10.0]], (7, 1)), "point_labels": np.ones(7)}
    with pytest.raises(InputError, match="exceed the 6"):
        predictor.predict(**seven)
    with pytest.raises(InputError, match="exceed the 6"):  # 5 clicks + 2 box corners
        predictor.predict(box=suite["box"]["box"], point_coords=seven["point_coords"][:5], point_labels=np.ones(5))
    with pytest.raises(InputError, match="point_labels"):
        predictor.predict(point_coords=[[10.0, 10.0]], point_labels=[2])
    masks, scores, _ = predictor.predict(point_coords=seven["point_coords"][:6], point_labels=np.ones(6))
    assert masks.shape == (3, h, w) and np.isfinite(scores).all()


def test_decoder_graph_pads_and_truncates(vitt, predictor):
    """decoder.onnx with N = 0 and N = 8 points vs the official arithmetic (pad / truncate to 6)."""
    from samdeploy.contract import decoder_feeds, decoder_results

    emb = np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32)
    for n in (0, 8):
        pc = np.random.default_rng(n).uniform(-10, 1000, (1, n, 2)).astype(np.float32)
        pl = np.ones((1, n), np.float32)
        out = predictor.model.decoder.run(decoder_feeds(emb, pc, pl, np.zeros((1, 1, 256, 256), np.float32),
                                                        np.zeros(1, np.float32)))
        got = decoder_results(out)
        with torch.no_grad():
            ref = vitt[2].decode_reference(torch.from_numpy(emb), torch.from_numpy(pc), torch.from_numpy(pl))
        assert rel_l2(got[1], ref[1].numpy()) <= 1e-4 and np.abs(got[0] - ref[0].numpy()).max() <= 1e-4, n
