"""``samdeploy`` entry point.

Each subcommand lives in its own module under ``samdeploy.cli`` exposing::

    HELP: str                                   one-line summary
    def add_arguments(p: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    exit code: 0 ok, 1 check/gate failed, 2 usage/input error

Modules are imported lazily, only for the subcommand that runs, so ``samdeploy predict`` on a
device never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Sequence

# name -> module (in pipeline order; shown in this order by --help)
COMMANDS: dict[str, str] = {
    "export": "samdeploy.cli.export_cmd",
    "import": "samdeploy.cli.import_cmd",
    "check": "samdeploy.cli.check_cmd",
    "calibrate": "samdeploy.cli.calibrate_cmd",
    "build": "samdeploy.cli.build_cmd",
    "doctor": "samdeploy.cli.doctor_cmd",
    "predict": "samdeploy.cli.predict_cmd",
    "everything": "samdeploy.cli.everything_cmd",
    "stream": "samdeploy.cli.stream_cmd",
    "track": "samdeploy.cli.track_cmd",
    "bench": "samdeploy.cli.bench_cmd",
    "models": "samdeploy.cli.models_cmd",
}

# One-line help strings kept here so `samdeploy --help` imports no subcommand module.
SUMMARIES: dict[str, str] = {
    "export": "export encoder/decoder ONNX + manifest from a checkpoint (or --random-weights)",
    "import": "wrap a foreign encoder ONNX (NanoSAM, EdgeSAM, Meta-style) + a decoder in the samdeploy contract",
    "check": "parity of exported ONNX vs the PyTorch model on real photographs; exit 1 on failure",
    "calibrate": "INT8 post-training quantization (Hessian-guided scale search) to QDQ ONNX + report",
    "build": "build TensorRT engines (fp32/fp16/int8) from exported ONNX",
    "doctor": "pre-flight an ONNX file for TensorRT and print the environment",
    "predict": "segment an image from point/box prompts; writes overlay PNG + masks",
    "everything": "segment everything (grid or TinySAM hierarchical); overlay PNG + COCO RLE JSON",
    "stream": "segment a video file / camera / RTSP stream frame by frame",
    "track": "track objects through a video / camera / RTSP stream with a SAM2 video export",
    "bench": "latency benchmark: encoder, decoder per prompt across batch sizes, pre/post",
    "models": "list the checkpoint registry / download a checkpoint",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a two-line usage error (the message and where the help is), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n  hint: see `{self.prog} --help`\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from samdeploy import __version__

    parser = _Parser(
        prog="samdeploy",
        description="Segment-Anything-family models: export -> check -> calibrate -> build -> run.",
    )
    parser.add_argument("--version", action="version", version=f"samdeploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        p = sub.add_parser(name, help=SUMMARIES[name], description=SUMMARIES[name])
        if name == command:
            _load(name).add_arguments(p)
    return parser


def _load(name: str):
    return importlib.import_module(COMMANDS[name])


# Flags whose values may start with a minus sign (``--point -5,180``); argparse would read the value
# as an option, so such pairs are joined into ``--point=-5,180`` before parsing.
_COORDINATE_FLAGS = ("--point", "--box")


def _join_negative_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a in _COORDINATE_FLAGS and len(nxt) > 1 and nxt[0] == "-" and (nxt[1].isdigit() or nxt[1] == "."):
            out.append(f"{a}={nxt}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from samdeploy.errors import SamDeployError

    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_load(args.command).run(args) or 0)
    except SamDeployError as exc:
        print(f"samdeploy {args.command}: error: {exc}", file=sys.stderr)
        if os.environ.get("SAMDEPLOY_DEBUG"):
            raise
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"samdeploy {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line instead of a traceback (SAMDEPLOY_DEBUG shows it)
        if os.environ.get("SAMDEPLOY_DEBUG"):
            raise
        print(f"samdeploy {args.command}: internal error ({type(exc).__name__}: {exc})\n"
              "  hint: this is a samdeploy bug; rerun with SAMDEPLOY_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
