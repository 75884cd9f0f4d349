"""``samdeploy build``: TensorRT engines from exported (or calibrated) ONNX, on the target device."""

from __future__ import annotations

import argparse
import os

from ..contract import VIDEO_GRAPHS

HELP = "build TensorRT engines (fp32/fp16/int8) from exported ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="export directory (encoder.onnx + decoder.onnx), calibrate output, or ONNX files")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                   help="int8 = explicit quantization from the QDQ file of `samdeploy calibrate`, FP16 elsewhere")
    p.add_argument("--out", help="engine directory (default: <first input dir>/engines-<precision>)")
    p.add_argument("--graphs", default="encoder,decoder",
                   help="comma-separated graphs to build: encoder, decoder, memory_attention, memory_encoder, "
                   "track_decoder; 'video' = the three video graphs of an `export --video` directory, "
                   "'all' = every graph found (default: encoder,decoder)")
    p.add_argument("--max-prompts", type=int, default=16, help="decoder profile: largest prompt batch B")
    p.add_argument("--opt-prompts", type=int, default=None, help="decoder profile: B to optimise for (default 1)")
    p.add_argument("--max-points", type=int, default=8,
                   help="decoder profile: largest N points per prompt, counting box corners and the padding point")
    p.add_argument("--opt-points", type=int, default=None, help="decoder profile: N to optimise for (default 2)")
    p.add_argument("--max-images", type=int, default=1, help="encoder profile: largest image batch (dynamic-batch exports)")
    p.add_argument("--max-objects", type=int, default=4,
                   help="video graphs: most objects per call (the Tracker splits more objects into chunks)")
    p.add_argument("--opt-objects", type=int, default=None, help="video graphs: objects to optimise for (default 1)")
    p.add_argument("--max-cond-frames", type=int, default=4,
                   help="video graphs: most prompted (conditioning) frames per object; memory frames = 6 + this, "
                   "object pointers = 15 + this")
    p.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace limit in MiB")
    p.add_argument("--timing-cache", default=None, help="timing cache file, read and updated (default: <out>/timing.cache)")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core with GPU fallback (Jetson AGX/NX)")
    p.add_argument("--opt-level", type=int, default=None, help="builder optimization level 0..5")
    p.add_argument("--keep-fp32", action="append", default=[], help="extra ONNX node name to keep in FP32 (repeatable)")
    p.add_argument("--strongly-typed", action="store_true",
                   help="TensorRT 10: build strongly typed from a mixed-precision ONNX (always the case on TensorRT 11)")
    p.add_argument("--dry-run", action="store_true",
                   help="only plan: print profiles, FP32 layers and the trtexec command (works without TensorRT)")
    p.add_argument("--trt-major", type=int, choices=(10, 11), default=None,
                   help="TensorRT major version to plan for when TensorRT is not installed (with --dry-run)")


def calibration_target_warnings(path: str, role: str) -> list[str]:
    """An INT8 file calibrated for another runtime quantizes other layers than TensorRT wants."""
    from ..contract import read_onnx_contract

    contract, _ = read_onnx_contract(path)
    cal = dict(contract.provenance or {}).get("calibration") or {}
    target = cal.get("target")
    if not cal:
        return [f"{role} {path} is not an INT8 calibration output: TensorRT will build it in FP16"]
    if target is None:
        return [f"{role} {path} does not record its calibration target (calibrated by an older samdeploy)"]
    if target != "tensorrt":
        return [f"{role} {path} was calibrated with --target {target}, which quantizes the layers that runtime "
                f"runs fast, not TensorRT's placement: rerun `samdeploy calibrate --target tensorrt` for this engine"]
    return []


