"""The ``trtexec`` command line equivalent to a ``samdeploy build``.

Printed by every build (and by ``samdeploy build --dry-run``) so that users can reproduce, benchmark
(``--useCudaGraph``, ``--noDataTransfers``) or debug (``--verbose --dumpLayerInfo``) an engine with
NVIDIA's own tool. Flags (TensorRT "Command-Line Programs" reference and the 10.x/11.x trtexec
migration pages):

  --onnx= --saveEngine=                 input / output
  --minShapes= --optShapes= --maxShapes= one optimization profile, ``name:1x2x2,other:1x2``
  --memPoolSize=workspace:<N>M          TRT >= 10 (``--workspace`` was removed in 10.0)
  --timingCacheFile=                    read + update the timing cache
  --fp16                                TRT 10 weak typing only (removed in 11)
  --precisionConstraints=obey --layerPrecisions=name:fp32,... --layerOutputTypes=name:fp32,...
                                        TRT 10 weak typing only (removed in 11)
  --stronglyTyped                       TRT 10 strong typing; default and a no-op on TRT 11
  --useDLACore=N --allowGPUFallback     DLA with GPU fallback
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .profiles import Profile, shape_spec


@dataclass
class TrtexecPlan:
    onnx: str
    engine: str
    profile: Profile
    trt_major: int
    precision: str  # fp32 | fp16 | int8
    strongly_typed: bool
    workspace_mb: int = 2048
    timing_cache: Optional[str] = None
    fp32_layers: Sequence[str] = field(default_factory=tuple)  # TRT 10 weak typing: layers pinned to FP32
    dla_core: Optional[int] = None
    builder_optimization_level: Optional[int] = None


def trtexec_args(plan: TrtexecPlan) -> list[str]:
    args = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={plan.engine}"]
    if not plan.profile.is_static():
        for which, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            args.append(f"{flag}={shape_spec(plan.profile, which)}")
    else:
        args.append(f"--shapes={shape_spec(plan.profile, 'opt')}")
    args.append(f"--memPoolSize=workspace:{int(plan.workspace_mb)}M")
    if plan.timing_cache:
        args.append(f"--timingCacheFile={plan.timing_cache}")
    if plan.strongly_typed:
        # TRT 11: always strongly typed; the flag is accepted and ignored, so keep it for clarity on 10.x.
        args.append("--stronglyTyped")
    else:
        if plan.trt_major >= 11:
            raise ValueError("TensorRT 11 has no weak typing; build strongly typed")
        if plan.precision in ("fp16", "int8"):
            args.append("--fp16")
        if plan.precision == "int8":
            args.append("--int8")  # explicit Q/DQ network: weak typing still needs the INT8 flag on 10.x
        if plan.fp32_layers:
            spec = ",".join(f"{name}:fp32" for name in plan.fp32_layers)
            args += ["--precisionConstraints=obey", f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}"]
    if plan.dla_core is not None:
        args += [f"--useDLACore={int(plan.dla_core)}", "--allowGPUFallback"]
    if plan.builder_optimization_level is not None:
        args.append(f"--builderOptimizationLevel={int(plan.builder_optimization_level)}")
    args.append("--skipInference")
    return args


def trtexec_command(plan: TrtexecPlan) -> str:
    """Shell-quoted command line (layer names contain '/' and ':'-free but may contain spaces)."""
    return " ".join(shlex.quote(a) for a in trtexec_args(plan))
