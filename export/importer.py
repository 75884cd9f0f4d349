"""``samdeploy import``: wrap a foreign SAM-family encoder ONNX (and a decoder) in the samdeploy contract.

    import_onnx("resnet18_image_encoder.onnx", "out/", decoder_from="mobile_sam_export/", family="nanosam")

Some families publish ONNX files only (NanoSAM: ``resnet18_image_encoder.onnx``); others publish
encoders exported by their own scripts (EdgeSAM, Meta-style ``image [1,3,1024,1024]`` encoders).
Those encoders take the NORMALISED image. The import recognises them by their I/O signature and
turns them into a samdeploy ``encoder.onnx``:

- accepted encoder: one float32 NCHW input ``[1 or dynamic, 3, S, S]`` (any name; S = the family's
  encoder input, 1024 for every family this accepts) -> one float32 output ``[1 or dynamic, 256, 64, 64]``;
- ``(x - pixel_mean) / pixel_std`` is prepended as ONNX nodes (Sub, Div), so the imported graph takes
  the contract's 0..255 mean-padded input (the pad is exactly 0 after it, NanoSAM's zero pad);
  I/O are renamed to the contract's names; opset 16 is raised to 17 (17 only adds operators) and
  other opsets go through ``onnx.version_converter``;
- metadata: the contract of ``--family`` (a variant of the table) with ``weights_sha256`` = SHA-256
  of the original file (with external data: of the file's and its data files' digests), and
  provenance naming the source file, its signature and the family's upstream preprocessing
  (NanoSAM: PIL BICUBIC + ``int()`` truncation; samdeploy's runtime uses the contract's bilinear +
  rounding);
- before anything is written, the wrapped graph is run on a probe image and compared with the
  original graph on the normalised probe (``verify=False`` skips it).

Decoder: ``decoder_from`` = an existing samdeploy export whose contract's decoder and prompt semantics
equal the family's (e.g. a ``mobile_sam`` export for NanoSAM): its ``decoder.onnx`` is copied with
the contract rewritten to the imported model's id. Or ``decoder`` = a foreign decoder ONNX with the
contract's own 5-input / 2-output signature (dynamic prompt batch and point count); it is smoke-run
with 2 prompts x 3 points. Everything else is refused with a :class:`~samdeploy.errors.ContractError`
naming the signature it saw (samexporter's HWC encoder, Meta's decoder with ``orig_im_size``,
EdgeSAM's 3-input decoder, SAM 2 graphs, ...). Files that are not ONNX, missing or escaping external
data, and graphs over the protobuf limit raise :class:`~samdeploy.errors.InputError` /
:class:`~samdeploy.errors.MissingFileError`.

Writing is the exporter's: everything is checked in memory, written into a private staging directory
inside ``out`` and swapped in with the manifest last (``exporter._swap_in``); a failed import leaves
the previous content of ``out`` (or no ``out`` at all) behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from .. import __version__, _io
from ..contract import (DECODER_INPUTS, DECODER_IOU, DECODER_LOW_RES_MASKS, DECODER_OUTPUTS, ENCODER_INPUT,
                        ENCODER_OUTPUT, ModelContract, decoder_feeds, metadata_props, read_onnx_contract)
from ..errors import ContractError, InputError, MissingFileError
from . import graph_checks, onnx_io
from .manifest import build_manifest, file_entry, graph_path, manifest_contract, read_manifest, verify_files

__all__ = ["import_onnx", "ImportResult", "Signature", "read_signature", "TARGET_OPSET"]

TARGET_OPSET = 17
EMBEDDING_SHAPE = (256, 64, 64)
LOW_RES = 256
FILE_NAMES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
SOURCE_KIND = "onnx_import"
VERIFY_REL_L2 = 1e-5

_SUPPORTED_ENCODER = ("one float32 NCHW input [1,3,1024,1024] (normalised image, no preprocessing inside) "
                      "-> one float32 output [1,256,64,64] (NanoSAM, EdgeSAM, Meta-style encoders)")
_SUPPORTED_DECODER = (f"a decoder with samdeploy's signature {', '.join(DECODER_INPUTS)} -> "
                      f"{', '.join(DECODER_OUTPUTS)} (dynamic prompt batch and point count), or "
                      "--decoder-from a samdeploy export of the family's decoder")

# What each family's own predictor does before its encoder (recorded in the imported contract's
# provenance; samdeploy's runtime applies the contract's preprocessing).
UPSTREAM_PREPROCESS: Mapping[str, Mapping[str, str]] = {
    "nanosam": {
        "source": "NVIDIA-AI-IOT/nanosam nanosam/utils/predictor.py::preprocess_image",
        "resize": "longest side to 1024 with PIL's default filter (BICUBIC); short side int() truncation",
        "normalise": "SAM mean/std on 0..255",
        "pad": "zeros at bottom/right after normalising",
        "samdeploy": "the contract's PIL bilinear antialiased resize with int(x+0.5) rounding (SamPredictor's); "
                     "the pad is identical (mean in 0..255 = 0 after normalising)",
    },
}


# ---- reading and signatures ----------------------------------------------------------------------
@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[Any, ...]  # ints, dim_param strings, or None (unknown)

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims}]:{self.dtype}"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def describe(self) -> str:
        return f"({', '.join(t.describe() for t in self.inputs)}) -> ({', '.join(t.describe() for t in self.outputs)})"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _tensor(value: onnx.ValueInfoProto) -> Tensor:
    t = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if t is None:
        return Tensor(value.name, "non-tensor", ())
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "undefined"
    except (KeyError, ValueError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type in onnx.TensorProto.DataType.values() else "unknown"
    shape: list[Any] = []
    if t.HasField("shape"):
        for d in t.shape.dim:
            shape.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
    return Tensor(value.name, dtype, tuple(shape))


def read_signature(model: onnx.ModelProto) -> Signature:
    inits = {t.name for t in model.graph.initializer}
    return Signature(tuple(_tensor(i) for i in model.graph.input if i.name not in inits),
                     tuple(_tensor(o) for o in model.graph.output))


def _is_dynamic(d: Any) -> bool:
    return not isinstance(d, int) or d <= 0


def _matches(shape: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    """``want``: ints must match exactly; "B" = 1 or dynamic; "D" = must be dynamic."""
    if len(shape) != len(want):
        return False
    for d, w in zip(shape, want):
        if w == "B":
            if not (_is_dynamic(d) or d == 1):
                return False
        elif w == "D":
            if not _is_dynamic(d):
                return False
        elif d != w:
            return False
    return True


def _file_sha(path: Path) -> str:
    return _io.sha256_file(path)


@dataclass
class SourceGraph:
    path: Path
    model: onnx.ModelProto  # with external data loaded
    sha256: str  # of the .onnx file
    size: int
    external: list[tuple[str, str, int]]  # (relative location, sha256, size)
    signature: Signature
    opset: int

    @property
    def weights_sha256(self) -> str:
        if not self.external:
            return self.sha256
        h = hashlib.sha256(self.sha256.encode())
        for loc, sha, _ in sorted(self.external):
            h.update(f"\n{loc}:{sha}".encode())
        return h.hexdigest()

    def provenance(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "external_data": [{"path": loc, "sha256": sha, "size": size} for loc, sha, size in self.external],
            "signature": self.signature.describe(),
            "opset": self.opset,
            "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
        }


def read_graph(path: str | os.PathLike, what: str) -> SourceGraph:
    """Load a foreign ONNX file defensively: typed errors for anything that is not a complete ONNX graph."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{what} not found: {path}", hint="check the path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not an ONNX file", hint="pass the .onnx file itself")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{what} {path} is empty (0 bytes), not an ONNX file", hint="re-download or re-export it")
    if size > onnx_io.PROTOBUF_LIMIT:
        raise InputError(f"{what} {path} is {size:,} bytes, over the 2 GB protobuf limit of one .onnx file",
                         hint="store the weights as ONNX external data (onnx.save(..., save_as_external_data=True))")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        raise InputError(f"{what} {path} is a PyTorch checkpoint / pickle, not an ONNX file",
                         hint="convert checkpoints with `samdeploy export --checkpoint PATH`; import takes .onnx files")
    not_onnx = InputError(f"{what} {path} is not an ONNX model (not a readable ModelProto)",
                          hint="pass an .onnx file; it may be damaged or truncated: re-download it")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        raise not_onnx from None
    default_opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if model.ir_version <= 0 or not model.graph.node or not model.graph.output or not default_opsets:
        raise not_onnx
    external = _check_external_data(model, path, what)
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise InputError(f"{what} {path}: its external data cannot be read ({type(exc).__name__})",
                             hint="keep the .onnx file next to its data files, as they were written") from None
    ext = [(loc, _file_sha(path.parent / loc), (path.parent / loc).stat().st_size) for loc in external]
    return SourceGraph(path=path.resolve(), model=model, sha256=_file_sha(path), size=size, external=ext,
                       signature=read_signature(model), opset=int(default_opsets[0]))


