"""Sam.encode (the encoder.onnx contract: 0..255 input padded with the pixel mean, normalised inside)
against the official image encoder fed the way SamPredictor feeds it (normalise, then zero-pad), on a
real photograph, for every variant with a test oracle. The official model is saved in the official
file layout and loaded by OUR loader with variant="auto".

Tolerance: max |ours - official| <= 1e-4 x max(1, max |official|) (``rel_err``), float32.
ViT-B costs one official + one of our encoder passes (about 2 x 5 s).
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from fixtures_models import contract_encoder_input, official_encoder_input, rel_err

TOL = 1e-4


# vit_b's encoder forward (official + ours at 1024, ~30 s here) is opt-in: the SlimSAM variants run the same
# ImageEncoderViT code (pruned ViT-B), and vit_b's keys/shapes are checked strictly on meta tensors.
SLOW = os.environ.get("SAMDEPLOY_SLOW") == "1"


@pytest.mark.parametrize(
    "variant",
    ["mobile_sam", "slimsam_77", "slimsam_50", pytest.param("vit_b", marks=[
        pytest.mark.slow, pytest.mark.skipif(not SLOW, reason="ViT-B encoder vs official: run with SAMDEPLOY_SLOW=1")])],
)
def test_encoder_matches_official(variant, model_pair_factory, embedding_pair_factory):
    official, ours, info = model_pair_factory(variant)
    assert info.variant == variant  # detected from keys and shapes alone
    ref, got = embedding_pair_factory(variant)
    assert got.shape == (1, 256, 64, 64)
    assert rel_err(got, ref) <= TOL
    assert float(ref.std()) > 0.1  # a meaningful, non-constant embedding


def test_contract_input_equals_official_preprocessing(photo_resized, model_pair_factory):
    """Padding the 0..255 image with the pixel mean and normalising inside the graph gives exactly the
    official normalise-then-zero-pad input."""
    official, ours, _ = model_pair_factory("mobile_sam")
    x = contract_encoder_input(photo_resized)
    normalised = (x - ours.pixel_mean) / ours.pixel_std
    ref = official_encoder_input(official, photo_resized)
    assert torch.allclose(normalised, ref, atol=1e-6)
    assert photo_resized.shape[:2] == (681, 1024)  # non-square: the padding is exercised
    assert float(normalised[..., 700:, :].abs().max()) == 0.0


def test_loaded_model_metadata(model_pair_factory, official_checkpoint_factory):
    path, _ = official_checkpoint_factory("slimsam_77")
    _, ours, info = model_pair_factory("slimsam_77")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.sha256 == sha and ours.weights_sha256 == sha
    assert info.family == "slimsam" and info.container == "state_dict"
    assert info.num_tensors == 314
    c = ours.contract
    assert (c.family, c.variant, c.weights_sha256) == ("slimsam", "slimsam_77", sha)
    assert c.model_id == f"slimsam/slimsam_77@{sha}"
    assert c.decoder.always_multimask is False and c.preprocess.input_size == 1024
    assert not ours.training


def test_random_model_equals_seeded_official(model_pair_factory):
    """random_model(variant, seed) and the fixture's seeded official model hold identical weights
    (both draw every entry from init.random_tensor(key, seed)), so export/check tests can use
    random_model and still have an official oracle."""
    from samdeploy.models.build import random_model

    official, _, _ = model_pair_factory("slimsam_77")
    ours = random_model("slimsam_77", seed=0)
    ref = official.state_dict()
    got = ours.state_dict()
    assert list(got) == list(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert ours.weights_sha256 == "random:slimsam_77:seed=0"
    from samdeploy.models.init import random_tensor

    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(random_tensor(key, ref[key], seed=1), ref[key])  # the seed matters


def test_seeded_weights_are_not_trivial(model_pair_factory):
    """The parameters the official init leaves trivial are randomised, so the parity tests use them."""
    official, _, _ = model_pair_factory("mobile_sam")
    sd = official.state_dict()
    for key in (
        "image_encoder.layers.1.blocks.0.attn.attention_biases",
        "image_encoder.layers.1.blocks.0.attn.norm.weight",
        "image_encoder.patch_embed.seq.0.bn.running_var",
        "image_encoder.patch_embed.seq.0.bn.running_mean",
        "image_encoder.neck.1.weight",
        "mask_decoder.output_upscaling.1.bias",
    ):
        t = sd[key]
        assert t.std() > 0.01, key
        assert not torch.all(t == 1) and not torch.all(t == 0), key
    slim = model_pair_factory("slimsam_77")[0].state_dict()
    for key in ("image_encoder.pos_embed", "image_encoder.blocks.2.attn.rel_pos_h", "image_encoder.blocks.0.attn.rel_pos_w"):
        assert slim[key].std() > 0.05, key


def test_small_vit_batch_matches_official_per_image():
    """A small ViT config (cheap) against the official ImageEncoderViT with a batch of 2: windowed
    and global blocks, explicit mlp_dim != 4 x embed_dim, and batch handling in every reshape."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT as OfficialViT

    from samdeploy.models.image_encoder_vit import ImageEncoderViT
    from samdeploy.models.init import randomize_

    official = OfficialViT(
        depth=2, embed_dim=48, img_size=1024, mlp_ratio=40 / 48, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=14,
        out_chans=256,
    ).eval()
    ours = ImageEncoderViT(embed_dim=48, depth=2, num_heads=2, mlp_dim=40, global_attn_indexes=(1,)).eval()
    randomize_(official, seed=5)
    ours.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = official(x)
        got = ours(x)
        single = ours(x[1:])
    assert rel_err(got, ref) <= TOL
    assert rel_err(got[1:], single) <= 1e-5
