"""``samdeploy.onnx_graph.GraphIndex``: the one producer/consumer/constant index of the ONNX passes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from samdeploy.onnx_graph import GraphIndex

ROOT = Path(__file__).resolve().parents[1]


def _graph() -> onnx.GraphProto:
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32(2.0), "c_value"), name="const"),
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0], name="t"),
        helper.make_node("Identity", ["wt"], ["wt_id"], name="id"),
        helper.make_node("MatMul", ["x", "wt_id"], ["y"], name="mm"),
        helper.make_node("Mul", ["y", "c"], ["z"], name="mul"),
        helper.make_node("Add", ["z", "y"], ["out"], name="add"),
    ]
    return helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3]), helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(w, "w")],  # an initializer that is also listed as an input
    )


def test_index_lookups():
    ix = GraphIndex(_graph())
    assert ix.inputs == ["x"] and ix.outputs == {"out"} and set(ix.initializers) == {"w"}
    assert ix.producer["y"].name == "mm" and "x" not in ix.producer
    assert [(n.name, pos) for n, pos in ix.uses["y"]] == [("mul", 0), ("add", 1)]  # graph order, with positions
    assert [n.name for n in ix.consumers["y"]] == ["mul", "add"]
    np.testing.assert_array_equal(ix.const("wt_id"), np.arange(6, dtype=np.float32).reshape(2, 3).T)  # Identity(Transpose(w))
    assert float(ix.const("c")) == 2.0 and ix.constant_tensor("c") is not None
    assert ix.const("x") is None and ix.const("z") is None and ix.constant_tensor("wt") is None


def test_no_pass_builds_its_own_producer_map():
    """The ONNX passes use GraphIndex; a hand-written producer map elsewhere is a second implementation."""
    pattern = re.compile(r"\{\s*o\s*:\s*n(ode)?\s+for\s+n(ode)?\s+in\s+[\w.]+\.node\s+for\s+o\s+in")
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "tests" not in p.parts and p.name != "onnx_graph.py" and ".cache" not in p.parts
                 and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
