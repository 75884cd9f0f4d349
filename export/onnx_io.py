"""ONNX file handling for export (no torch): tidy, shape inference, metadata, atomic save with
optional external data.

Everything here is deterministic: the same ModelProto always serialises to the same bytes, and no
temporary path or timestamp ends up in a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from .._io import atomic_path, sha256_file
from ..errors import ExportError

PROTOBUF_LIMIT = 2**31 - 1
# "auto" switches to external data well below the 2 GiB protobuf limit (the graph itself needs room).
DEFAULT_EXTERNAL_DATA_THRESHOLD = 1_800_000_000
_EXTERNAL_MIN_TENSOR_BYTES = 1024  # smaller tensors (shape constants, biases) stay inline
_ALIGN = 4096  # page-aligned tensors can be memory-mapped by ONNX Runtime


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of weights (raw_data; other storage fields counted by element count)."""
    total = 0
    for t in model.graph.initializer:
        if t.HasField("raw_data"):
            total += len(t.raw_data)
        else:
            n = 1
            for d in t.dims:
                n *= d
            total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def remove_initializer_identities(model: onnx.ModelProto) -> int:
    """Drop ``Identity(initializer)`` nodes (the TorchScript exporter adds one per de-duplicated
    weight) by pointing their consumers at the initializer. Returns the number removed."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return 0
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    return len(alias)


def remove_unused_initializers(model: onnx.ModelProto) -> int:
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    removed = len(graph.initializer) - len(keep)
    if removed:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return removed


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy without the bulk of the weights (large initializers keep dims and dtype only), so
    shape inference works for models over the 2 GB protobuf limit."""
    skel = onnx.ModelProto()
    _copy_without_weights(model, skel)
    return skel


def _copy_without_weights(model: onnx.ModelProto, out: onnx.ModelProto) -> None:
    graph = model.graph
    inits = list(graph.initializer)
    del graph.initializer[:]  # temporarily, so the copy is small
    try:
        out.CopyFrom(model)
    finally:
        graph.initializer.extend(inits)
    for t in inits:
        small = onnx.TensorProto()
        if t.ByteSize() < _EXTERNAL_MIN_TENSOR_BYTES:
            small.CopyFrom(t)
        else:
            small.name, small.data_type = t.name, t.data_type
            small.dims.extend(t.dims)
        out.graph.initializer.append(small)


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Value name -> fully static shape, from ONNX shape inference (model not modified)."""
    from .fold import _static_shapes

    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model), data_prop=True)
    except Exception:
        return {}
    return _static_shapes(inferred)


def fold_constants(model: onnx.ModelProto, max_sweeps: int = 8) -> int:
    """Fold constant integer shape arithmetic until nothing changes (see ``fold.py``)."""
    from .fold import fold_shape_constants

    total = 0
    for _ in range(max_sweeps):
        n = fold_shape_constants(model, static_shapes(model))
        total += n
        if not n:
            break
    return total


def infer_shapes(model: onnx.ModelProto) -> None:
    """Run ONNX shape inference (strict) and store the inferred value_info in ``model``."""
    skel = _skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ExportError(
            f"ONNX shape inference failed on the exported graph: {exc}",
            hint="this is a bug in the model's forward; report it with the model variant",
        ) from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    # Outputs get concrete dims where the exporter left them open.
    for out, inf in zip(model.graph.output, inferred.graph.output):
        out.type.CopyFrom(inf.type)


def set_metadata(model: onnx.ModelProto, props: dict[str, str], doc: str = "") -> None:
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]
    if doc:
        model.doc_string = doc


@dataclass
class SavedFile:
    path: Path
    sha256: str
    size: int


def save_model(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool) -> list[SavedFile]:
    """Write ``model`` to ``path`` atomically; with ``external_data`` the large weights go to
    ``<name>.data`` next to it (written first, so the .onnx never points at a missing file).

    ``model`` is not modified. Returns the files written, the .onnx first."""
    path = Path(path)
    written: list[SavedFile] = []
    if external_data:
        model = _with_external_data(model, path, written)
    try:
        data = model.SerializeToString()
    except ValueError:
        data = b""
    if not data or len(data) > PROTOBUF_LIMIT:
        raise ExportError(
            f"{path.name} is larger than the 2 GB protobuf limit",
            hint="export with --external-data auto (the default) or always",
        )
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        check_model_file(tmp)
    written.insert(0, SavedFile(path, sha256_file(path), path.stat().st_size))
    return written


def _with_external_data(model: onnx.ModelProto, path: Path, written: list[SavedFile]) -> onnx.ModelProto:
    """Copy of ``model`` whose large initializers reference ``<path>.data`` (which is written here)."""
    data_path = path.with_name(path.name + ".data")
    location = data_path.name  # relative: the pair can be moved together
    out = onnx.ModelProto()
    graph = model.graph
    inits = list(graph.initializer)
    del graph.initializer[:]
    try:
        out.CopyFrom(model)
    finally:
        graph.initializer.extend(inits)
    offset = 0
    with atomic_path(data_path) as tmp, open(tmp, "wb") as fh:
        for t in inits:
            ref = out.graph.initializer.add()
            raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
            if len(raw) < _EXTERNAL_MIN_TENSOR_BYTES:
                ref.CopyFrom(t)
                continue
            pad = (-offset) % _ALIGN
            fh.write(b"\0" * pad)
            offset += pad
            ref.name, ref.data_type = t.name, t.data_type
            ref.dims.extend(t.dims)
            ref.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            fh.write(raw)
            offset += len(raw)
    written.append(SavedFile(data_path, sha256_file(data_path), data_path.stat().st_size))
    return out


def check_model_file(path: str | os.PathLike) -> None:
    """``onnx.checker`` (full check, by path so external data and >2 GB models work)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(
            f"onnx.checker rejected the exported graph: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="this is a bug in the exporter or the model's forward; report it",
        ) from None


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file with its external data."""
    return onnx.load(str(path), load_external_data=True)