def _external_tensors(model: onnx.ModelProto):
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield t
    for node in graph_checks._iter_nodes(model.graph):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == onnx.TensorProto.EXTERNAL:
                yield attr.t


def _check_external_data(model: onnx.ModelProto, path: Path, what: str) -> list[str]:
    """Every external-data reference stays in the file's folder and lies inside an existing file."""
    base = path.parent.resolve()
    locations: dict[str, int] = {}
    for t in _external_tensors(model):
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve() if loc else None
        if not loc or os.path.isabs(loc) or target is None or base not in target.parents:
            raise InputError(f"{what} {path}: tensor {t.name!r} points outside the file's folder ({loc!r})",
                             hint="external data must be a relative path next to the .onnx file")
        if not target.is_file():
            raise MissingFileError(f"{what} {path}: external data file {loc!r} (tensor {t.name!r}) is missing",
                                   hint="copy the data file(s) next to the .onnx file, as they were written")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise InputError(f"{what} {path}: tensor {t.name!r} has a malformed external-data offset/length") from None
        fsize = target.stat().st_size
        if offset < 0 or (length >= 0 and offset + length > fsize) or offset > fsize:
            raise InputError(f"{what} {path}: tensor {t.name!r} reads past the end of {loc!r} ({fsize:,} bytes)",
                             hint="the data file is truncated or not the one written with this graph: re-download it")
        locations[loc] = fsize
    return sorted(locations)


