#!/usr/bin/env python3
"""Record the Python API surface of the TensorRT versions samdeploy claims to support.

Writes ``trt/api_surface/tensorrt-<version>.json``: for every class of the ``tensorrt`` module its
attribute names, for every enum its members, plus the module-level names. The test
``tests/test_trt_api_names.py`` checks every TensorRT name our code uses against these files, so a
renamed or removed API (TRT 11 dropped ``BuilderFlag.FP16``, calibrators, ...) fails CI on a machine
without a GPU.

How the surface is obtained (no GPU, no NVIDIA index needed):

1. ``pip download --no-deps tensorrt-cu12-bindings==<version>``: the real compiled bindings wheel
   from PyPI (``tensorrt_bindings/tensorrt.so``). The matching ``tensorrt-cu12-libs`` on PyPI is only
   an sdist that fetches libnvinfer from NVIDIA's own index at install time, which is not reachable
   here, so libnvinfer is not available.
2. ``tensorrt.so`` imports exactly nine C entry points from libnvinfer / libnvonnxparser /
   libnvinfer_plugin (``createInferBuilder_INTERNAL``, ``createNvOnnxParser_INTERNAL``, ...; listed by
   ``nm -D --undefined-only``). We compile three tiny stub libraries with those SONAMEs that export the
   nine symbols (each returns NULL/0) so the module can be *imported*; nothing is ever called.
3. The pybind11 module registers every class, property, method and enum member at import, so
   ``dir()`` / ``__members__`` give the exact names of that release.

Usage::

    python scripts/record_trt_api.py                 # the default versions
    python scripts/record_trt_api.py 10.3.0 11.4.0.106
    python scripts/record_trt_api.py --inspect DIR   # (internal) introspect an unpacked wheel
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# version -> why we record it
DEFAULT_VERSIONS = {
    "10.3.0": "JetPack 6.1/6.2 (Jetson Orin) ships TensorRT 10.3; the TRT 10 (weakly typed) code path",
    "10.16.1.11": "newest TensorRT 10.x on PyPI (desktop); the TRT 10 code path",
    "11.4.0.106": "TensorRT 11.4 (desktop, JetPack 7.x); the TRT 11 (strongly typed) code path",
}
PACKAGE = "tensorrt-cu12-bindings"
OUT_DIR = Path(__file__).resolve().parent.parent / "trt" / "api_surface"

# The nine native entry points tensorrt.so imports, by library.
STUBS = {
    "libnvinfer": [
        "void* createInferBuilder_INTERNAL(void* a, int b) { return 0; }",
        "void* createInferRefitter_INTERNAL(void* a, void* b, int c) { return 0; }",
        "void* createInferRuntime_INTERNAL(void* a, int b) { return 0; }",
        "void* getBuilderPluginRegistry(int a) { return 0; }",
        "void* getPluginRegistry(void) { return 0; }",
    ],
    "libnvonnxparser": [
        "void* createNvOnnxParser_INTERNAL(void* a, void* b, int c) { return 0; }",
        "void* createNvOnnxParserRefitter_INTERNAL(void* a, void* b, int c) { return 0; }",
        "int getNvOnnxParserVersion(void) { return 0; }",
    ],
    "libnvinfer_plugin": ["int initLibNvInferPlugins(void* a, const char* b) { return 0; }"],
}


def _inspect(wheel_dir: str) -> dict:
    """Run inside a subprocess whose LD_LIBRARY_PATH points at the stubs."""
    sys.path.insert(0, wheel_dir)
    import tensorrt_bindings as trt  # noqa: PLC0415

    classes, enums, functions = {}, {}, []
    for name in sorted(dir(trt)):
        if name.startswith("_"):
            continue
        obj = getattr(trt, name)
        if isinstance(obj, type):
            attrs = sorted(a for a in dir(obj) if not a.startswith("_"))
            members = getattr(obj, "__members__", None)
            if isinstance(members, dict) and members:
                enums[name] = sorted(members)
            classes[name] = attrs
        elif callable(obj):
            functions.append(name)
    return {
        "version": trt.__version__,
        "module_names": sorted(n for n in dir(trt) if not n.startswith("_")),
        "functions": sorted(functions),
        "classes": classes,
        "enums": enums,
    }


def _build_stubs(major: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for lib, bodies in STUBS.items():
        src = out / f"{lib}.c"
        src.write_text("/* introspection stub: never called */\n" + "\n".join(bodies) + "\n")
        soname = f"{lib}.so.{major}"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-o", str(out / soname), f"-Wl,-soname,{soname}", str(src)], check=True
        )


def _undefined_trt_symbols(so: Path) -> list[str]:
    text = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in text.splitlines() if line.strip()]
    return sorted(n for n in names if "@" not in n and not n.startswith(("Py", "_Py", "dl", "pthread_", "_ITM", "_ZGT", "__")))


def record(version: str, why: str, work: Path) -> Path:
    major = int(version.split(".")[0])
    dl = work / version
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dl),
         f"{PACKAGE}=={version}"],
        check=True,
    )
    wheel = next(dl.glob("*.whl"))
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    unpacked = dl / "x"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    so = next((unpacked / "tensorrt_bindings").glob("tensorrt*.so"))
    wanted = _undefined_trt_symbols(so)
    stubbed = sorted(s.split("(")[0].split()[-1].lstrip("*") for bodies in STUBS.values() for s in bodies)
    if wanted != stubbed:
        raise SystemExit(f"{version}: tensorrt.so imports {wanted}, stubs provide {stubbed}; update STUBS")
    stubs = work / f"stubs{major}"
    _build_stubs(major, stubs)
    env = dict(os.environ, LD_LIBRARY_PATH=str(stubs))
    proc = subprocess.run(
        [sys.executable, __file__, "--inspect", str(unpacked)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{version}: import failed:\n{proc.stderr}")
    surface = json.loads(proc.stdout)
    surface["obtained"] = {
        "how": (
            "imported the real compiled bindings module (tensorrt_bindings/tensorrt.so) from the PyPI wheel "
            f"{wheel.name} with libnvinfer/libnvonnxparser/libnvinfer_plugin replaced by stub libraries that "
            "only export the nine entry points the module links against; names read with dir() and "
            "pybind11 enum __members__. No GPU, no libnvinfer, nothing executed."
        ),
        "package": f"{PACKAGE}=={version}",
        "wheel": wheel.name,
        "wheel_sha256": sha,
        "native_entry_points_stubbed": wanted,
        "python": sys.version.split()[0],
        "recorded_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "script": "scripts/record_trt_api.py",
        "why": why,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"tensorrt-{version}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(surface, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="*", help="TensorRT versions (default: %s)" % ", ".join(DEFAULT_VERSIONS))
    ap.add_argument("--inspect", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inspect:
        json.dump(_inspect(args.inspect), sys.stdout)
        return 0
    versions = args.versions or list(DEFAULT_VERSIONS)
    with tempfile.TemporaryDirectory(prefix="trtapi-") as tmp:
        for v in versions:
            out = record(v, DEFAULT_VERSIONS.get(v, "requested on the command line"), Path(tmp))
            data = json.loads(out.read_text())
            print(f"{v}: {len(data['classes'])} classes, {len(data['enums'])} enums -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
