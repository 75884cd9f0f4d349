"""Bad input to the runtime API is refused with samdeploy's typed errors before any graph runs;
SamPredictor-style empty prompts decode; outputs are never NaN/inf."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from fixtures_runtime import fake_contract, write_fake_model

from samdeploy.errors import ContractError, InputError, NumericalError, SamDeployError
from samdeploy.runtime import Predictor


@pytest.fixture()
def pred(fake_model_dir, photos):
    p = Predictor(fake_model_dir, threads=1)
    p.set_image(photos["chelsea"])  # 451 x 300
    calls = {"decoder": 0}
    run = p.model.decoder.run

    def counted(feeds):
        calls["decoder"] += 1
        return run(feeds)

    p.model.decoder.run = counted
    p.calls = calls
    yield p
    p.close()


@pytest.mark.parametrize("kwargs, says", [
    (dict(point_coords=[[1e38, 5]], point_labels=[1]), "point_coords"),      # finite in float64, not in fp32 maths
    (dict(point_coords=[[500, 5]], point_labels=[1]), "point_coords"),       # x > W = 451
    (dict(point_coords=[[5, -1]], point_labels=[1]), "point_coords"),
    (dict(point_coords=[[5, 5]], point_labels=[2]), "label"),
    (dict(box=[300, 10, 20, 200]), "box"),                                    # inverted
    (dict(box=[0, 0, 10, 3e39]), "box"),
    (dict(point_coords=[[5, 5]], point_labels=[1], mask_input=np.full((1, 256, 256), 3.3e38)), "mask_input"),
])
def test_bad_prompts_raise_before_the_decoder_runs(pred, kwargs, says):
    with pytest.raises(InputError, match=says):
        pred.predict(**kwargs)
    assert pred.calls["decoder"] == 0


def test_outside_points_are_an_explicit_opt_in(fake_model_dir, photos):
    with Predictor(fake_model_dir, allow_outside_points=True) as p:
        p.set_image(photos["chelsea"])
        masks, scores, _ = p.predict(point_coords=[[-5, 180]], point_labels=[1])
        assert masks.shape[-2:] == (300, 451) and np.isfinite(scores).all()


def test_empty_prompts_decode_like_sampredictor(pred):
    m0, s0, _ = pred.predict()
    m1, s1, _ = pred.predict(point_coords=np.zeros((0, 2)), point_labels=np.zeros((0,)))
    assert m0.shape == m1.shape and m0.shape[-2:] == (300, 451)
    np.testing.assert_array_equal(s0, s1)  # both are the padding point alone
    mb, sb, lb = pred.predict_batch(boxes=np.zeros((0, 4)))
    assert mb.shape[0] == sb.shape[0] == lb.shape[0] == 0 and mb.shape[-2:] == (300, 451)


@pytest.mark.parametrize("kwargs", [dict(max_batch="a"), dict(max_batch=0), dict(threads="two"),
                                    dict(providers=42), dict(no_such_option=1)])
def test_constructor_arguments_are_checked(fake_model_dir, kwargs):
    with pytest.raises(InputError):
        Predictor(fake_model_dir, **kwargs)


def test_embedding_size_must_be_finite(pred):
    emb = pred.get_image_embedding()
    with pytest.raises(InputError):
        pred.set_image_embedding(emb, (float("inf"), 5))


@pytest.mark.parametrize("decoder", [dict(multimask_tokens=(1, 2, 7)), dict(low_res_size=0)])
def test_tampered_contract_is_refused(tmp_path, decoder):
    from samdeploy.contract import Decoder

    c = fake_contract()
    c = dataclasses.replace(c, decoder=dataclasses.replace(Decoder(), **decoder))
    with pytest.raises(ContractError):
        Predictor(write_fake_model(tmp_path / "m", c))


def test_non_finite_decoder_output_is_a_typed_error(pred):
    run = pred.model.decoder.run
    pred.model.decoder.run = lambda feeds: {k: np.full_like(v, np.nan) for k, v in run(feeds).items()}
    with pytest.raises(NumericalError):
        pred.predict(point_coords=[[5, 5]], point_labels=[1])


# ---- property-based: nothing but samdeploy errors, never NaN/inf ------------------------------------
hypothesis = pytest.importorskip("hypothesis")
import os  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_num = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-10**40, 10**40),
                 st.sampled_from([0, 1, -1, 450, 451, 299, 300, 1e38, -1e38, 3.4e38]))
_arr = st.one_of(st.none(), st.lists(st.lists(_num, min_size=0, max_size=5), min_size=0, max_size=4),
                 st.lists(_num, min_size=0, max_size=5), _num, st.just("text"))


@settings(max_examples=int(os.environ.get("SAMDEPLOY_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coords=_arr, labels=_arr, box=_arr, multimask=st.booleans(), batched=st.booleans())
def test_fuzz_runtime_api(pred, coords, labels, box, multimask, batched):
    call = pred.predict_batch if batched else pred.predict
    kwargs = dict(point_coords=coords, point_labels=labels, multimask_output=multimask)
    kwargs["boxes" if batched else "box"] = box
    try:
        masks, scores, low = call(**kwargs)
    except SamDeployError:
        return
    assert np.isfinite(scores).all() and np.isfinite(low).all()
    json.dumps(scores.tolist(), allow_nan=False)
