"""Engine manifests: what an engine was built from, with what, on what — and the refusal to load it
anywhere else.

A TensorRT plan is only valid for the TensorRT version and the GPU model it was built with
("engine plan across different models of devices", cuBLASLt mismatches: anchors T9). Every engine
``X.engine`` gets a sibling ``X.engine.json`` written by ``samdeploy build``; the runtime reads it
and calls :func:`check_compatible` *before* deserialising, so a mismatch is a clear
:class:`~samdeploy.errors.EngineMismatchError` ("rebuild on this device") instead of a crash or a
silently wrong result deep inside TensorRT.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .._io import sha256_file, write_json_atomic
from ..contract import ModelContract
from ..errors import BackendUnavailableError, ContractError, EngineMismatchError, MissingFileError
from .environment import Environment
from .profiles import Profile

SCHEMA = "samdeploy.engine/1"
PRECISIONS = ("fp32", "fp16", "int8")


def manifest_path(engine_path: str | os.PathLike) -> str:
    return os.fspath(engine_path) + ".json"


@dataclass
class EngineManifest:
    role: str  # "encoder" | "decoder"
    precision: str  # fp32 | fp16 | int8
    engine_file: str  # basename, next to the manifest
    engine_sha256: str
    source_onnx: str  # the ONNX the user gave (path as given)
    source_onnx_sha256: str
    contract: dict[str, Any]
    environment: dict[str, Any]  # Environment.to_dict() of the build machine
    profiles: list[dict[str, Any]]  # Profile.to_dict() per optimization profile
    build_path: str  # "trt10-weak" | "trt10-strong" | "trt11-strong"
    built_onnx_sha256: str = ""  # the graph TensorRT parsed (mixed-precision rewrite for TRT 11 fp16)
    fp32_layers: list[str] = field(default_factory=list)  # layers/nodes kept in FP32
    options: dict[str, Any] = field(default_factory=dict)  # workspace, DLA, timing cache, ...
    io: dict[str, Any] = field(default_factory=dict)  # tensor name -> {"mode", "dtype"}
    trtexec: str = ""  # the equivalent trtexec command line
    samdeploy_version: str = ""
    created_utc: str = ""
    schema: str = SCHEMA
    # TensorRT bugs known to affect this engine's graph on the TensorRT that built it
    # (samdeploy.trt.known_issues; e.g. the SAM2 decoder miscompile before 10.9). Older manifests: [].
    known_issues: list[dict[str, Any]] = field(default_factory=list)

    # -- convenience --------------------------------------------------------------------------
    @property
    def model_contract(self) -> ModelContract:
        return ModelContract.from_dict(self.contract)

    @property
    def build_environment(self) -> Environment:
        return Environment.from_dict(self.environment)

    @property
    def profile(self) -> Profile:
        return Profile.from_dict(self.profiles[0])

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineManifest":
        if d.get("schema") != SCHEMA:
            raise ContractError(
                f"unknown engine manifest schema {d.get('schema')!r} (expected {SCHEMA})",
                hint="rebuild the engine with this samdeploy version: samdeploy build",
            )
        try:
            names = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise ContractError(f"malformed engine manifest ({exc})", hint="rebuild the engine: samdeploy build") from None


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_manifest(engine_path: str | os.PathLike, manifest: EngineManifest) -> str:
    path = manifest_path(engine_path)
    write_json_atomic(path, manifest.to_dict())
    return path


def read_manifest(engine_path: str | os.PathLike) -> EngineManifest:
    engine_path = os.fspath(engine_path)
    if not os.path.exists(engine_path):
        raise MissingFileError(f"engine not found: {engine_path}", hint="build it with `samdeploy build`")
    path = manifest_path(engine_path)
    if not os.path.exists(path):
        raise ContractError(
            f"{engine_path} has no samdeploy manifest ({os.path.basename(path)})",
            hint="only engines built by `samdeploy build` can be loaded (the manifest carries the model contract "
            "and the TensorRT/GPU the engine was built for); rebuild it with `samdeploy build`",
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ContractError(f"cannot read engine manifest {path}: {exc}", hint="rebuild the engine: samdeploy build") from None
    return EngineManifest.from_dict(data)


# ---- compatibility ---------------------------------------------------------------------------------
def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def same_trt_version(built: str, running: str) -> bool:
    """Exact match; a 3-component version ("10.3.0", what Jetson's python package reports) matches
    the same release with a build number ("10.3.0.30")."""
    a, b = _version_tuple(built), _version_tuple(running)
    n = min(len(a), len(b))
    return n >= 3 and a[:n] == b[:n] and (len(a) == len(b) or n == 3)


def _describe(env: Environment) -> str:
    parts = [f"TensorRT {env.tensorrt or '?'}"]
    if env.gpu_name or env.compute_capability:
        parts.append(f"GPU {env.gpu_name or '?'} (sm {env.compute_capability or '?'})")
    if env.jetpack:
        parts.append(f"JetPack {env.jetpack}")
    return ", ".join(parts)


def check_compatible(manifest: EngineManifest, current: Environment, engine_path: str = "") -> None:
    """Raise :class:`EngineMismatchError` if the engine cannot run on ``current``.

    Compared: TensorRT version (exact), GPU model name and compute capability. Fields the current
    machine cannot report (e.g. no pycuda yet) are not compared; TensorRT itself must be present."""
    built = manifest.build_environment
    what = engine_path or manifest.engine_file
    if not current.tensorrt:
        raise BackendUnavailableError(
            f"cannot load {what}: TensorRT is not installed on this machine",
            hint="install TensorRT (JetPack ships it; on x86: pip install tensorrt) and pycuda, "
            "or run the ONNX files with --backend onnxruntime",
        )
    problems = []
    if built.tensorrt and not same_trt_version(built.tensorrt, current.tensorrt):
        problems.append(f"TensorRT {built.tensorrt} vs {current.tensorrt} here")
    if built.gpu_name and current.gpu_name and built.gpu_name.strip() != current.gpu_name.strip():
        problems.append(f"GPU '{built.gpu_name}' vs '{current.gpu_name}' here")
    if built.compute_capability and current.compute_capability and built.compute_capability != current.compute_capability:
        problems.append(f"compute capability {built.compute_capability} vs {current.compute_capability} here")
    if problems:
        raise EngineMismatchError(
            f"engine {what} was built for {_describe(built)}; it cannot run here ({'; '.join(problems)})",
            hint="TensorRT engines are specific to the TensorRT version and GPU model: rebuild on this device "
            f"from the ONNX files with `samdeploy build <model_dir> --precision {manifest.precision}`",
        )


def verify_engine_file(manifest: EngineManifest, engine_path: str) -> None:
    """The engine on disk is the one the manifest describes (not replaced or truncated)."""
    digest = sha256_file(engine_path)
    if digest != manifest.engine_sha256:
        raise EngineMismatchError(
            f"{engine_path} does not match its manifest (sha256 {digest[:12]}… vs {manifest.engine_sha256[:12]}…)",
            hint="the engine was replaced or damaged after it was built; rebuild it with `samdeploy build`",
        )


def load_checked(engine_path: str, current: Optional[Environment] = None) -> EngineManifest:
    """Read the manifest and refuse an engine built elsewhere — before anything is deserialised."""
    from .environment import probe

    manifest = read_manifest(engine_path)
    check_compatible(manifest, current if current is not None else probe(), engine_path)
    verify_engine_file(manifest, engine_path)
    return manifest
