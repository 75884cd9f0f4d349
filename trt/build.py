"""``samdeploy build``: ONNX (FP32 or QDQ INT8) -> TensorRT engine + engine manifest.

Two layers:

* :func:`plan_build` — everything that does not need TensorRT or a GPU: reads the contract, checks the
  precision against the file (Q/DQ or not), generates the optimization profile, picks the TensorRT
  code path, lists the layers kept in FP32 and writes the equivalent ``trtexec`` command. Tested in
  CI for both TensorRT majors.
* :func:`build_engine` — the thin part that drives the TensorRT Python API. It cannot run without an
  NVIDIA GPU and has not been executed in CI; every TensorRT name it uses is checked against the real
  API of TRT 10.3 / 10.16 / 11.4 by ``tests/test_trt_api_names.py``.

Code paths (``BuildPlan.build_path``):

``trt10-weak``   TensorRT 10.x, default. ``BuilderFlag.FP16`` (+ ``INT8`` for a QDQ graph), the FP32
                 layers pinned with ``layer.precision`` / ``set_output_type`` and
                 ``OBEY_PRECISION_CONSTRAINTS``. Works on JetPack 6 (TRT 10.3).
``trt10-strong`` TensorRT 10.x with ``--strongly-typed``: same as trt11-strong plus the
                 ``STRONGLY_TYPED`` network flag.
``trt11-strong`` TensorRT 11.x (weak typing was removed): the precision is written into the ONNX by
                 :mod:`samdeploy.trt.mixed_precision` and the network is strongly typed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from .. import __version__
from .._io import atomic_path, sha256_file, write_bytes_atomic
from ..contract import VIDEO_GRAPHS, read_onnx_contract
from ..errors import BackendUnavailableError, ContractError, InputError, SamDeployError
from .environment import Environment, probe
from .manifest import PRECISIONS, EngineManifest, now_utc, write_manifest
from .profiles import Profile, decoder_ranges, encoder_ranges, make_profile, onnx_input_dims, video_ranges
from .trtexec import TrtexecPlan, trtexec_command

SUPPORTED_TRT_MAJORS = (10, 11)


class BuildError(SamDeployError):
    """TensorRT could not parse or build the network."""


@dataclass
class BuildOptions:
    precision: str = "fp16"
    max_prompts: int = 16
    opt_prompts: Optional[int] = None
    max_points: int = 8
    opt_points: Optional[int] = None
    max_images: int = 1
    opt_images: Optional[int] = None
    # video graphs (`samdeploy export --video`): objects per call, conditioning frames per object
    max_objects: int = 4
    opt_objects: Optional[int] = None
    max_cond_frames: int = 4
    workspace_mb: int = 2048
    timing_cache: Optional[str] = None  # default: <out_dir>/timing.cache
    dla_core: Optional[int] = None
    builder_optimization_level: Optional[int] = None
    keep_fp32: Sequence[str] = ()  # extra ONNX node names to keep in FP32
    strongly_typed: bool = False  # TRT 10 only; TRT 11 is always strongly typed

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.workspace_mb < 16:
            raise InputError(f"--workspace-mb {self.workspace_mb} is too small", hint="use at least 256 (MiB)")
        if self.dla_core is not None and self.dla_core < 0:
            raise InputError(f"--dla-core must be >= 0, not {self.dla_core}")
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise InputError("--opt-level must be 0..5")


@dataclass
class BuildPlan:
    role: str
    source_onnx: str
    engine_path: str
    precision: str  # what this graph is built as (a non-QDQ graph under --precision int8 -> fp16)
    trt_major: int
    build_path: str
    strongly_typed: bool
    profile: Profile
    fp32_layers: list[str]
    parse_onnx: str  # the file TensorRT parses (the mixed-precision rewrite on the strongly typed paths)
    needs_mixed_precision_onnx: bool
    has_qdq: bool
    timing_cache: str
    notes: list[str] = field(default_factory=list)
    trtexec: str = ""
    # TensorRT bugs known to hit this graph on the target version (known_issues.KnownIssue.to_dict());
    # printed as warnings by `samdeploy build` and recorded in the engine manifest
    known_issues: list[dict] = field(default_factory=list)


def has_qdq(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def plan_build(onnx_path: str, out_dir: str, options: BuildOptions, trt_major: int,
               trt_version: Optional[Sequence[int]] = None) -> BuildPlan:
    """Decide everything about a build without TensorRT (see module docstring).

    ``trt_version`` = the target TensorRT as (major, minor) when known (the installed one); without
    it only ``trt_major`` is known, and version-dependent known issues are judged on that."""
    import onnx  # noqa: PLC0415

    from .known_issues import known_issues  # noqa: PLC0415
    from .mixed_precision import fp32_nodes  # noqa: PLC0415

    options.validate()
    if trt_major not in SUPPORTED_TRT_MAJORS:
        raise BackendUnavailableError(
            f"TensorRT {trt_major}.x is not supported (samdeploy builds with TensorRT 10.x or 11.x)",
            hint="upgrade TensorRT (JetPack 6 ships 10.3)",
        )
    contract, role = read_onnx_contract(onnx_path)
    if role not in ("encoder", "decoder", *VIDEO_GRAPHS):
        raise ContractError(f"{onnx_path} does not say which samdeploy graph it is (encoder, decoder or a video graph)",
                            hint="re-export it with `samdeploy export`")
    model = onnx.load(onnx_path, load_external_data=False)
    qdq = has_qdq(model)
    notes: list[str] = []
    precision = options.precision
    if qdq and precision != "int8":
        raise InputError(
            f"{onnx_path} is quantized (Q/DQ nodes) but --precision is {precision}",
            hint="build QDQ files with --precision int8, or build the FP32 export for fp32/fp16",
        )
    if precision == "int8" and not qdq:
        precision = "fp16"
        notes.append(f"{role}: no Q/DQ nodes in {os.path.basename(onnx_path)} -> built as fp16 "
                     "(INT8 needs the QDQ file from `samdeploy calibrate`)")

    if role == "decoder":
        ranges = decoder_ranges(options.max_prompts, options.max_points, options.opt_prompts, options.opt_points)
    elif role in VIDEO_GRAPHS:
        ranges = video_ranges(contract, options.max_objects, options.opt_objects, options.max_cond_frames,
                              options.max_points, options.opt_points)
    else:
        ranges = encoder_ranges(options.max_images, options.opt_images)
    profile = make_profile(contract, role, ranges, onnx_input_dims(model))

    strongly = trt_major >= 11 or options.strongly_typed
    build_path = "trt11-strong" if trt_major >= 11 else ("trt10-strong" if strongly else "trt10-weak")
    reduced = precision in ("fp16", "int8")
    keep = fp32_nodes(model, options.keep_fp32) if reduced else []
    unknown = sorted(set(options.keep_fp32) - {n.name for n in model.graph.node})
    if unknown:
        raise InputError(f"--keep-fp32 names no node of {os.path.basename(onnx_path)}: {unknown[:5]}",
                         hint="use ONNX node names (see Netron or `samdeploy doctor --nodes`)")
    needs_mixed = strongly and reduced
    out = Path(out_dir)
    parse_onnx = str(out / f"{role}.{precision}.mixed.onnx") if needs_mixed else onnx_path
    if options.dla_core is not None and role == "encoder" and contract.family in ("sam", "slimsam"):
        notes.append("DLA cannot run ViT attention/LayerNorm (no activation x activation MatMul, no Pow/Sqrt/Erf): "
                     "most of this encoder falls back to the GPU")
    plan = BuildPlan(
        role=role,
        source_onnx=onnx_path,
        engine_path=str(out / f"{role}.engine"),
        precision=precision,
        trt_major=trt_major,
        build_path=build_path,
        strongly_typed=strongly,
        profile=profile,
        fp32_layers=keep,
        parse_onnx=parse_onnx,
        needs_mixed_precision_onnx=needs_mixed,
        has_qdq=qdq,
        timing_cache=options.timing_cache or str(out / "timing.cache"),
        notes=notes,
        known_issues=[i.to_dict() for i in known_issues(contract, role, tuple(trt_version or (trt_major,)))],
    )
    plan.trtexec = trtexec_command(
        TrtexecPlan(
            onnx=plan.parse_onnx,
            engine=plan.engine_path,
            profile=profile,
            trt_major=trt_major,
            precision=precision,
            strongly_typed=strongly,
            workspace_mb=options.workspace_mb,
            timing_cache=plan.timing_cache,
            fp32_layers=keep if not strongly else (),
            dla_core=options.dla_core,
            builder_optimization_level=options.builder_optimization_level,
        )
    )
    return plan


def write_parse_onnx(plan: BuildPlan) -> Optional[str]:
    """Write the mixed-precision ONNX a strongly typed build parses (no TensorRT needed)."""
    if not plan.needs_mixed_precision_onnx:
        return None
    import onnx  # noqa: PLC0415

    from .mixed_precision import convert_to_mixed_precision  # noqa: PLC0415

    model = onnx.load(plan.source_onnx)  # with external data
    mixed, _ = convert_to_mixed_precision(model, keep_nodes=plan.fp32_layers)
    with atomic_path(plan.parse_onnx) as tmp:
        onnx.save(mixed, str(tmp))
    return plan.parse_onnx


def find_onnx_graphs(paths: Sequence[str], precision: str) -> dict[str, str]:
    """Role -> ONNX file, from explicit files and/or directories (export or calibrate output).

    In a directory, every ``*.onnx`` with a samdeploy contract is considered; with ``--precision int8``
    a quantized (Q/DQ) graph is preferred for each role, otherwise a non-quantized one."""
    import onnx  # noqa: PLC0415

    found: dict[str, list[tuple[str, bool]]] = {}
    for p in paths:
        files = sorted(str(f) for f in Path(p).glob("*.onnx")) if os.path.isdir(p) else [p]
        if os.path.isdir(p) and not files:
            raise InputError(f"no .onnx files in {p}", hint="run `samdeploy export --out DIR` first")
        for f in files:
            if f.endswith(".mixed.onnx"):
                continue  # our own intermediate files
            try:
                _, role = read_onnx_contract(f)
            except ContractError:
                if os.path.isdir(p):
                    continue
                raise
            q = has_qdq(onnx.load(f, load_external_data=False))
            found.setdefault(role, []).append((f, q))
    chosen: dict[str, str] = {}
    for role, cands in found.items():
        want_q = precision == "int8"
        pref = [f for f, q in cands if q == want_q] or [f for f, q in cands if not q] or [cands[0][0]]
        chosen[role] = pref[0]
    if not chosen:
        raise InputError(f"no samdeploy graph (encoder/decoder ONNX) found in {list(paths)}",
                         hint="pass the directory written by `samdeploy export` (or calibrate)")
    return chosen


# ---- the TensorRT part (needs tensorrt + a GPU) ----------------------------------------------------
def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception as exc:  # ImportError, or OSError when libnvinfer is missing
        raise BackendUnavailableError(
            f"TensorRT is not usable here ({type(exc).__name__}: {str(exc)[:200]})",
            hint="engines must be built on the target device with TensorRT installed (JetPack ships it; "
            "x86: pip install tensorrt); `samdeploy build --dry-run --trt-major 10|11` prints the plan and "
            "trtexec command without TensorRT",
        ) from None
    return trt


def kept_layer(layer_name: str, keep: set[str]) -> bool:
    """Whether a TensorRT layer comes from an ONNX node in ``keep``. TensorRT's ONNX parser names a
    node's layers through ``generateUniqueName(…, basename=node name)`` (onnx-tensorrt
    ``ImporterContext::registerLayer``): the first keeps the node name; further layers of the same
    node are assumed to get a numeric ``_<n>`` suffix (not verified against a real TensorRT here)."""
    if layer_name in keep:
        return True
    base, sep, suffix = layer_name.rpartition("_")
    return bool(sep) and suffix.isdigit() and base in keep


def _configure_weak_typing_trt10(trt, network, config, plan: BuildPlan) -> list[str]:
    """TensorRT 10 weak typing (removed in 11; the API-name test holds these names to TRT 10.x only):
    enable FP16 (+ INT8 for Q/DQ graphs), pin the kept layers (by ONNX node name) and every
    normalization/softmax layer to FP32 and make the builder obey. Returns the pinned layer names."""
    if plan.precision not in ("fp16", "int8"):
        return []
    config.set_flag(trt.BuilderFlag.FP16)
    if plan.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ network; no calibrator
    keep = set(plan.fp32_layers)
    # INormalizationLayer accumulates in FP32 by default even with BuilderFlag.FP16 (TensorRT 10
    # developer guide, "Control of Computational Precision"); pinning it also keeps its input and
    # output FP32, so the residual stream around it is not rounded to FP16 there.
    always = (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not kept_layer(layer.name, keep) and layer.type not in always:
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in (trt.float32, trt.float16):
                layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return pinned


def build_engine(
    plan: BuildPlan,
    options: BuildOptions,
    env: Optional[Environment] = None,
    log: Callable[[str], None] = print,
) -> EngineManifest:
    """Build ``plan`` with the TensorRT Python API and write the engine + manifest + timing cache."""
    trt = import_tensorrt()
    env = env or probe()
    write_parse_onnx(plan)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(plan.parse_onnx):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(
            f"TensorRT's ONNX parser rejected {plan.parse_onnx}: " + "; ".join(errors[:5]),
            hint="run `samdeploy doctor` on the ONNX file for the known causes and fixes",
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in plan.profile.shapes.items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)

    if plan.precision == "fp32":
        # TF32 is on by default (BuilderFlag.TF32: 10-bit mantissa products on Ampere+, i.e. Orin):
        # an "fp32" engine must be FP32, so the fp32 parity thresholds of check/jetson verify hold.
        config.clear_flag(trt.BuilderFlag.TF32)
    pinned: list[str] = []
    if not plan.strongly_typed:
        pinned = _configure_weak_typing_trt10(trt, network, config, plan)
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = int(options.builder_optimization_level)

    cache_bytes = Path(plan.timing_cache).read_bytes() if os.path.exists(plan.timing_cache) else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)

    log(f"building {plan.role} ({plan.precision}, {plan.build_path}) ...")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(
            f"TensorRT could not build the {plan.role} engine (see the TensorRT log above)",
            hint="try a larger --workspace-mb, fewer --max-prompts/--max-points/--max-objects, or --precision fp32",
        )
    seconds = time.perf_counter() - t0
    write_bytes_atomic(plan.engine_path, bytes(memoryview(serialized)))
    write_bytes_atomic(plan.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))

    io = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io[t.name] = {"mode": "input", "dtype": str(t.dtype)}
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io[t.name] = {"mode": "output", "dtype": str(t.dtype)}
    contract, _ = read_onnx_contract(plan.source_onnx)
    from .known_issues import known_issues, parse_trt_version  # noqa: PLC0415

    built_with = parse_trt_version(env.tensorrt)  # the TensorRT that really built it decides
    issues = ([i.to_dict() for i in known_issues(contract, plan.role, built_with)] if built_with
              else list(plan.known_issues))
    for issue in issues:
        log(f"warning: {plan.role} engine: {issue['message']}; {issue['remedy']}")
    manifest = EngineManifest(
        role=plan.role,
        precision=plan.precision,
        engine_file=os.path.basename(plan.engine_path),
        engine_sha256=sha256_file(plan.engine_path),
        source_onnx=plan.source_onnx,
        source_onnx_sha256=sha256_file(plan.source_onnx),
        contract=contract.to_dict(),
        environment=env.to_dict(),
        profiles=[plan.profile.to_dict()],
        build_path=plan.build_path,
        built_onnx_sha256=sha256_file(plan.parse_onnx),
        fp32_layers=pinned or list(plan.fp32_layers),
        options={
            "workspace_mb": options.workspace_mb,
            "dla_core": options.dla_core,
            "timing_cache": plan.timing_cache,
            "builder_optimization_level": options.builder_optimization_level,
            "strongly_typed": plan.strongly_typed,
            "build_seconds": round(seconds, 2),
        },
        io=io,
        trtexec=plan.trtexec,
        samdeploy_version=__version__,
        created_utc=now_utc(),
        known_issues=issues,
    )
    write_manifest(plan.engine_path, manifest)
    return manifest
