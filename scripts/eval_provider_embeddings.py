#!/usr/bin/env python
"""Accuracy gate for an encoder run under another ONNX Runtime build (e.g. onnxruntime-openvino, which
replaces the `onnxruntime` package and so cannot share an environment with samdeploy's default).

Three steps; the middle one needs only numpy + onnxruntime:

    python scripts/eval_provider_embeddings.py inputs  --model-dir exp --out held_out.npz     # samdeploy env
    /tmp/ov/bin/python scripts/eval_provider_embeddings.py encode --provider openvino --threads 1 \\
        --inputs held_out.npz exp/encoder.onnx int8/encoder.int8.onnx --out emb.npz           # other env
    python scripts/eval_provider_embeddings.py evaluate --model-dir exp --inputs held_out.npz --embeddings emb.npz

`evaluate` runs the held-out gate of `samdeploy calibrate` (same images, prompts and metrics) on the
saved embeddings through the FP32 decoder on ONNX Runtime CPU, twice per encoder file: against the
FP32 encoder run by the same provider, and against the FP32 encoder on ONNX Runtime's CPU provider.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np

from samdeploy.contract import ENCODER_INPUT


def _key(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def cmd_inputs(args) -> int:
    from samdeploy.contract import read_onnx_contract
    from samdeploy.images import held_out_photographs
    from samdeploy.runtime.transforms import preprocess_image

    contract, _ = read_onnx_contract(f"{args.model_dir}/encoder.onnx")
    arrays = {}
    for name, img in held_out_photographs().items():
        x, hw = preprocess_image(img, contract.preprocess)
        arrays[f"x/{name}"] = x
        arrays[f"img/{name}"] = img
    np.savez(args.out, **arrays)
    print(f"wrote {args.out}: {', '.join(held_out_photographs())}")
    return 0


def cmd_encode(args) -> int:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    prov = {"cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}[args.provider]
    data = np.load(args.inputs)
    out = {}
    for i, f in enumerate(args.files):
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        opts = {"device_type": "CPU", "num_of_threads": str(args.threads)} if args.provider == "openvino" else None
        s = ort.InferenceSession(f, so, providers=[(prov, opts)] if opts else [prov])
        for k in data.files:
            if k.startswith("x/"):
                out[f"{i}/{k[2:]}"] = s.run(None, {ENCODER_INPUT: data[k]})[0]
        print(f"encoded with {f} ({prov}, onnxruntime {ort.__version__})")
    np.savez(args.out, files=np.array(args.files), **out)
    return 0


class _Saved:
    """A session stand-in returning saved embeddings for known inputs."""

    def __init__(self, by_key: dict[str, np.ndarray]):
        self.by_key = by_key

    def run(self, _names, feeds):
        return [self.by_key[_key(feeds[ENCODER_INPUT])]]


def cmd_evaluate(args) -> int:
    from samdeploy.calibration.evaluate import Evaluator, ort_session
    from samdeploy.contract import read_onnx_contract

    contract, _ = read_onnx_contract(f"{args.model_dir}/encoder.onnx")
    data, emb = np.load(args.inputs), np.load(args.embeddings)
    names = [k[2:] for k in data.files if k.startswith("x/")]
    images = {n: data[f"img/{n}"] for n in names}
    files = [str(f) for f in emb["files"]]
    saved = [_Saved({_key(data[f"x/{n}"]): emb[f"{i}/{n}"] for n in names}) for i in range(len(files))]
    decoder = ort_session(f"{args.model_dir}/decoder.onnx")
    refs = {"same provider FP32": saved[0], "ORT CPU FP32": ort_session(f"{args.model_dir}/encoder.onnx")}
    for ref_name, ref in refs.items():
        ev = Evaluator(ref, decoder, images, contract)
        for f, s in zip(files[1:], saved[1:]):
            print(f"{f} vs {ref_name}: {ev.evaluate(s).line()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("inputs")
    a.add_argument("--model-dir", required=True)
    a.add_argument("--out", required=True)
    b = sub.add_parser("encode")
    b.add_argument("files", nargs="+", help="FP32 encoder first, then the INT8 encoders")
    b.add_argument("--inputs", required=True)
    b.add_argument("--provider", choices=("cpu", "openvino"), default="cpu")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--out", required=True)
    c = sub.add_parser("evaluate")
    c.add_argument("--model-dir", required=True)
    c.add_argument("--inputs", required=True)
    c.add_argument("--embeddings", required=True)
    args = p.parse_args(argv)
    return {"inputs": cmd_inputs, "encode": cmd_encode, "evaluate": cmd_evaluate}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
