"""ONNX Runtime backend: CPU by default; CUDA / TensorRT execution providers when installed and asked for.

Module-level functions follow the backend-module contract in :mod:`.base`
(``open_graph``, ``read_contract``, ``find_graphs``).
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..._io import EXPORT_STAGING_PREFIX, verify_sha256_cached
from ...contract import VIDEO_CONSTANTS, VIDEO_GRAPHS, ModelContract, read_onnx_contract
from ...errors import BackendUnavailableError, ContractError, InputError, MissingFileError
from .base import BackendBase
from .ort_lowering import lower_file_for_cpu

NAME = "onnxruntime"

# Short names accepted on the command line and in ``providers=``.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
# Each GPU provider falls back to the ones after it for the nodes it cannot run.
_FALLBACKS = {
    "TensorrtExecutionProvider": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "CUDAExecutionProvider": ["CPUExecutionProvider"],
}
_INSTALL_HINTS = {
    "CUDAExecutionProvider": "install onnxruntime-gpu (matching your CUDA/cuDNN) instead of onnxruntime",
    "OpenVINOExecutionProvider": "pip uninstall onnxruntime && pip install onnxruntime-openvino (it replaces the "
    "onnxruntime package and keeps the CPU provider)",
    "TensorrtExecutionProvider": "install onnxruntime-gpu built with TensorRT and make libnvinfer visible "
    "(LD_LIBRARY_PATH), or use --backend tensorrt with engines from `samdeploy build`",
}


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError(
            "onnxruntime is not installed", hint="pip install onnxruntime (or onnxruntime-gpu)"
        ) from None
    return onnxruntime


def resolve_providers(providers: Optional[Sequence[str] | str]) -> list[str]:
    """Normalise ``providers`` (names or aliases, or a comma-separated string) and check availability.

    ``None`` -> CPU only. Asking for a provider that is not installed raises
    :class:`BackendUnavailableError` instead of silently falling back to CPU."""
    ort = _ort()
    if providers is None or providers == "" or providers == []:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    wanted: list[str] = []
    for p in providers:
        full = PROVIDER_ALIASES.get(p.strip().lower(), p.strip())
        if full not in wanted:
            wanted.append(full)
    available = ort.get_available_providers()
    for p in wanted:
        if p not in available:
            raise BackendUnavailableError(
                f"ONNX Runtime execution provider {p} is not available in this installation "
                f"(available: {', '.join(available)})",
                hint=_INSTALL_HINTS.get(p, "install an onnxruntime build with that provider, or use providers=['cpu']"),
            )
    # Add the standard fallbacks after the first requested GPU provider.
    for fb in _FALLBACKS.get(wanted[0], []):
        if fb not in wanted and fb in available:
            wanted.append(fb)
    return wanted


class OrtBackend(BackendBase):
    """One ``onnxruntime.InferenceSession``."""

    name = NAME

    def __init__(
        self,
        path: str,
        role: str,
        *,
        providers: Optional[Sequence[str] | str] = None,
        threads: Optional[int] = None,
        inter_op_threads: Optional[int] = None,
        optimization: str = "all",
        profile: bool = False,
        profile_prefix: Optional[str] = None,
        provider_options: Optional[Sequence[Mapping[str, Any]]] = None,
        int8_lowering: bool = True,
    ) -> None:
        ort = _ort()
        if not os.path.exists(path):
            raise MissingFileError(f"{role} ONNX file not found: {path}", hint="run `samdeploy export` first or fix the path")
        if threads is not None and int(threads) < 0:
            raise InputError(f"threads must be >= 0 (0 = ONNX Runtime default), got {threads}")
        prov = resolve_providers(providers)
        so = ort.SessionOptions()
        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if optimization not in levels:
            raise InputError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
        so.graph_optimization_level = levels[optimization]
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            so.intra_op_num_threads = int(threads)
        if inter_op_threads:
            so.inter_op_num_threads = int(inter_op_threads)
        so.log_severity_level = 3  # errors only; ORT warnings about unused initialisers are noise here
        if profile:
            so.enable_profiling = True
            if profile_prefix:
                so.profile_file_prefix = profile_prefix
        # INT8 QDQ graphs on the CPU provider: fold Linear biases into the integer GEMM (ort_lowering)
        source: str | bytes = str(path)
        self.lowering = None
        if int8_lowering and prov[0] == "CPUExecutionProvider":
            lowered = lower_file_for_cpu(str(path))
            if lowered is not None:
                source, self.lowering = lowered
        if provider_options is None and threads and "OpenVINOExecutionProvider" in prov:
            # OpenVINO keeps its own thread pool: intra_op_num_threads does not limit it
            provider_options = [{"device_type": "CPU", "num_of_threads": str(int(threads))}
                                if p == "OpenVINOExecutionProvider" else {} for p in prov]
        def open_session(src: str | bytes):
            return ort.InferenceSession(src, sess_options=so, providers=prov,
                                        provider_options=list(provider_options) if provider_options else None)

        try:
            try:
                sess = open_session(source)
            except Exception:
                if self.lowering is None:
                    raise
                # a lowering bug must cost speed, not the deployment: run the file as written
                warnings.warn(f"ONNX Runtime rejected samdeploy's INT8 CPU lowering of {path}; running the QDQ "
                              "graph as is (slower). Please report this with the file.", RuntimeWarning, stacklevel=2)
                self.lowering = None
                sess = open_session(str(path))
        except Exception as exc:
            raise BackendUnavailableError(
                f"ONNX Runtime could not load {path}: {str(exc).splitlines()[0][:300]}",
                hint="check the file is a complete samdeploy export (re-export it) and that the providers are installed",
            ) from None
        got = sess.get_providers()
        if prov[0] not in got:  # ORT falls back silently when e.g. CUDA libraries fail to load
            raise BackendUnavailableError(
                f"ONNX Runtime could not initialise {prov[0]} (session runs on {', '.join(got)})",
                hint=_INSTALL_HINTS.get(prov[0], "check the provider's libraries are installed"),
            )
        super().__init__(
            path,
            role,
            tuple(i.name for i in sess.get_inputs()),
            tuple(o.name for o in sess.get_outputs()),
        )
        self.session = sess
        self.providers = got
        self.threads = int(threads) if threads else None
        self._input_types = {i.name: i.type for i in sess.get_inputs()}

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, feeds)
        except Exception as exc:  # ORT raises its own exception types (InvalidArgument, Fail, ...)
            shapes = {k: tuple(v.shape) for k, v in feeds.items()}
            raise InputError(
                f"{self.role} graph rejected inputs {shapes}: {str(exc).splitlines()[0][:300]}",
                hint="check prompt/image shapes against the model contract",
            ) from None
        return dict(zip(self.output_names, outs))

    def describe(self) -> dict[str, Any]:
        ort = _ort()
        so = self.session.get_session_options()
        return {
            "backend": NAME,
            "role": self.role,
            "path": self.path,
            "version": ort.__version__,
            "providers": list(self.providers),
            "device": ort.get_device(),
            "threads": so.intra_op_num_threads or "default",
            "inputs": {i.name: i.shape for i in self.session.get_inputs()},
            "int8_lowering": (
                f"{self.lowering.lowered} QDQ MatMuls -> MatMulIntegerToFloat ({self.lowering.with_bias} with bias)"
                if self.lowering else "none"
            ),
        }

    def end_profiling(self) -> Optional[str]:
        """Stop ORT profiling and return the JSON trace path (when opened with ``profile=True``)."""
        try:
            return self.session.end_profiling()
        except Exception:
            return None

    def close(self) -> None:
        super().close()
        self.session = None  # type: ignore[assignment]  # releases the native session


# ---- backend-module functions ---------------------------------------------------------------------
def open_graph(path: str, role: str, **options: Any) -> OrtBackend:
    return OrtBackend(path, role, **options)


def read_contract(path: str) -> tuple[ModelContract, str]:
    return read_onnx_contract(str(path))


def find_graphs(model_dir: str) -> tuple[str, str]:
    """(encoder, decoder) ONNX files in an export directory.

    Uses ``manifest.json`` when it names the files, else ``encoder.onnx`` / ``decoder.onnx``."""
    return find_files_in_dir(model_dir, (".onnx",), ("encoder.onnx", "decoder.onnx"))


def find_files_in_dir(model_dir: str, exts: tuple[str, ...], defaults: tuple[str, str]) -> tuple[str, str]:
    """(encoder, decoder) files in ``model_dir``, named by its ``manifest.json`` when there is one.

    When the manifest records SHA-256 digests for the files it names, they are verified (cached by
    size / mtime / inode, see :func:`samdeploy._io.verify_sha256_cached`) and a file that does not
    match is refused: a manifest must describe the files next to it. A directory without a readable
    manifest is refused (nothing says its files are one complete export); graphs without one can
    still be named explicitly (``encoder=`` / ``decoder=``)."""
    if not os.path.isdir(model_dir):
        raise MissingFileError(f"model directory not found: {model_dir}", hint="run `samdeploy export --out DIR` first")
    names = list(defaults)
    man = os.path.join(model_dir, "manifest.json")
    to_verify: list[tuple[str, Optional[int], str]] = []
    if not os.path.exists(man):
        staging = any(n.startswith(EXPORT_STAGING_PREFIX) for n in os.listdir(model_dir))
        # Without a manifest nothing says which export the graphs belong to or whether they are
        # complete (a killed export, files copied by hand): refuse rather than guess.
        raise ContractError(
            f"{model_dir} has no manifest.json" + (" and an unfinished `samdeploy export` in it" if staging else ""),
            hint=("wait for the running export to finish, or re-run `samdeploy export --out DIR`" if staging else
                  "export into it with `samdeploy export --out DIR`, or name the graphs explicitly "
                  "(--encoder FILE --decoder FILE; Python: encoder=, decoder=) to use files without a manifest"),
        )
    try:
        with open(man, encoding="utf-8") as fh:
            m = json.load(fh)
        files = m.get("files", {})
        for i, role in enumerate(("encoder", "decoder")):
            entry = files.get(role)
            name = entry.get("path") or entry.get("file") if isinstance(entry, dict) else entry
            if isinstance(name, str) and name.endswith(exts):
                names[i] = name
                if isinstance(entry, dict):  # (path, size, sha256) of the graph and its external data
                    for f in [entry, *(entry.get("external_data") or [])]:
                        if isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str):
                            size = f.get("size")
                            to_verify.append((f["path"], size if isinstance(size, int) else None, f["sha256"]))
        for role in (*VIDEO_GRAPHS, VIDEO_CONSTANTS):  # `export --video`: the tracker's files are checked too
            entry = files.get(role)
            for f in ([entry, *(entry.get("external_data") or [])] if isinstance(entry, dict) else []):
                if isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str):
                    size = f.get("size")
                    to_verify.append((f["path"], size if isinstance(size, int) else None, f["sha256"]))
    except (OSError, ValueError, AttributeError) as exc:
        raise ContractError(
            f"{man} is not a readable samdeploy manifest ({type(exc).__name__})",
            hint="re-run `samdeploy export --out DIR` into this directory",
        ) from None
    paths = tuple(os.path.join(model_dir, n) for n in names)
    for role, p in zip(("encoder", "decoder"), paths):
        if not os.path.exists(p):
            raise MissingFileError(
                f"{role} file not found in {model_dir} (expected {os.path.basename(p)})",
                hint="pass --encoder/--decoder explicitly, or export the model into this directory",
            )
    if to_verify:
        problems = verify_sha256_cached(model_dir, to_verify)
        if problems:
            raise ContractError(
                f"the files in {model_dir} do not match its manifest.json:\n    " + "\n    ".join(problems),
                hint="re-run `samdeploy export --out DIR` into this directory (an export that was "
                "interrupted or files copied over it leave a mismatch)",
            )
    return paths  # type: ignore[return-value]


def available() -> None:
    _ort()