# ---- classification ------------------------------------------------------------------------------
def _refuse(what: str, src: SourceGraph, looks_like: str, supported: str, hint: str) -> ContractError:
    return ContractError(f"cannot import {what} {src.path.name}: signature {src.signature.describe()} "
                         f"({looks_like}); supported: {supported}", hint=hint)


def classify_encoder(src: SourceGraph, input_size: int) -> tuple[Tensor, Tensor]:
    """(input, output) of an importable encoder, or a ContractError saying what the graph looks like."""
    sig = src.signature
    names = set(sig.input_names)
    hint = "export the encoder without preprocessing (NCHW, normalised input), or see `samdeploy import --help`"
    if DECODER_INPUTS[1] in names:
        raise _refuse("encoder", src, "a decoder graph", _SUPPORTED_ENCODER, "pass decoders with --decoder")
    if len(sig.outputs) != 1:
        looks = ("a SAM 2 encoder (image_embed + high-resolution features)" if any("high_res" in n for n in sig.output_names)
                 else f"{len(sig.outputs)} outputs")
        raise _refuse("encoder", src, looks, _SUPPORTED_ENCODER, "samdeploy import wraps single-embedding encoders only")
    if len(sig.inputs) != 1:
        raise _refuse("encoder", src, f"{len(sig.inputs)} inputs", _SUPPORTED_ENCODER, hint)
    inp, out = sig.inputs[0], sig.outputs[0]
    if len(inp.shape) == 3 or (len(inp.shape) == 4 and inp.shape[-1] == 3 and inp.shape[1] != 3):
        raise _refuse("encoder", src, "an HWC image input with preprocessing inside, like samexporter --use-preprocess",
                      _SUPPORTED_ENCODER, hint)
    if len(inp.shape) != 4 or inp.shape[1] != 3:
        raise _refuse("encoder", src, "not an NCHW image encoder", _SUPPORTED_ENCODER, hint)
    if inp.dtype != "float32":
        raise _refuse("encoder", src, f"a {inp.dtype} image input", _SUPPORTED_ENCODER, hint)
    if not _matches(inp.shape, ("B", 3, input_size, input_size)):
        sizes = [d for d in inp.shape[2:] if isinstance(d, int)]
        looks = (f"a {sizes[0]}x{sizes[0]} encoder input, the family's is {input_size}" if len(sizes) == 2 and sizes[0] == sizes[1]
                 else "an image input of another layout")
        raise _refuse("encoder", src, looks, _SUPPORTED_ENCODER, hint)
    if out.dtype != "float32" or not _matches(out.shape, ("B",) + EMBEDDING_SHAPE):
        raise _refuse("encoder", src, "its output is not a [1,256,64,64] float32 image embedding", _SUPPORTED_ENCODER,
                      "only SAM-1 style encoders (one 256x64x64 embedding) can be imported")
    return inp, out


