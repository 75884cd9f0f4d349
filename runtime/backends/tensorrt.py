"""TensorRT backend: runs engines built by ``samdeploy build`` (TensorRT >= 10 + pycuda; no torch).

Written against NVIDIA's documented Python API (named tensors: ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``) and pycuda; it needs an NVIDIA GPU and has not been
executed in CI (no GPU there). Every TensorRT name used here is checked against the recorded API
surfaces of TRT 10.3 / 10.16 / 11.4 by ``tests/test_trt_api_names.py``.

Design (perf.md §4.2, anchors §6.8):

* **lazy**: ``open_graph`` only reads and checks the manifest; the engine is deserialised on the first
  ``run`` (or ``load()``), so a mismatched or missing TensorRT fails before any GPU memory is taken;
* **checked before deserialising**: TensorRT version and GPU model must match the engine manifest
  (:func:`samdeploy.trt.manifest.check_compatible` -> ``EngineMismatchError``: rebuild on the device);
* **allocated once**: device buffers and pinned host buffers sized for the profile's *max* shapes,
  reused by every call; one CUDA stream;
* **CUDA graph** (optional, decoder): ``cuda_graph_batch=B`` captures ``execute_async_v3`` for prompt
  batch B (and the N of the first call) and replays it; other shapes run normally;
* ``close()`` frees the context, engine, buffers and graph (idempotent).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, Mapping, Optional

import numpy as np

from ...contract import DECODER_POINT_COORDS, ENCODER_INPUT, VIDEO_GRAPHS, ModelContract
from ...errors import BackendUnavailableError, ContractError, InputError, MissingFileError
from .base import BackendBase

NAME = "tensorrt"
ENGINE_NAMES = {"encoder": "encoder.engine", "decoder": "decoder.engine", **{r: f"{r}.engine" for r in VIDEO_GRAPHS}}

_INSTALL_HINT = (
    "the TensorRT backend needs an NVIDIA GPU with TensorRT >= 10 and pycuda installed "
    "(Jetson: JetPack 6 ships TensorRT, then `pip install pycuda`; x86: `pip install tensorrt pycuda`). "
    "Without a GPU use --backend onnxruntime with the exported ONNX files"
)


def _import_gpu_stack():
    """(tensorrt, pycuda.driver) or BackendUnavailableError saying what is missing."""
    missing = []
    trt = cuda = None
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception as exc:  # ImportError or OSError (libnvinfer not found)
        missing.append(f"tensorrt ({type(exc).__name__}: {str(exc)[:120]})")
    try:
        import pycuda.driver as cuda  # noqa: PLC0415
    except Exception as exc:
        missing.append(f"pycuda ({type(exc).__name__}: {str(exc)[:120]})")
    if missing:
        raise BackendUnavailableError("TensorRT backend unavailable: cannot import " + "; ".join(missing), hint=_INSTALL_HINT)
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:
        raise BackendUnavailableError(
            f"TensorRT backend unavailable: no usable CUDA GPU ({type(exc).__name__}: {str(exc)[:120]})",
            hint=_INSTALL_HINT,
        ) from None
    return trt, cuda


# ---- module-level backend contract ------------------------------------------------------------------
def read_contract(path: str) -> tuple[ModelContract, str]:
    """The contract and role stored in the engine's manifest (no TensorRT needed)."""
    from ...trt.manifest import read_manifest  # noqa: PLC0415

    m = read_manifest(path)
    return m.model_contract, m.role


def find_graphs(model_dir: str) -> tuple[str, str]:
    """``encoder.engine`` / ``decoder.engine`` in ``model_dir`` (or in its single ``engines*`` subdir)."""
    candidates = [model_dir]
    if os.path.isdir(model_dir):
        subs = sorted(d for d in os.listdir(model_dir) if d.startswith("engines") and os.path.isdir(os.path.join(model_dir, d)))
        candidates += [os.path.join(model_dir, d) for d in subs]
    for d in candidates:
        enc, dec = (os.path.join(d, ENGINE_NAMES[r]) for r in ("encoder", "decoder"))
        if os.path.exists(enc) and os.path.exists(dec):
            return enc, dec
    raise MissingFileError(
        f"no encoder.engine + decoder.engine in {model_dir}",
        hint="build them on this device with `samdeploy build <export_dir> --out <dir>`, "
        "or use --backend onnxruntime with the ONNX files",
    )


