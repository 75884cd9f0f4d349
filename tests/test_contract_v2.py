"""Contract version 2: every family's contract round-trips, version-1 files keep loading with the
behaviour they had, and a version-1 model directory predicts exactly like the same model exported now.

``tests/data/contract_v1_mobile_sam.json`` is the contract samdeploy wrote before version 2 (commit
6f0326c, verbatim but for the provenance note)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from samdeploy.contract import (
    CONTRACT_VERSION, ENCODER_OUTPUT, METADATA_KEY, ModelContract, TensorSpec, read_onnx_contract,
)
from samdeploy.errors import ContractError
from samdeploy.models.variants import VARIANTS, contract_for

V1_JSON = Path(__file__).parent / "data" / "contract_v1_mobile_sam.json"


def test_v1_contract_loads_with_v1_meaning():
    c = ModelContract.from_dict(json.loads(V1_JSON.read_text()))
    assert c.contract_version == 1 and c.family == "mobile_sam"
    # the v2 fields default to what v1 meant
    assert c.frame_size == c.preprocess.input_size == 1024 and c.prompts.frame_size is None
    assert c.decoder.score == "iou_head" and c.decoder.mask_input and not c.decoder.accepts_no_points
    assert c.encoder.outputs == (TensorSpec(ENCODER_OUTPUT, (256, 64, 64)),)
    assert c.decoder.embedding_inputs == (ENCODER_OUTPUT,) and c.prompts.user_labels == (-1, 0, 1)
    # a v1 contract stays v1 when re-serialised (manifest rewrites must not upgrade it)
    assert ModelContract.from_json(c.to_json()) == c and c.to_dict()["contract_version"] == 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_contract_round_trips(variant):
    c = contract_for(variant, "random:x:seed=0")
    assert c.contract_version == CONTRACT_VERSION == 2
    assert ModelContract.from_json(c.to_json()) == c
    assert c.decoder.accepts_no_points


def test_family_specific_fields():
    l0 = contract_for("efficientvit_sam_l0", "h")
    assert (l0.preprocess.input_size, l0.frame_size) == (512, 1024)
    edge = contract_for("edge_sam", "h")
    assert edge.decoder.score == "stability" and -2 in edge.prompts.user_labels
    assert "NON-COMMERCIAL" in edge.licence
    sam = contract_for("vit_b", "h")
    assert sam.frame_size == sam.preprocess.input_size == 1024 and -2 not in sam.prompts.user_labels


def test_unknown_or_malformed_contracts_are_refused():
    d = contract_for("mobile_sam", "h").to_dict()
    with pytest.raises(ContractError, match="newer"):
        ModelContract.from_dict({**d, "contract_version": 3})
    with pytest.raises(ContractError, match="unknown contract version"):
        ModelContract.from_dict({**d, "contract_version": 0})
    with pytest.raises(ContractError, match="malformed"):
        ModelContract.from_dict({**d, "encoder": {"outputs": [{"name": "x"}]}})
    with pytest.raises(ContractError, match="malformed"):
        ModelContract.from_dict({**d, "decoder": {**d["decoder"], "no_such_field": 1}})


# ---- a version-1 model directory ----------------------------------------------------------------------
def _as_v1_dir(v2_dir: Path, out: Path) -> Path:
    """The same graphs with the version-1 contract in their metadata and manifest, as 6f0326c wrote them."""
    import onnx

    v1 = json.loads(V1_JSON.read_text())
    shutil.copytree(v2_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    v1["weights_sha256"] = manifest["contract"]["weights_sha256"]
    v1["provenance"] = manifest["contract"]["provenance"]
    for role in ("encoder", "decoder"):
        path = out / manifest["files"][role]["path"]
        model = onnx.load(str(path))
        for p in model.metadata_props:
            if p.key == METADATA_KEY:
                p.value = json.dumps(v1, sort_keys=True, separators=(",", ":"))
            elif p.key == "samdeploy.contract_version":
                p.value = "1"
        onnx.save(model, str(path))
        manifest["files"][role]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest["files"][role]["size"] = path.stat().st_size
    manifest["contract"] = v1
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (out / ".samdeploy-verified.json").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def v1_and_v2(checkpoint_export_dir, tmp_path_factory):
    from samdeploy.runtime import Predictor

    v2_dir, _, _ = checkpoint_export_dir("mobile_sam")
    v1_dir = _as_v1_dir(Path(v2_dir), tmp_path_factory.mktemp("v1") / "mobile_sam_v1")
    a, b = Predictor(v1_dir, threads=2), Predictor(v2_dir, threads=2)
    yield a, b
    a.close()
    b.close()


def test_v1_directory_predicts_like_v2(v1_and_v2, photos):
    v1, v2 = v1_and_v2
    assert read_onnx_contract(str(v1.model.decoder_path))[0].contract_version == 1
    assert v1.contract.contract_version == 1 and v2.contract.contract_version == 2
    img = photos["chelsea"]
    v1.set_image(img)
    v2.set_image(img)
    np.testing.assert_array_equal(v1.get_image_embedding(), v2.get_image_embedding())
    assert v1.input_size == v2.input_size
    h, w = img.shape[:2]
    for kw in ({"point_coords": [[w * 0.4, h * 0.5]], "point_labels": [1]},
               {"box": [w * 0.1, h * 0.1, w * 0.8, h * 0.9]},
               {"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)}):
        for a, b in zip(v1.predict(**kw), v2.predict(**kw)):
            np.testing.assert_array_equal(a, b)
    # A v1 decoder graph needs N >= 1: "no prompt" is sent as the padding point, as v1 always did.
    assert not v1.no_points_ok and v2.no_points_ok
    for a, b in zip(v1.predict(), v2.predict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0))):
        np.testing.assert_array_equal(a, b)


def test_runtime_refuses_contracts_it_cannot_drive(v1_and_v2):
    from samdeploy.runtime import GraphPair, Predictor

    _, v2 = v1_and_v2
    m, c = v2.model, v2.contract
    wants_more = dataclasses.replace(c, decoder=dataclasses.replace(
        c.decoder, embedding_inputs=c.decoder.embedding_inputs + ("high_res_feats",)))
    bad_score = dataclasses.replace(c, decoder=dataclasses.replace(c.decoder, score="magic"))
    for contract, msg in ((wants_more, "consumes encoder outputs"), (bad_score, "decoder.score")):
        pair = GraphPair(m.encoder, m.decoder, contract, m.backend, m.encoder_path, m.decoder_path, dict(m.options))
        with pytest.raises(ContractError, match=msg):
            Predictor(pair)