def classify_decoder(src: SourceGraph) -> None:
    """Accept only the contract's own decoder signature; name what else it looks like."""
    sig = src.signature
    ins, outs = set(sig.input_names), set(sig.output_names)
    hint = ("re-export the decoder with samdeploy (`samdeploy export --model VARIANT --graphs decoder`) and pass "
            "--decoder-from that directory")
    if "orig_im_size" in ins:
        raise _refuse("decoder", src, "Meta's segment-anything SamOnnxModel decoder with orig_im_size (masks upscaled "
                      "in graph; a shape-tensor input TensorRT cannot build)", _SUPPORTED_DECODER, hint)
    if any(n.startswith("high_res_feat") for n in ins) or "image_embed" in ins:
        raise _refuse("decoder", src, "a SAM 2 decoder", _SUPPORTED_DECODER, "SAM 2 is not supported")
    if DECODER_INPUTS[0] in ins and len(sig.inputs) == 3 and DECODER_INPUTS[3] not in ins:
        looks = ("EdgeSAM's 3-input decoder (no mask input; outputs scores, masks)" if "scores" in outs
                 else "a 3-input decoder without mask input (EdgeSAM / EfficientViT-SAM style)")
        raise _refuse("decoder", src, looks, _SUPPORTED_DECODER, hint)
    if sig.input_names and sig.input_names[0] in (ENCODER_INPUT, "input_image") and len(sig.inputs) == 1:
        raise _refuse("decoder", src, "an encoder graph", _SUPPORTED_DECODER, "pass the encoder as the first argument")
    if ins != set(DECODER_INPUTS) or outs != set(DECODER_OUTPUTS):
        raise _refuse("decoder", src, "not the samdeploy decoder layout", _SUPPORTED_DECODER, hint)
    by = {t.name: t for t in sig.inputs + sig.outputs}
    want = {
        DECODER_INPUTS[0]: (1,) + EMBEDDING_SHAPE,
        DECODER_INPUTS[1]: ("D", "D", 2),
        DECODER_INPUTS[2]: ("D", "D"),
        DECODER_INPUTS[3]: ("D", 1, LOW_RES, LOW_RES),
        DECODER_INPUTS[4]: ("D",),
        DECODER_IOU: ("D", 4),
        DECODER_LOW_RES_MASKS: ("D", 4, LOW_RES, LOW_RES),
    }
    for name, shape in want.items():
        t = by[name]
        if t.dtype != "float32" or not _matches(t.shape, shape):
            fixed_batch = t.shape[:1] == (1,) and name != DECODER_INPUTS[0]
            looks = ("the prompt batch is fixed at 1 (NanoSAM / MobileSAM SamOnnxModel style); samdeploy runs "
                     "prompts batched" if fixed_batch else f"{t.describe()} is not the contract's shape")
            raise _refuse("decoder", src, looks, _SUPPORTED_DECODER, hint)


# ---- graph surgery -------------------------------------------------------------------------------
def _all_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {t.name for t in g.initializer} | {v.name for v in (*g.input, *g.output, *g.value_info)}
    for node in graph_checks._iter_nodes(g):
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(taken: set[str], base: str) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename value ``old`` everywhere in ``graph`` and its subgraphs (which may read outer values)."""
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, old, new)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _rename(sub, old, new)
    for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
        for v in coll:
            if v.name == old:
                v.name = new


def _free_name(model: onnx.ModelProto, name: str, keep: str, taken: set[str]) -> None:
    """Make ``name`` available for the graph I/O value ``keep`` (renaming another value that uses it)."""
    if name != keep and name in taken:
        _rename(model.graph, name, _fresh(taken, f"{name}_orig"))


def _to_target_opset(model: onnx.ModelProto, what: str, path: Path) -> onnx.ModelProto:
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")][0]
    if default.version == TARGET_OPSET:
        return model
    if default.version == TARGET_OPSET - 1:
        # Opset 17 adds operators (LayerNormalization, DFT, windows, STFT, SequenceMap) and changes
        # none: raising the import is exact.
        default.version = TARGET_OPSET
        model.ir_version = max(model.ir_version, 8)
        return model
    if default.version > TARGET_OPSET:
        raise ContractError(f"{what} {path.name} uses opset {default.version}; samdeploy's graphs are opset {TARGET_OPSET}",
                            hint=f"re-export it with opset {TARGET_OPSET}")
    try:
        from onnx import version_converter

        converted = version_converter.convert_version(model, TARGET_OPSET)
        converted.ir_version = max(converted.ir_version, 8)
        return converted
    except Exception as exc:
        raise ContractError(f"{what} {path.name}: converting opset {default.version} to {TARGET_OPSET} failed "
                            f"({type(exc).__name__})", hint=f"re-export it with opset {TARGET_OPSET}") from None


def wrap_encoder(src: SourceGraph, inp: Tensor, out: Tensor, contract: ModelContract) -> onnx.ModelProto:
    """The foreign encoder with ``(x - mean) / std`` in front and the contract's I/O names."""
    model = onnx.ModelProto()
    model.CopyFrom(src.model)
    model = _to_target_opset(model, "encoder", src.path)
    g = model.graph
    taken = _all_names(model)
    normalised = _fresh(taken, "samdeploy_normalised_image")
    _rename(g, inp.name, normalised)  # the original input is now an internal value
    new_in = [v for v in g.input if v.name == normalised][0]
    g.input.remove(new_in)
    _free_name(model, ENCODER_INPUT, inp.name, taken)
    out_name = out.name
    if out_name != ENCODER_OUTPUT:
        _free_name(model, ENCODER_OUTPUT, out_name, taken)
        _rename(g, out_name, ENCODER_OUTPUT)
    image = onnx.ValueInfoProto()
    image.CopyFrom(new_in)
    image.name = ENCODER_INPUT
    pre = contract.preprocess
    mean_name, std_name, centred = (_fresh(taken, n) for n in ("samdeploy_pixel_mean", "samdeploy_pixel_std",
                                                                "samdeploy_centred_image"))
    scale = 255.0 / float(pre.pixel_scale)  # mean/std are for 0..pixel_scale; the input is 0..255
    mean = (np.asarray(pre.pixel_mean, np.float32) * np.float32(scale)).reshape(1, 3, 1, 1)
    std = (np.asarray(pre.pixel_std, np.float32) * np.float32(scale)).reshape(1, 3, 1, 1)
    g.initializer.extend([onnx.numpy_helper.from_array(mean, mean_name), onnx.numpy_helper.from_array(std, std_name)])
    nodes = [onnx.helper.make_node("Sub", [ENCODER_INPUT, mean_name], [centred], name="samdeploy_normalise_sub"),
             onnx.helper.make_node("Div", [centred, std_name], [normalised], name="samdeploy_normalise_div")]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(nodes + rest)
    g.input.insert(0, image)
    return model