def select_graphs(spec: str, found) -> list[str]:
    """``--graphs`` -> roles in build order; ``video`` = the three video graphs, ``all`` = what was found."""
    from ..errors import InputError

    known = ("encoder", "decoder", *VIDEO_GRAPHS)
    out: list[str] = []
    for g in (x.strip() for x in str(spec).split(",")):
        if not g:
            continue
        names = VIDEO_GRAPHS if g == "video" else ([r for r in known if r in found] if g == "all" else (g,))
        for n in names:
            if n not in known:
                raise InputError(f"--graphs: unknown graph {n!r}",
                                 hint=f"use any of {', '.join(known)}, or 'video' / 'all'")
            if n not in out:
                out.append(n)
    if not out:
        raise InputError("--graphs names no graph", hint="e.g. --graphs encoder,decoder or --graphs all")
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..trt.build import BuildOptions, build_engine, find_onnx_graphs, plan_build, write_parse_onnx
    from ..trt.environment import probe

    options = BuildOptions(
        precision=args.precision, max_prompts=args.max_prompts, opt_prompts=args.opt_prompts,
        max_points=args.max_points, opt_points=args.opt_points, max_images=args.max_images,
        max_objects=args.max_objects, opt_objects=args.opt_objects, max_cond_frames=args.max_cond_frames,
        workspace_mb=args.workspace_mb, timing_cache=args.timing_cache, dla_core=args.dla_core,
        builder_optimization_level=args.opt_level, keep_fp32=tuple(args.keep_fp32), strongly_typed=args.strongly_typed,
    )
    options.validate()
    # The inputs first: a wrong path is reported as such, on any machine, before TensorRT is probed.
    found = find_onnx_graphs(args.inputs, args.precision)
    graphs = select_graphs(args.graphs, found)
    missing = [g for g in graphs if g not in found]
    if missing:
        video = [g for g in missing if g in VIDEO_GRAPHS]
        raise InputError(f"no {', '.join(missing)} ONNX among {args.inputs}",
                         hint=("export the video graphs with `samdeploy export --model sam2.1_hiera_t --video --out DIR`"
                               if video else "pass the export directory or the files"))
    env = probe()
    major = env.trt_major
    if major is None:
        if not args.dry_run:
            from ..trt.build import import_tensorrt

            import_tensorrt()  # raises BackendUnavailableError with the hint
        if args.trt_major is None:
            raise InputError("TensorRT is not installed here, so its version is unknown",
                             hint="add --trt-major 10 (JetPack 6) or --trt-major 11 to plan for that version")
        major = args.trt_major
    elif args.trt_major is not None and args.trt_major != major:
        raise InputError(f"--trt-major {args.trt_major} but TensorRT {env.tensorrt} is installed",
                         hint="drop --trt-major; engines are built with the installed TensorRT")
    if args.precision == "int8":
        for role in graphs:
            for warning in calibration_target_warnings(found[role], role):
                print(f"warning: {warning}")
    first_dir = args.inputs[0] if os.path.isdir(args.inputs[0]) else os.path.dirname(os.path.abspath(args.inputs[0]))
    out = args.out or os.path.join(first_dir, f"engines-{args.precision}")
    from ..trt.known_issues import parse_trt_version

    plans = [plan_build(found[g], out, options, major, parse_trt_version(env.tensorrt)) for g in graphs]
    print(f"TensorRT {env.tensorrt or f'{major}.x (planned, not installed)'}; GPU {env.gpu_name or 'not present'}")
    for plan in plans:
        for issue in plan.known_issues:  # known TensorRT miscompiles: the build goes on, the user is told
            print(f"warning: {plan.role}: {issue['message']}\n  remedy: {issue['remedy']}")
    for plan in plans:
        print(f"\n{plan.role}: {plan.source_onnx} -> {plan.engine_path}")
        print(f"  precision {plan.precision}, path {plan.build_path}, FP32 layers kept: {len(plan.fp32_layers)}")
        for name, (mn, opt, mx) in plan.profile.shapes.items():
            print(f"  profile {name:17s} min {list(mn)}  opt {list(opt)}  max {list(mx)}")
        for note in plan.notes:
            print(f"  note: {note}")
        print(f"  trtexec: {plan.trtexec}")
    if args.dry_run:
        for plan in plans:
            if write_parse_onnx(plan):
                print(f"wrote {plan.parse_onnx} (mixed-precision ONNX for the strongly typed build)")
        return 0
    for plan in plans:
        m = build_engine(plan, options, env)
        print(f"wrote {plan.engine_path} ({m.options.get('build_seconds')} s) + {os.path.basename(plan.engine_path)}.json")
    return 0
