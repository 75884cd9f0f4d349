#!/usr/bin/env python
"""Encoder latency of several ONNX files under one ONNX Runtime execution provider, interleaved.

Standalone (numpy + onnxruntime only), so it also runs in an environment where `onnxruntime` is a
different build, e.g. `onnxruntime-openvino`, which replaces the `onnxruntime` package:

    python -m venv /tmp/ov && /tmp/ov/bin/pip install onnxruntime-openvino numpy
    /tmp/ov/bin/python scripts/bench_ort_providers.py --provider openvino --threads 1 \\
        exp/encoder.onnx int8-tensorrt/encoder.int8.onnx int8-ort-cpu/encoder.int8.onnx

Prints the median latency of each file and its speed-up over the first one, and the cosine of each
file's output to the first one's (a sanity check that the provider ran the graph as intended). The
plain CPU provider runs the QDQ files *without* samdeploy's INT8 lowering here (see
``runtime/backends/ort_lowering.py``); use ``samdeploy bench`` or ``scripts/bench_int8.py`` for that.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np

from samdeploy.contract import ENCODER_INPUT

PROVIDERS = {"cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="ONNX encoders taking 'image' [1,3,S,S], each optionally FILE@PROVIDER "
                   "(cpu | openvino; default --provider); the first is the baseline")
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=9)
    args = p.parse_args(argv)

    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    sessions = {}
    for spec in args.files:
        f, _, prov = spec.partition("@")
        prov = prov or args.provider
        name = PROVIDERS.get(prov)
        if name not in ort.get_available_providers():
            print(f"error: provider {prov!r} is not in this onnxruntime build ({ort.get_available_providers()})",
                  file=sys.stderr)
            return 2
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        opts = {"device_type": "CPU", "num_of_threads": str(args.threads)} if prov == "openvino" else {}
        sessions[spec] = ort.InferenceSession(f, so, providers=[(name, opts)] if opts else [name])
    size = sessions[args.files[0]].get_inputs()[0].shape[-1]
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, size, size)).astype(np.float32)
    outs = {f: s.run(None, {ENCODER_INPUT: x})[0] for f, s in sessions.items()}
    times: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(args.runs):
        for f, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {ENCODER_INPUT: x})
            times[f].append(time.perf_counter() - t)
    base = float(np.median(times[args.files[0]]))
    ref = outs[args.files[0]].ravel().astype(np.float64)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo", encoding="utf-8")
                if ln.startswith("model name")), "?") if sys.platform.startswith("linux") else "?"
    print(f"onnxruntime {ort.__version__}, {cpu}, {args.threads} thread(s), {args.runs} interleaved runs")
    for f in args.files:
        med = float(np.median(times[f]))
        o = outs[f].ravel().astype(np.float64)
        cos = float(o @ ref / (np.linalg.norm(o) * np.linalg.norm(ref)))
        print(f"  {f}: {med * 1e3:.0f} ms  x{base / med:.2f}  cosine to first {cos:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