def _with_contract(model: onnx.ModelProto, contract: ModelContract, role: str) -> onnx.ModelProto:
    model.producer_name = "samdeploy"
    model.producer_version = __version__
    onnx_io.set_metadata(model, metadata_props(contract, role),
                         doc=f"samdeploy {role} for {contract.family}/{contract.variant}, imported by `samdeploy import` "
                             "(see metadata samdeploy.contract)")
    return model


def _order_decoder_io(model: onnx.ModelProto, contract: ModelContract) -> None:
    """Graph inputs/outputs in the contract's order (names already checked)."""
    want_in, want_out = contract.graph_io("decoder")
    g = model.graph
    inits = {t.name for t in g.initializer}
    by_in = {v.name: v for v in g.input}
    real = [onnx.ValueInfoProto() for _ in want_in]
    for v, name in zip(real, want_in):
        v.CopyFrom(by_in[name])
    others = [v for v in g.input if v.name in inits]
    kept = [onnx.ValueInfoProto() for _ in others]
    for v, o in zip(kept, others):
        v.CopyFrom(o)
    del g.input[:]
    g.input.extend(real + kept)
    by_out = {v.name: v for v in g.output}
    outs = [onnx.ValueInfoProto() for _ in want_out]
    for v, name in zip(outs, want_out):
        v.CopyFrom(by_out[name])
    del g.output[:]
    g.output.extend(outs)


def _check(model: onnx.ModelProto, role: str, contract: ModelContract, path: Path) -> graph_checks.GraphReport:
    report = graph_checks.check_graph(model, role, contract)
    if not report.ok:
        raise ContractError(f"the imported {role} {path.name} breaks the samdeploy contract: {'; '.join(report.problems)}",
                            hint="it cannot be deployed as it is; re-export it from its PyTorch code if you can")
    with contextlib.suppress(Exception):  # foreign/contrib ops may defeat strict inference; ORT runs them anyway
        onnx_io.infer_shapes(model)
    return report


# ---- families and decoders -----------------------------------------------------------------------
def resolve_family(name: str):
    """A variant of the table from a variant name, or a family name with one variant."""
    from ..models.variants import VARIANTS

    if name in VARIANTS:
        v = VARIANTS[name]
    else:
        members = [v for v in VARIANTS.values() if v.family == name]
        if len(members) != 1:
            raise InputError(
                f"--family {name!r} is " + (f"a family with several variants ({', '.join(v.name for v in members)})"
                                            if members else "not a variant of the table"),
                hint="pass one variant name: " + ", ".join(VARIANTS) + " (see `samdeploy models list`)")
        v = members[0]
    if len(v.encoder_spec.outputs) != 1 or v.encoder_spec.outputs[0].shape != EMBEDDING_SHAPE:
        raise InputError(f"--family {v.name}: its decoder reads {len(v.encoder_spec.outputs)} encoder outputs; "
                         "import wraps single-embedding encoders only", hint="export it with `samdeploy export` instead")
    return v