def find_video_graphs(encoder_path: str) -> dict[str, str]:
    """The video engines (``samdeploy build --graphs video``) next to the encoder engine, by role."""
    d = os.path.dirname(os.path.abspath(encoder_path))
    paths = {r: os.path.join(d, ENGINE_NAMES[r]) for r in VIDEO_GRAPHS}
    missing = [os.path.basename(p) for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise MissingFileError(
            f"no {', '.join(missing)} next to {encoder_path}",
            hint=f"build them on this device: `samdeploy build EXPORT_DIR --graphs encoder,decoder,video --out {d}` "
            "(EXPORT_DIR from `samdeploy export --video`), or track with --backend onnxruntime",
        )
    return paths


def open_graph(path: str, role: str, **options: Any) -> "TensorRTBackend":
    """Open one engine lazily. Options: ``cuda_graph_batch`` (int, decoder only), ``device`` (int);
    ``threads``/``providers`` (ONNX Runtime options) are accepted and ignored."""
    options.pop("threads", None)
    options.pop("providers", None)
    return TensorRTBackend(path, role, **options)


def profile_limits(contract: ModelContract, role: str, profile) -> dict[str, Any]:
    """What the runtime must respect for an engine built with ``profile`` (no TensorRT needed):
    ``max_batch`` (prompts / images / objects), ``max_points`` and ``min_points`` (decoders) and
    ``input_limits`` = {input: (min shape, max shape)} for the callers that check other axes (the
    Tracker's memory frames R and object pointers P)."""
    if role == "encoder":
        batch_input, points_input = ENCODER_INPUT, None
    elif role == "decoder":
        batch_input = points_input = DECODER_POINT_COORDS
    elif role in VIDEO_GRAPHS and contract.video is not None:
        v = contract.video
        batch_input = {"memory_attention": v.attn_memory, "memory_encoder": v.menc_mask,
                       "track_decoder": v.track_conditioned}[role]
        points_input = v.track_point_coords if role == "track_decoder" else None
    else:
        raise ContractError(f"an engine of role {role!r} is not something this runtime runs",
                            hint="build engines with `samdeploy build` from a `samdeploy export` directory")
    shapes = profile.shapes
    return {
        "max_batch": int(shapes[batch_input][2][0]),
        "max_points": int(shapes[points_input][2][1]) if points_input else None,
        # the profile's smallest N: below it the engine cannot run, so the Predictor pads empty prompts
        "min_points": int(shapes[points_input][0][1]) if points_input else 0,
        "input_limits": {n: (tuple(int(x) for x in mn), tuple(int(x) for x in mx)) for n, (mn, _, mx) in shapes.items()},
    }


class _CudaGraph:
    """CUDA graph capture/replay through the CUDA runtime (libcudart via ctypes; pycuda streams are
    CUstream handles, the same object as cudaStream_t)."""

    def __init__(self) -> None:
        lib = None
        for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0"):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise BackendUnavailableError("CUDA graphs need libcudart", hint="install the CUDA runtime, or drop cuda_graph_batch")
        self.lib = lib
        self.graph = ctypes.c_void_p()
        self.exec = ctypes.c_void_p()

    def _check(self, err: int, what: str) -> None:
        if err != 0:
            raise BackendUnavailableError(f"{what} failed (cudaError {err})", hint="run without cuda_graph_batch")

    def capture(self, stream_handle: int, enqueue) -> None:
        s = ctypes.c_void_p(stream_handle)
        self._check(self.lib.cudaStreamBeginCapture(s, 0), "cudaStreamBeginCapture")  # global mode
        ok = enqueue()
        self._check(self.lib.cudaStreamEndCapture(s, ctypes.byref(self.graph)), "cudaStreamEndCapture")
        if not ok:
            raise BackendUnavailableError("execute_async_v3 failed during CUDA graph capture", hint="run without cuda_graph_batch")
        self._check(self.lib.cudaGraphInstantiate(ctypes.byref(self.exec), self.graph, ctypes.c_ulonglong(0)),
                    "cudaGraphInstantiate")

    def launch(self, stream_handle: int) -> None:
        self._check(self.lib.cudaGraphLaunch(self.exec, ctypes.c_void_p(stream_handle)), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.exec:
            self.lib.cudaGraphExecDestroy(self.exec)
            self.exec = ctypes.c_void_p()
        if self.graph:
            self.lib.cudaGraphDestroy(self.graph)
            self.graph = ctypes.c_void_p()


_PROFILE_HINTS = {
    "encoder": "rebuild the encoder with a larger --max-images",
    "decoder": "split the prompts into smaller batches, or rebuild with larger --max-prompts/--max-points",
    "memory_attention": "rebuild the video graphs with larger --max-objects / --max-cond-frames "
                        "(`samdeploy build EXPORT --graphs video ...`)",
    "memory_encoder": "rebuild the video graphs with a larger --max-objects",
    "track_decoder": "rebuild the video graphs with larger --max-objects / --max-points",
}


class TensorRTBackend(BackendBase):
    name = NAME

    def __init__(self, path: str, role: str, *, cuda_graph_batch: Optional[int] = None, device: int = 0) -> None:
        from ...trt.manifest import check_compatible, read_manifest, verify_engine_file  # noqa: PLC0415
        from ...trt.environment import Environment, tensorrt_version  # noqa: PLC0415

        manifest = read_manifest(path)
        if manifest.role != role:
            raise ContractError(f"{path} is a {manifest.role} engine, not a {role}",
                                hint="pass the encoder and decoder engines in the right order")
        trt, cuda = _import_gpu_stack()  # clean BackendUnavailableError on machines without GPU stack
        from ...trt.environment import gpu_info  # noqa: PLC0415

        here = Environment(tensorrt=tensorrt_version())
        here.gpu_name, here.compute_capability, here.gpu_memory_mb, here.pycuda = gpu_info()
        check_compatible(manifest, here, path)  # BEFORE deserialising
        verify_engine_file(manifest, path)
        prof = manifest.profile
        # canonical contract order (the manifest JSON is key-sorted)
        ins, outs = manifest.model_contract.graph_io(role)
        if set(prof.shapes) != set(ins) or (manifest.io and set(manifest.io) != set(ins) | set(outs)):
            raise ContractError(f"{path} does not have the contract's {role} inputs/outputs",
                                hint="rebuild it from a `samdeploy export` ONNX with `samdeploy build`")
        limits = profile_limits(manifest.model_contract, role, prof)
        super().__init__(path, role, ins, outs, max_batch=limits["max_batch"], max_points=limits["max_points"])
        self.min_points = limits["min_points"]
        self.input_limits = limits["input_limits"]
        self.manifest = manifest
        self._trt, self._cuda = trt, cuda
        self._device = int(device)
        self._cuda_graph_batch = cuda_graph_batch if role == "decoder" else None
        self._loaded = False

    # -- lazy load ----------------------------------------------------------------------------------
    def load(self) -> None:
        if self._loaded:
            return
        trt, cuda = self._trt, self._cuda
        self._ctx = cuda.Device(self._device).retain_primary_context()
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            with open(self.path, "rb") as fh:
                self._engine = self._runtime.deserialize_cuda_engine(fh.read())
            if self._engine is None:
                raise BackendUnavailableError(
                    f"TensorRT could not deserialise {self.path}",
                    hint="rebuild the engine on this device with `samdeploy build`",
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in self._names}
            self._dtype = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in self._names}
            self._dev, self._host = {}, {}
            max_in = {n: tuple(self._engine.get_tensor_profile_shape(n, 0)[2]) for n in self._names if self._is_input[n]}
            for n, shape in max_in.items():
                self._context.set_input_shape(n, shape)
            for n in self._names:
                shape = max_in[n] if self._is_input[n] else tuple(self._context.get_tensor_shape(n))
                nbytes = int(np.prod(shape)) * self._dtype[n].itemsize
                self._dev[n] = cuda.mem_alloc(max(nbytes, 1))
                self._host[n] = cuda.pagelocked_empty(int(np.prod(shape)), self._dtype[n])
                self._context.set_tensor_address(n, int(self._dev[n]))
            self._graph: Optional[_CudaGraph] = None
            self._graph_shapes: Optional[dict[str, tuple[int, ...]]] = None
        finally:
            cuda.Context.pop()
        self._loaded = True

    # -- run ---------------------------------------------------------------------------------------------
    def _check_shapes(self, feeds: Mapping[str, np.ndarray]) -> None:
        for n, arr in feeds.items():
            mn, _, mx = self.manifest.profile.shapes[n]
            if arr.ndim != len(mx) or any(not (lo <= d <= hi) for d, lo, hi in zip(arr.shape, mn, mx)):
                raise InputError(
                    f"{self.role} input {n} has shape {tuple(arr.shape)}, outside the engine profile {tuple(mn)}..{tuple(mx)}",
                    hint=_PROFILE_HINTS.get(self.role, _PROFILE_HINTS["decoder"]),
                )

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_shapes(feeds)
        self.load()
        cuda = self._cuda
        self._ctx.push()
        try:
            shapes = {n: tuple(a.shape) for n, a in feeds.items()}
            for n, arr in feeds.items():
                host = self._host[n][: arr.size]
                host[:] = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1).astype(self._dtype[n], copy=False)
                cuda.memcpy_htod_async(self._dev[n], host, self._stream)
                self._context.set_input_shape(n, shapes[n])
            use_graph = (self._cuda_graph_batch is not None and self.role == "decoder"
                         and shapes[DECODER_POINT_COORDS][0] == self._cuda_graph_batch)
            if use_graph and (self._graph is None or self._graph_shapes != shapes):
                self._capture(shapes)
            if use_graph and self._graph is not None:
                self._graph.launch(self._stream.handle)
            elif not self._context.execute_async_v3(self._stream.handle):
                raise BackendUnavailableError(f"TensorRT execution of {self.path} failed", hint="see the TensorRT log")
            out_shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self.output_names}
            for n in self.output_names:
                size = int(np.prod(out_shapes[n]))
                cuda.memcpy_dtoh_async(self._host[n][:size], self._dev[n], self._stream)
            self._stream.synchronize()
            # copy out of the pinned buffers: the next run overwrites them
            return {n: self._host[n][: int(np.prod(out_shapes[n]))].astype(np.float32).reshape(out_shapes[n])
                    for n in self.output_names}
        finally:
            cuda.Context.pop()

    def _capture(self, shapes: dict[str, tuple[int, ...]]) -> None:
        if self._graph is not None:
            self._graph.destroy()
        # one normal enqueue first so TensorRT finishes shape-dependent setup outside the capture
        self._context.execute_async_v3(self._stream.handle)
        self._stream.synchronize()
        graph = _CudaGraph()
        graph.capture(self._stream.handle, lambda: self._context.execute_async_v3(self._stream.handle))
        self._graph, self._graph_shapes = graph, dict(shapes)

    # -- info / cleanup ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        env = self.manifest.build_environment
        return {
            "backend": NAME,
            "role": self.role,
            "path": self.path,
            "version": env.tensorrt,
            "device": env.gpu_name,
            "precision": self.manifest.precision,
            "build_path": self.manifest.build_path,
            "profile": self.manifest.profiles[0],
            "cuda_graph_batch": self._cuda_graph_batch,
            "threads": None,
            "providers": [],
        }

    def close(self) -> None:
        if getattr(self, "_loaded", False):
            self._ctx.push()
            try:
                if self._graph is not None:
                    self._graph.destroy()
                for buf in self._dev.values():
                    buf.free()
                self._dev.clear()
                self._host.clear()
                self._context = None
                self._engine = None
                self._runtime = None
                self._stream = None
            finally:
                self._cuda.Context.pop()
                self._ctx.detach()
            self._loaded = False
        super().close()


def available() -> None:
    """Backend-module hook (see ``base.py``): raise BackendUnavailableError before any file lookup
    when TensorRT / pycuda / a CUDA GPU is missing. (Added by the runtime engineer.)"""
    _import_gpu_stack()
