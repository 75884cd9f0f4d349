"""``samdeploy doctor``: pre-flight ONNX files for TensorRT and print this machine's environment."""

from __future__ import annotations

import argparse
import json

HELP = "pre-flight an ONNX file for TensorRT and print the environment"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("onnx", nargs="*", help="ONNX files (or export directories) to check")
    p.add_argument("--trt-version", default=None,
                   help="target TensorRT as MAJOR.MINOR (default: the installed one, else 10.3 = JetPack 6)")
    p.add_argument("--json", action="store_true", help="print findings and environment as JSON")


def _files(paths: list[str]) -> list[str]:
    import os

    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".onnx"))
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    import re

    from ..errors import InputError
    from ..trt.environment import probe, tensorrt_distribution_version
    from ..trt.preflight import check_file, has_errors

    env = probe()
    target = None
    version = args.trt_version or env.tensorrt
    if version:
        m = re.match(r"^(\d+)\.(\d+)", version)
        if not m:
            raise InputError(f"--trt-version must look like 10.3, not {version!r}")
        target = (int(m.group(1)), int(m.group(2)))
    results = {f: check_file(f, target) for f in _files(args.onnx)}
    if args.json:
        print(json.dumps({"environment": env.to_dict(),
                          "findings": {f: [x.to_dict() for x in fs] for f, fs in results.items()}}, indent=2))
    else:
        print("environment")
        for line in env.lines():
            print("  " + line)
        if not env.tensorrt:
            dist = tensorrt_distribution_version()
            if dist:
                print(f"  (a TensorRT {dist} package is installed but cannot be imported: libnvinfer or the GPU driver is missing)")
        tgt = "%d.%d" % target if target else "10.3 (JetPack 6, the oldest supported)"
        for f, findings in results.items():
            errors = sum(x.severity == "error" for x in findings)
            warns = sum(x.severity == "warning" for x in findings)
            print(f"\n{f}: {errors} error(s), {warns} warning(s) for TensorRT {tgt}")
            for x in findings:
                print("  " + x.line())
            if not findings:
                print("  OK: nothing TensorRT's ONNX parser is known to reject")
    return 1 if any(has_errors(fs) for fs in results.values()) else 0