def _same_decoder_semantics(a: ModelContract, b: ModelContract) -> list[str]:
    diffs = []
    da, db = dataclasses.replace(a.decoder, accepts_no_points=False), dataclasses.replace(b.decoder, accepts_no_points=False)
    for f in dataclasses.fields(da):
        if getattr(da, f.name) != getattr(db, f.name):
            diffs.append(f"decoder.{f.name} {getattr(da, f.name)!r} vs {getattr(db, f.name)!r}")
    if a.frame_size != b.frame_size:
        diffs.append(f"prompt frame {a.frame_size} vs {b.frame_size}")
    pa, pb = dataclasses.replace(a.prompts, frame_size=None), dataclasses.replace(b.prompts, frame_size=None)
    for f in dataclasses.fields(pa):
        if getattr(pa, f.name) != getattr(pb, f.name):
            diffs.append(f"prompts.{f.name} {getattr(pa, f.name)!r} vs {getattr(pb, f.name)!r}")
    return diffs


@dataclass
class _Decoder:
    model: onnx.ModelProto
    decoder_contract: Any  # contract.Decoder for the imported model
    provenance: dict[str, Any]
    precision: str | None
    path: Path


def _decoder_from_export(export_dir: str | os.PathLike, target: ModelContract) -> _Decoder:
    export_dir = Path(export_dir)
    if export_dir.is_file() and export_dir.name != "manifest.json":
        raise InputError(f"--decoder-from {export_dir} is a file", hint="pass a samdeploy export directory (or use --decoder FILE)")
    manifest = read_manifest(export_dir)
    problems = verify_files(export_dir, manifest)
    if problems:
        raise ContractError(f"--decoder-from {export_dir} does not match its manifest: {problems[0]}",
                            hint="re-export that directory; files changed after export cannot be trusted")
    path = graph_path(export_dir, manifest, "decoder")
    src_contract = manifest_contract(manifest)
    file_contract, role = read_onnx_contract(str(path))
    if role != "decoder" or file_contract.model_id != src_contract.model_id:
        raise ContractError(f"{path} is not the decoder its manifest describes", hint="re-export that directory")
    diffs = _same_decoder_semantics(src_contract, target)
    if diffs:
        raise ContractError(
            f"--decoder-from {export_dir} holds a {src_contract.family}/{src_contract.variant} decoder whose contract "
            f"differs from {target.variant}'s: {'; '.join(diffs[:3])}",
            hint=f"use an export of a variant with {target.variant}'s decoder, or pass --family accordingly")
    model = onnx_io.load_model(path)
    model = _to_target_opset(model, "decoder", path)
    prov = {"from_export": str(export_dir.resolve()), "model_id": src_contract.model_id, "file": path.name,
            "sha256": manifest["files"]["decoder"]["sha256"]}
    precision = dict(file_contract.provenance or {}).get("precision")
    return _Decoder(model, src_contract.decoder, prov, precision, path)


def _decoder_from_file(path: str | os.PathLike, target: ModelContract) -> _Decoder:
    src = read_graph(path, "decoder")
    props = {p.key: p.value for p in src.model.metadata_props}
    if "samdeploy.contract" in props:
        c, role = read_onnx_contract(str(src.path))
        if role != "decoder":
            raise ContractError(f"{src.path} is a samdeploy {role or 'unknown'} graph, not a decoder",
                                hint="pass the decoder.onnx of an export, or --decoder-from its directory")
        diffs = _same_decoder_semantics(c, target)
        if diffs:
            raise ContractError(f"decoder {src.path.name} is a {c.family}/{c.variant} decoder whose contract differs "
                                f"from {target.variant}'s: {'; '.join(diffs[:3])}", hint="pass --family accordingly")
        decoder = c.decoder
    else:
        classify_decoder(src)
        decoder = dataclasses.replace(target.decoder, accepts_no_points=False)  # unknown: the runtime pads N >= 1
    model = _to_target_opset(src.model, "decoder", src.path)
    _order_decoder_io(model, dataclasses.replace(target, decoder=decoder))
    return _Decoder(model, decoder, src.provenance(), None, src.path)


