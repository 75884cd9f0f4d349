"""Optimization profiles are generated from the contract (+ the ONNX file), consistent across inputs."""

import pytest

from samdeploy.contract import (
    DECODER_HAS_MASK_INPUT, DECODER_MASK_INPUT, DECODER_POINT_COORDS, DECODER_POINT_LABELS, ENCODER_INPUT,
    ENCODER_OUTPUT, ModelContract,
)
from samdeploy.errors import ContractError, InputError
from samdeploy.trt.profiles import (
    Profile, decoder_ranges, encoder_ranges, make_profile, onnx_input_dims, shape_spec,
)

C = ModelContract(family="mobile_sam", variant="mobile_sam", weights_sha256="x")


def test_decoder_profile_from_our_onnx_is_consistent(trt_our_decoder):
    dims = onnx_input_dims(str(trt_our_decoder))
    p = make_profile(C, "decoder", decoder_ranges(max_prompts=12, max_points=6, opt_prompts=4, opt_points=3), dims)
    assert set(p.shapes) == {ENCODER_OUTPUT, DECODER_POINT_COORDS, DECODER_POINT_LABELS, DECODER_MASK_INPUT, DECODER_HAS_MASK_INPUT}
    # hand-computed from the contract (B in 1..12 opt 4, N in 1..6 opt 3)
    assert p.shapes[DECODER_POINT_COORDS] == ((1, 1, 2), (4, 3, 2), (12, 6, 2))
    assert p.shapes[DECODER_POINT_LABELS] == ((1, 1), (4, 3), (12, 6))
    assert p.shapes[DECODER_MASK_INPUT] == ((1, 1, 256, 256), (4, 1, 256, 256), (12, 1, 256, 256))
    assert p.shapes[DECODER_HAS_MASK_INPUT] == ((1,), (4,), (12,))
    assert p.shapes[ENCODER_OUTPUT] == ((1, 256, 64, 64),) * 3
    # nanosam #40: point_labels max 1x1 next to point_coords max 1x10x2 cannot happen
    for k in range(3):
        assert p.shapes[DECODER_POINT_COORDS][k][:2] == p.shapes[DECODER_POINT_LABELS][k]
        assert p.shapes[DECODER_POINT_COORDS][k][0] == p.shapes[DECODER_MASK_INPUT][k][0] == p.shapes[DECODER_HAS_MASK_INPUT][k][0]


def test_default_opt_is_one_click_plus_padding_point():
    r = decoder_ranges()
    assert (r["B"].min, r["B"].opt, r["B"].max) == (1, 1, 16)
    assert (r["N"].min, r["N"].opt, r["N"].max) == (1, 2, 8)


def test_encoder_profile_uses_contract_input_size():
    c = ModelContract(family="sam", variant="vit_b", weights_sha256="x")
    p = make_profile(c, "encoder", encoder_ranges(max_images=2), {ENCODER_INPUT: ("batch", 3, 1024, 1024)})
    assert p.shapes[ENCODER_INPUT] == ((1, 3, 1024, 1024), (1, 3, 1024, 1024), (2, 3, 1024, 1024))
    static = make_profile(c, "encoder", encoder_ranges(max_images=4), {ENCODER_INPUT: (1, 3, 1024, 1024)})
    assert static.is_static() and static.shapes[ENCODER_INPUT][2] == (1, 3, 1024, 1024)  # the file fixed B=1


def test_symbol_fixed_in_file_is_fixed_for_every_input():
    dims = {ENCODER_OUTPUT: (1, 256, 64, 64), DECODER_POINT_COORDS: (1, "n", 2), DECODER_POINT_LABELS: ("b", "n"),
            DECODER_MASK_INPUT: ("b", 1, 256, 256), DECODER_HAS_MASK_INPUT: ("b",)}
    p = make_profile(C, "decoder", decoder_ranges(max_prompts=8), dims)
    assert all(s[2][0] == 1 for n, s in p.shapes.items())  # B pinned to 1 everywhere


@pytest.mark.parametrize("dims, match", [
    ({ENCODER_OUTPUT: (1, 256, 64, 64), DECODER_POINT_COORDS: ("b", "n", 2), DECODER_POINT_LABELS: ("b", "n"),
      DECODER_MASK_INPUT: ("b", 1, 256, 256), DECODER_HAS_MASK_INPUT: ("b",), "orig_im_size": (2,)}, "do not match"),
    ({ENCODER_OUTPUT: (1, 256, 32, 32), DECODER_POINT_COORDS: ("b", "n", 2), DECODER_POINT_LABELS: ("b", "n"),
      DECODER_MASK_INPUT: ("b", 1, 256, 256), DECODER_HAS_MASK_INPUT: ("b",)}, "contract says 64"),
    ({ENCODER_OUTPUT: (1, 256, 64, 64), DECODER_POINT_COORDS: ("b", "n", 2), DECODER_POINT_LABELS: ("n", "b"),
      DECODER_MASK_INPUT: ("b", 1, 256, 256), DECODER_HAS_MASK_INPUT: ("b",)}, "used for both"),
])
def test_file_that_disagrees_with_contract_is_refused(dims, match):
    with pytest.raises(ContractError, match=match):
        make_profile(C, "decoder", decoder_ranges(), dims)


def test_bad_ranges_are_input_errors():
    with pytest.raises(InputError):
        decoder_ranges(max_prompts=4, opt_prompts=8)
    with pytest.raises(InputError):
        decoder_ranges(max_points=0)


def test_shape_spec_and_roundtrip():
    p = make_profile(C, "decoder", decoder_ranges(max_prompts=2, max_points=3), None)
    assert shape_spec(p, "max") == ("image_embeddings:1x256x64x64,point_coords:2x3x2,point_labels:2x3,"
                                    "mask_input:2x1x256x256,has_mask_input:2")
    assert Profile.from_dict(p.to_dict()) == p
