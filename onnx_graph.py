"""One index over an ONNX graph, shared by every pass that walks one (calibration Q/DQ, ORT lowering,
TensorRT mixed precision and pre-flight, export graph checks).

Each of those passes used to build its own producer / consumer maps; they differed in small ways (with
or without input positions, Constant nodes seen or not). :class:`GraphIndex` is built once per graph
and is a snapshot: a pass that rewrites the graph builds a new one afterwards.

Needs only ``onnx`` and NumPy (the runtime imports it; no torch).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["GraphIndex"]


class GraphIndex:
    """Lookups over ``graph`` (an ``onnx.GraphProto``), computed once.

    * ``initializers``  name -> TensorProto
    * ``producer``      tensor name -> the node that outputs it
    * ``uses``          tensor name -> [(node, input position)] in graph order
    * ``consumers``     tensor name -> [node] (the same, without positions)
    * ``inputs``        graph input names that are not initializers (the real feeds), in order
    * ``outputs``       graph output names
    """

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in graph.node for o in n.output if o}
        self.uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            for pos, name in enumerate(node.input):
                if name:
                    self.uses.setdefault(name, []).append((node, pos))
        self.consumers: dict[str, list[onnx.NodeProto]] = {k: [n for n, _ in v] for k, v in self.uses.items()}
        self.inputs: list[str] = [i.name for i in graph.input if i.name not in self.initializers]
        self.outputs: set[str] = {o.name for o in graph.output}

    def constant_tensor(self, name: str) -> Optional[onnx.TensorProto]:
        """The TensorProto of ``name`` if it is an initializer or a Constant node's ``value``."""
        if name in self.initializers:
            return self.initializers[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return next((a.t for a in node.attribute if a.name == "value"), None)
        return None

    def const(self, name: str, depth: int = 0) -> Optional[np.ndarray]:
        """Value of ``name`` if it is an initializer, a Constant, or an Identity/Transpose of one
        (how exporters often store a weight), else None."""
        t = self.constant_tensor(name)
        if t is not None:
            return numpy_helper.to_array(t)
        node = self.producer.get(name)
        if node is None or depth > 4:
            return None
        if node.op_type == "Identity":
            return self.const(node.input[0], depth + 1)
        if node.op_type == "Transpose":
            v = self.const(node.input[0], depth + 1)
            if v is None:
                return None
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            return np.transpose(v, perm)
        return None