# ---- verification --------------------------------------------------------------------------------
def _session(path_or_bytes: Any):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = min(4, os.cpu_count() or 1)
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def _run(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ContractError(f"ONNX Runtime cannot run the {what}: {msg}",
                            hint="the graph needs operators or inputs this onnxruntime does not support") from None


def _verify_encoder(src: SourceGraph, inp: Tensor, wrapped_path: Path, contract: ModelContract) -> float:
    """rel L2 between the wrapped graph on a 0..255 probe and the original on the normalised probe."""
    s = contract.preprocess.input_size
    rng = np.random.default_rng(0)
    image = (rng.random((1, 3, s, s)) * 255.0).astype(np.float32)
    pre = contract.preprocess
    scale = np.float32(255.0 / float(pre.pixel_scale))
    mean = np.asarray(pre.pixel_mean, np.float32).reshape(1, 3, 1, 1) * scale
    std = np.asarray(pre.pixel_std, np.float32).reshape(1, 3, 1, 1) * scale
    original = _run("original encoder", lambda: _session(str(src.path)).run(None, {inp.name: (image - mean) / std})[0])
    got = _run("imported encoder", lambda: _session(str(wrapped_path)).run(None, {contract.graph_io("encoder")[0][0]: image}))
    got = got[0]
    if got.shape != original.shape or not np.all(np.isfinite(got)):
        raise ContractError(f"the imported encoder's output {got.shape} differs from the original's {original.shape} or is not finite",
                            hint="report this with the file")
    rel = float(np.linalg.norm(got - original) / max(float(np.linalg.norm(original)), 1e-12))
    if rel > VERIFY_REL_L2:
        raise ContractError(f"the imported encoder differs from the original on a probe image (rel L2 {rel:.2e} > {VERIFY_REL_L2})",
                            hint="the original graph may not take SAM-normalised input; report this with the file")
    return rel


def _verify_decoder(path: Path, contract: ModelContract) -> None:
    rng = np.random.default_rng(0)
    b, n = 2, 3
    feeds = decoder_feeds(rng.normal(size=(1,) + EMBEDDING_SHAPE).astype(np.float32),
                          (rng.random((b, n, 2)) * contract.frame_size).astype(np.float32),
                          np.ones((b, n), np.float32), np.zeros((b, 1, LOW_RES, LOW_RES), np.float32), np.zeros(b, np.float32))
    names = contract.graph_io("decoder")[1]
    out = _run("decoder with 2 prompts x 3 points", lambda: _session(str(path)).run(list(names), feeds))
    iou, masks = out[0], out[1]
    t = contract.decoder.num_mask_tokens
    if iou.shape != (b, t) or masks.shape != (b, t, LOW_RES, LOW_RES):
        raise ContractError(f"the decoder answers 2 prompts with {iou.shape} / {masks.shape}, expected ({b}, {t}) / "
                            f"({b}, {t}, {LOW_RES}, {LOW_RES})", hint="its prompt batch axis is not really dynamic")


# ---- the command ---------------------------------------------------------------------------------
@dataclass
class ImportResult:
    out_dir: Path
    contract: ModelContract
    files: dict[str, list[onnx_io.SavedFile]]
    encoder_signature: str
    verify_rel_l2: float | None
    manifest_path: Path | None = None
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        c = self.contract
        lines = [f"model     {c.family}/{c.variant}  weights {c.weights_sha256[:24]}...  (imported)",
                 f"source    {self.encoder_signature}",
                 f"contract  v{c.contract_version}, opset {c.opset}, encoder input {c.preprocess.input_size}px RGB 0..255 "
                 f"(normalisation prepended in graph), scores: {c.decoder.score}"]
        if self.verify_rel_l2 is not None:
            lines.append(f"verified  imported vs original encoder on a probe image: rel L2 {self.verify_rel_l2:.1e}")
        for role, files in self.files.items():
            for f in files:
                lines.append(f"wrote     {f.path}  sha256 {f.sha256[:16]}  ({role})")
        if self.manifest_path:
            lines.append(f"wrote     {self.manifest_path}")
        lines.append(f"done in {self.seconds:.1f} s")
        return lines


def _guard_out(out_dir: Path, sources: list[Path]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, not a directory", hint="pass a directory path")
    targets = set()
    for name in FILE_NAMES.values():
        targets |= {(out_dir / name).resolve(), (out_dir / (name + ".data")).resolve()}
    for s in sources:
        if s.resolve() in targets:
            raise InputError(f"{s} would be replaced by the import's own {s.name}",
                             hint="import into another --out directory (or move the source file first)")


def import_onnx(
    encoder: str | os.PathLike,
    out_dir: str | os.PathLike,
    decoder: str | os.PathLike | None = None,
    decoder_from: str | os.PathLike | None = None,
    family: str = "nanosam",
    verify: bool = True,
    log: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import a foreign encoder ONNX (+ decoder) into ``out_dir`` (see the module docstring)."""
    from .exporter import STAGING_PREFIX, _swap_in, _use_external_data, ExportOptions, remove_stale_staging
    from ..models.variants import contract_for

    t0 = time.perf_counter()
    say = log or (lambda s: None)
    if decoder is not None and decoder_from is not None:
        raise InputError("--decoder and --decoder-from are mutually exclusive", hint="pass one of them")
    out_dir = Path(out_dir)
    _guard_out(out_dir, [Path(p) for p in (encoder, decoder) if p is not None])
    variant = resolve_family(family)

    # 1. read and recognise everything in memory; nothing is written before it all passes
    src = read_graph(encoder, "encoder")
    if any(p.key == "samdeploy.contract" for p in src.model.metadata_props):
        raise ContractError(f"{src.path.name} is already a samdeploy graph", hint="use its export directory directly")
    inp, out = classify_encoder(src, variant.input_size)
    say(f"encoder {src.path.name}: {src.signature.describe()} -> recognised (normalised NCHW input)")
    provenance: dict[str, Any] = {"importer": f"samdeploy import {__version__}", "onnx": onnx.__version__,
                                  "imported_encoder": {**src.provenance(), "input_normalised": True,
                                                       "prepended": "(image - pixel_mean) / pixel_std"}}
    if variant.family in UPSTREAM_PREPROCESS:
        provenance["upstream_preprocess"] = dict(UPSTREAM_PREPROCESS[variant.family])
    target = contract_for(variant.name, src.weights_sha256, provenance)
    target = dataclasses.replace(target, opset=TARGET_OPSET)
    dec = None
    if decoder_from is not None:
        dec = _decoder_from_export(decoder_from, target)
    elif decoder is not None:
        dec = _decoder_from_file(decoder, target)
    if dec is not None:
        provenance["imported_decoder"] = dec.provenance
        target = dataclasses.replace(target, decoder=dec.decoder_contract, provenance=dict(provenance))
        say(f"decoder {dec.path.name}: accepted")
    contract = target

    enc_model = _with_contract(wrap_encoder(src, inp, out, contract), contract, "encoder")
    protos: dict[str, onnx.ModelProto] = {"encoder": enc_model}
    _check(enc_model, "encoder", contract, src.path)
    if dec is not None:
        dec_contract = contract
        if dec.precision and dec.precision != "fp32":
            dec_contract = dataclasses.replace(contract, provenance={**dict(contract.provenance), "precision": dec.precision})
        _check(dec.model, "decoder", dec_contract, dec.path)
        protos["decoder"] = _with_contract(dec.model, dec_contract, "decoder")

    # 2. write into staging inside out_dir, verify there, swap in with the manifest last
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging: Path | None = None
    try:
        remove_stale_staging(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
        os.chmod(staging, _io.default_dir_mode())
        new_dir = staging / "new"
        new_dir.mkdir()
        staged: dict[str, list[onnx_io.SavedFile]] = {}
        entries: dict[str, Any] = {}
        for role, proto in protos.items():
            try:
                files = onnx_io.save_model(proto, new_dir / FILE_NAMES[role], external_data=_use_external_data(proto, ExportOptions()))
            except Exception as exc:  # onnx.checker on the written file
                raise ContractError(f"the imported {role} is not a valid ONNX graph: {str(exc).splitlines()[0]}",
                                    hint="the source graph may be malformed; check it with onnx.checker") from None
            staged[role] = files
            final = [onnx_io.SavedFile(out_dir / f.path.name, f.sha256, f.size) for f in files]
            entries[role] = file_entry(SimpleNamespace(files=final, inputs=graph_checks.value_info_summary(
                [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]),
                outputs=graph_checks.value_info_summary(proto.graph.output)), out_dir)
        rel = None
        if verify:
            say("verifying the imported encoder against the original on a probe image ...")
            rel = _verify_encoder(src, inp, staged["encoder"][0].path, contract)
            if "decoder" in staged:
                _verify_decoder(staged["decoder"][0].path, contract)
        source = {"kind": SOURCE_KIND, "variant": variant.name, "encoder": str(src.path),
                  "decoder": None if dec is None else str(dec.path)}
        seconds = time.perf_counter() - t0
        manifest = build_manifest(contract=contract, source=source, files=entries,
                                  options={"graphs": list(protos), "opset": TARGET_OPSET, "verify": bool(verify)},
                                  export_seconds=seconds)
        manifest_path = _swap_in(out_dir, staging, staged, manifest)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: never remove anything else
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    files = {role: [onnx_io.SavedFile(out_dir / f.path.name, f.sha256, f.size) for f in fs] for role, fs in staged.items()}
    return ImportResult(out_dir=out_dir, contract=contract, files=files, encoder_signature=src.signature.describe(),
                        verify_rel_l2=rel, manifest_path=manifest_path, seconds=time.perf_counter() - t0)
