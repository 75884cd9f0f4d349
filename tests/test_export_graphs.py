"""Structure of exported graphs: contract I/O, forbidden ops, dtypes, opset, metadata == manifest."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from samdeploy.contract import (
    DECODER_HAS_MASK_INPUT, DECODER_INPUTS, DECODER_IOU, DECODER_LOW_RES_MASKS, DECODER_MASK_INPUT,
    DECODER_OUTPUTS, DECODER_POINT_COORDS, DECODER_POINT_LABELS, ENCODER_INPUT, ENCODER_OUTPUT, METADATA_KEY,
    ModelContract, read_onnx_contract,
)
from samdeploy.export.graph_checks import check_graph, inputs_used_as_shapes, op_counts
from samdeploy.export.manifest import read_manifest, verify_files
from samdeploy._io import sha256_file


@pytest.fixture(scope="module")
def ms_dir(exported_model_dir):
    return exported_model_dir("mobile_sam")


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def test_encoder_io_is_the_contract(ms_dir):
    m = onnx.load(str(ms_dir / "encoder.onnx"))
    assert [i.name for i in m.graph.input] == [ENCODER_INPUT]
    assert [o.name for o in m.graph.output] == [ENCODER_OUTPUT]
    assert _dims(m.graph.input[0]) == [1, 3, 1024, 1024]  # static batch 1 by default
    assert _dims(m.graph.output[0]) == [1, 256, 64, 64]
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_decoder_io_is_the_contract_with_dynamic_prompts_and_points(ms_dir):
    m = onnx.load(str(ms_dir / "decoder.onnx"))
    assert tuple(i.name for i in m.graph.input) == DECODER_INPUTS
    assert tuple(o.name for o in m.graph.output) == DECODER_OUTPUTS
    dims = {i.name: _dims(i) for i in list(m.graph.input) + list(m.graph.output)}
    assert dims[ENCODER_OUTPUT] == [1, 256, 64, 64]
    assert dims[DECODER_POINT_COORDS] == ["num_prompts", "num_points", 2]
    assert dims[DECODER_POINT_LABELS] == ["num_prompts", "num_points"]
    assert dims[DECODER_MASK_INPUT] == ["num_prompts", 1, 256, 256]
    assert dims[DECODER_HAS_MASK_INPUT] == ["num_prompts"]
    assert dims[DECODER_IOU] == ["num_prompts", 4]
    assert dims[DECODER_LOW_RES_MASKS] == ["num_prompts", 4, 256, 256]
    assert all(i.type.tensor_type.elem_type == TensorProto.FLOAT for i in m.graph.input)


@pytest.mark.parametrize("role", ["encoder", "decoder"])
def test_graph_has_no_forbidden_ops_and_passes_checker(ms_dir, role):
    path = ms_dir / f"{role}.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    m = onnx.load(str(path))
    ops = op_counts(m)
    assert "OneHot" not in ops and "Tile" not in ops, ops
    assert ops.get("LayerNormalization", 0) > 0  # opset 17: LayerNorm exported as one op
    assert "Identity" not in ops  # the exporter's Identity(initializer) nodes are tidied away
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert check_graph(m, role).problems == []
    assert inputs_used_as_shapes(m) == {}
    # shape inference ran and was stored
    assert len(m.graph.value_info) > 0


def test_metadata_in_both_files_equals_manifest(ms_dir):
    manifest = read_manifest(ms_dir)
    contracts = {}
    for role in ("encoder", "decoder"):
        path = ms_dir / f"{role}.onnx"
        contract, stored_role = read_onnx_contract(str(path))
        assert stored_role == role
        contracts[role] = contract
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        assert json.loads(props[METADATA_KEY]) == manifest["contract"]
        assert props["samdeploy.weights_sha256"] == "random:mobile_sam:seed=0"
        assert props["samdeploy.variant"] == "mobile_sam"
        entry = manifest["files"][role]
        assert entry["sha256"] == sha256_file(path) and entry["size"] == path.stat().st_size
        assert [i["name"] for i in entry["inputs"]] == [i.name for i in onnx.load(str(path)).graph.input]
        assert all(i["dtype"] == "float32" for i in entry["inputs"])
    assert contracts["encoder"] == contracts["decoder"] == ModelContract.from_dict(manifest["contract"])
    c = contracts["encoder"]
    assert c.opset == 17 and c.family == "mobile_sam"
    assert c.provenance["torch"] and c.provenance["onnx"] == onnx.__version__
    assert manifest["model_id"] == c.model_id
    assert manifest["source"] == {"kind": "random", "variant": "mobile_sam", "seed": 0, "realistic": True, "trust_pickle": False}
    assert manifest["export_seconds"] > 0 and manifest["exported_at"].endswith("Z")
    assert verify_files(ms_dir, manifest) == []


def test_tinysam_contract_is_always_multimask(checkpoint_export_dir):
    out, ckpt, _official = checkpoint_export_dir("tinysam", graphs=("decoder",))
    contract, _ = read_onnx_contract(str(out / "decoder.onnx"))
    assert contract.variant == "tinysam" and contract.decoder.always_multimask
    assert contract.weights_sha256 == sha256_file(ckpt)
    manifest = read_manifest(out)
    assert list(manifest["files"]) == ["decoder"]
    assert manifest["source"]["checkpoint"] == str(ckpt)


# ---- the checker itself, on hand-built graphs ------------------------------------------------------
def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_check_graph_flags_onehot_tile_and_int_inputs():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    depth = helper.make_tensor("depth", TensorProto.INT64, [], [4])
    values = helper.make_tensor("values", TensorProto.FLOAT, [2], [0.0, 1.0])
    reps = helper.make_tensor("reps", TensorProto.INT64, [2], [2, 1])
    m = _model(
        [helper.make_node("OneHot", ["x", "depth", "values"], ["oh"]), helper.make_node("Tile", ["oh", "reps"], ["y"])],
        [x], [y], [depth, values, reps],
    )
    problems = check_graph(m, "other").problems
    assert any("OneHot" in p for p in problems)
    assert any("Tile" in p for p in problems)
    assert any("'x' is INT64" in p for p in problems)


def test_check_graph_flags_an_input_used_as_a_shape():
    # like the official decoder's orig_im_size: an input whose values become a Resize size
    img = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 4, 4])
    size = helper.make_tensor_value_info("orig_im_size", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    prefix = helper.make_tensor("prefix", TensorProto.INT64, [2], [1, 1])
    nodes = [
        helper.make_node("Cast", ["orig_im_size"], ["size_i"], to=TensorProto.INT64),
        helper.make_node("Concat", ["prefix", "size_i"], ["full"], axis=0),
        helper.make_node("Resize", ["img", "", "", "full"], ["out"], mode="linear"),
    ]
    m = _model(nodes, [img, size], [out], [prefix])
    assert list(inputs_used_as_shapes(m)) == ["orig_im_size"]
    assert any("shape tensor" in p for p in check_graph(m, "other").problems)


def test_shape_of_an_input_is_not_a_shape_tensor_input():
    # Shape(x) -> Reshape is fine: only x's shape, not its values, is used
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])]
    assert inputs_used_as_shapes(_model(nodes, [x], [y])) == {}


def test_check_graph_flags_wrong_io_names_and_old_opset():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    problems = check_graph(m, "encoder").problems
    assert any("inputs are ('input',)" in p for p in problems)
    assert any("outputs are ('output',)" in p for p in problems)
    assert any("opset 13" in p for p in problems)
    assert np.all([isinstance(p, str) for p in problems])
