"""`samdeploy build --precision int8` warns when the INT8 file was calibrated for another runtime."""

from __future__ import annotations

import dataclasses

import onnx
import pytest
from onnx import TensorProto, helper

from samdeploy.cli.build_cmd import calibration_target_warnings
from samdeploy.contract import ENCODER_INPUT, ENCODER_OUTPUT, ModelContract, metadata_props


def _graph_with(path, provenance):
    c = dataclasses.replace(ModelContract(family="mobile_sam", variant="vit_t", weights_sha256="0" * 64),
                            provenance=provenance)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info(ENCODER_OUTPUT, TensorProto.FLOAT, [1, 3, 4, 4])
    node = helper.make_node("Identity", [ENCODER_INPUT], [ENCODER_OUTPUT])
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]))
    for k, v in metadata_props(c, "encoder").items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)
    return str(path)


@pytest.mark.parametrize("provenance, says", [
    ({"precision": "int8", "calibration": {"method": "hessian", "target": "ort-cpu"}}, "--target ort-cpu"),
    ({"precision": "int8", "calibration": {"method": "hessian"}}, "does not record"),
    ({}, "not an INT8 calibration output"),
])
def test_other_targets_warn(tmp_path, provenance, says):
    (w,) = calibration_target_warnings(_graph_with(tmp_path / "e.onnx", provenance), "encoder")
    assert says in w


def test_tensorrt_calibration_is_quiet(tmp_path):
    prov = {"precision": "int8", "calibration": {"method": "hessian", "target": "tensorrt"}}
    assert calibration_target_warnings(_graph_with(tmp_path / "e.onnx", prov), "encoder") == []


def test_calibrated_contract_records_its_target():
    from samdeploy.calibration.outputs import int8_contract
    from samdeploy.calibration.pipeline import CalibrationSettings

    c = ModelContract(family="mobile_sam", variant="vit_t", weights_sha256="0" * 64)
    s = CalibrationSettings(target="ort-cpu")
    assert int8_contract(c, s, "hessian").provenance["calibration"]["target"] == "ort-cpu"
