"""Inference backends behind one interface (:mod:`.base`) and :func:`load_model`.

    from samdeploy.contract import ENCODER_INPUT
    from samdeploy.runtime.backends import load_model
    pair = load_model("out/mobile_sam")                       # ONNX Runtime, CPU
    pair = load_model(encoder="enc.onnx", decoder="dec.onnx", threads=2)
    pair = load_model("out/engines", backend="tensorrt")      # needs TensorRT + a GPU
    pair.encoder.run({ENCODER_INPUT: x})[pair.contract.encoder.output_names[0]]

Backends are imported lazily: importing this package never imports onnxruntime or tensorrt.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Optional, Sequence

from ...contract import (
    DECODER_INPUTS,
    DECODER_OUTPUTS,
    ENCODER_INPUT,
    ensure_same_model,
)
from ...errors import BackendUnavailableError, ContractError, InputError, MissingFileError
from .base import Backend, BackendBase, GraphPair

__all__ = ["Backend", "BackendBase", "GraphPair", "load_model", "backend_module", "BACKENDS"]

# backend name -> module; aliases map to the same module.
BACKENDS = {
    "onnxruntime": "samdeploy.runtime.backends.onnxruntime",
    "ort": "samdeploy.runtime.backends.onnxruntime",
    "tensorrt": "samdeploy.runtime.backends.tensorrt",
    "trt": "samdeploy.runtime.backends.tensorrt",
}
_CANONICAL = {"ort": "onnxruntime", "trt": "tensorrt"}


def backend_module(backend: str):
    """Import the module implementing ``backend`` (raises :class:`BackendUnavailableError`)."""
    key = str(backend).lower()
    if key not in BACKENDS:
        raise InputError(
            f"unknown backend {backend!r}", hint=f"choose one of: {', '.join(sorted(set(_CANONICAL.get(k, k) for k in BACKENDS)))}"
        )
    try:
        return importlib.import_module(BACKENDS[key])
    except ImportError as exc:
        what = _CANONICAL.get(key, key)
        hint = (
            "the TensorRT backend needs NVIDIA TensorRT (python package `tensorrt`), pycuda/cuda-python and a "
            "CUDA GPU (e.g. a Jetson with JetPack 6); on other machines use --backend onnxruntime"
            if what == "tensorrt"
            else "pip install onnxruntime (or onnxruntime-gpu)"
        )
        raise BackendUnavailableError(f"the {what} backend cannot be imported ({exc})", hint=hint) from None


def _precision_of(contract: Any, graph: Any) -> str:
    """An engine knows its build precision; an ONNX file's contract provenance records calibration."""
    try:
        built = graph.describe().get("precision")
    except Exception:  # a third-party backend without describe(): fall back to the contract
        built = None
    return str(built or dict(contract.provenance or {}).get("precision") or "fp32").lower()


def load_model(
    model_dir: Optional[str | os.PathLike] = None,
    *,
    encoder: Optional[str | os.PathLike] = None,
    decoder: Optional[str | os.PathLike] = None,
    backend: str = "onnxruntime",
    providers: Optional[Sequence[str] | str] = None,
    threads: Optional[int] = None,
    **options: Any,
) -> GraphPair:
    """Open an encoder + decoder pair and the contract they share.

    Files come from ``model_dir`` (manifest or default names) unless ``encoder``/``decoder`` are
    given explicitly (either may override the directory's file). Both files' contracts are read
    *before* any graph is loaded; files from different models raise :class:`ContractError`.
    ``providers`` / ``threads`` go to the backend (ONNX Runtime: execution providers, intra-op
    threads); other keyword options are passed through to the backend's ``open_graph``."""
    mod = backend_module(backend)
    name = _CANONICAL.get(str(backend).lower(), str(backend).lower())
    if hasattr(mod, "available"):
        mod.available()
    enc_path, dec_path = _resolve_paths(mod, model_dir, encoder, decoder)

    ce, role_e = mod.read_contract(enc_path)
    cd, role_d = mod.read_contract(dec_path)
    for path, role, want in ((enc_path, role_e, "encoder"), (dec_path, role_d, "decoder")):
        if role and role != want:
            raise ContractError(
                f"{path} is a {role} graph but was given as the {want}",
                hint="swap the --encoder/--decoder arguments",
            )
    ensure_same_model(ce, cd)
    # Each file is authoritative for its own half of the contract.
    contract = dataclasses.replace(ce, prompts=cd.prompts, decoder=cd.decoder)
    if contract.decoder.layout != "single":
        raise ContractError(
            f"decoder layout {contract.decoder.layout!r} is not supported by this runtime",
            hint="upgrade samdeploy on this machine, or re-export with the installed version",
        )

    enc = mod.open_graph(enc_path, "encoder", providers=providers, threads=threads, **options)
    try:
        dec = mod.open_graph(dec_path, "decoder", providers=providers, threads=threads, **options)
    except BaseException:
        enc.close()
        raise
    pair = GraphPair(enc, dec, contract, name, enc_path, dec_path, dict(options, providers=providers, threads=threads),
                     precisions={"encoder": _precision_of(ce, enc), "decoder": _precision_of(cd, dec)})
    try:
        _check_io(pair)
    except BaseException:
        pair.close()
        raise
    return pair


def _resolve_paths(mod, model_dir, encoder, decoder) -> tuple[str, str]:
    if model_dir is None and (encoder is None or decoder is None):
        raise InputError(
            "no model given", hint="pass a model directory (--model-dir) or both --encoder and --decoder"
        )
    enc = str(encoder) if encoder is not None else None
    dec = str(decoder) if decoder is not None else None
    if enc is None or dec is None:
        d_enc, d_dec = mod.find_graphs(str(model_dir))
        enc = enc or d_enc
        dec = dec or d_dec
    for role, p in (("encoder", enc), ("decoder", dec)):
        if not os.path.exists(p):
            raise MissingFileError(f"{role} file not found: {p}", hint="run `samdeploy export` first or fix the path")
    return enc, dec


def _check_io(pair: GraphPair) -> None:
    def need(b: Backend, names, kind: str, have) -> None:
        missing = [n for n in names if n not in have]
        if missing:
            raise ContractError(
                f"{b.role} graph {b.path} lacks {kind} {missing} (has {list(have)})",
                hint="this file does not follow its samdeploy contract; re-export it with `samdeploy export`",
            )

    need(pair.encoder, (ENCODER_INPUT,), "input", pair.encoder.input_names)
    need(pair.encoder, pair.contract.encoder.output_names, "output", pair.encoder.output_names)
    need(pair.decoder, DECODER_INPUTS, "inputs", pair.decoder.input_names)
    need(pair.decoder, DECODER_OUTPUTS, "outputs", pair.decoder.output_names)

