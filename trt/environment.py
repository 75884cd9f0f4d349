"""What this machine has for TensorRT: versions, GPU, Jetson release, power mode.

Every probe is optional and never raises: a missing library, driver or file gives ``None`` and is
printed as "not present". The same :class:`Environment` is written into engine manifests at build
time and compared against the running machine before an engine is deserialised
(:func:`samdeploy.trt.manifest.check_compatible`).

Sources, in order of preference:
  TensorRT  ``import tensorrt`` -> ``tensorrt.__version__``; else the installed distribution's version
  CUDA      ``cudaRuntimeGetVersion`` from libcudart (ctypes); driver version from libcuda
  cuDNN     ``cudnnGetVersion`` from libcudnn (ctypes)
  GPU       pycuda (``Device(0).name()``, ``compute_capability()``); else ``nvidia-smi``;
            on Jetson (no nvidia-smi) the model name from /proc/device-tree/model
  JetPack   /etc/nv_tegra_release (L4T release) and ``dpkg-query -W nvidia-jetpack``
  power     ``nvpmodel -q``
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Optional

NOT_PRESENT = "not present"

# L4T (Jetson Linux) major.minor -> JetPack release, for when the nvidia-jetpack package is absent
# (containers). From NVIDIA's JetPack archive: L4T R36.4 = JetPack 6.1/6.2, R36.3 = 6.0, R35.x = 5.1.x.
L4T_TO_JETPACK = {
    "38.2": "7.0",
    "36.4": "6.1/6.2",
    "36.3": "6.0",
    "36.2": "6.0 DP",
    "35.6": "5.1.4",
    "35.5": "5.1.3",
    "35.4": "5.1.2",
    "35.3": "5.1.1",
}


@dataclass
class Environment:
    tensorrt: Optional[str] = None
    cuda_runtime: Optional[str] = None
    cuda_driver: Optional[str] = None
    cudnn: Optional[str] = None
    gpu_name: Optional[str] = None
    compute_capability: Optional[str] = None  # "8.7"
    gpu_memory_mb: Optional[int] = None
    l4t: Optional[str] = None  # "36.4.3"
    jetpack: Optional[str] = None  # "6.2" (dpkg) or the L4T mapping
    power_mode: Optional[str] = None  # nvpmodel -q
    pycuda: Optional[str] = None
    ort_providers: list[str] = field(default_factory=list)
    onnxruntime: Optional[str] = None

    @property
    def is_jetson(self) -> bool:
        return self.l4t is not None

    @property
    def trt_major(self) -> Optional[int]:
        return trt_major(self.tensorrt)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Environment":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def lines(self) -> list[str]:
        """Human-readable report (what ``samdeploy doctor`` prints)."""

        def show(v: Any) -> str:
            if v is None or v == [] or v == "":
                return NOT_PRESENT
            return ", ".join(v) if isinstance(v, list) else str(v)

        gpu = self.gpu_name
        if gpu and self.compute_capability:
            gpu = f"{gpu} (compute capability {self.compute_capability}"
            gpu += f", {self.gpu_memory_mb} MiB)" if self.gpu_memory_mb else ")"
        return [
            f"TensorRT            {show(self.tensorrt)}",
            f"CUDA runtime        {show(self.cuda_runtime)}"
            + ("  (library only: no CUDA driver, so no GPU can run it)" if self.cuda_runtime and not self.cuda_driver else ""),
            f"CUDA driver         {show(self.cuda_driver)}",
            f"cuDNN               {show(self.cudnn)}",
            f"pycuda              {show(self.pycuda)}",
            f"GPU                 {show(gpu)}",
            f"Jetson L4T          {show(self.l4t)}",
            f"JetPack             {show(self.jetpack)}",
            f"power mode          {show(self.power_mode)}",
            f"onnxruntime         {show(self.onnxruntime)}",
            f"ORT providers       {show(self.ort_providers)}",
        ]


def trt_major(version: Optional[str]) -> Optional[int]:
    if not version:
        return None
    m = re.match(r"(\d+)", version)
    return int(m.group(1)) if m else None


# ---- individual probes ----------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 10.0) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt  # noqa: PLC0415

        return str(tensorrt.__version__)
    except Exception:  # ImportError, or libnvinfer missing (OSError) — both mean "not usable"
        pass
    return None


def tensorrt_distribution_version() -> Optional[str]:
    """Version of an installed-but-unimportable TensorRT wheel (for doctor's explanation)."""
    from importlib import metadata

    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu12-bindings", "tensorrt-cu13-bindings"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _load_first(names: list[str]):
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError:
            continue
    return None


def cuda_versions() -> tuple[Optional[str], Optional[str]]:
    """(runtime, driver) as "12.6" strings via libcudart / libcuda."""

    def fmt(v: int) -> str:
        return f"{v // 1000}.{(v % 1000) // 10}"

    runtime = driver = None
    lib = _load_first(["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"])
    if lib is not None:
        v = ctypes.c_int(0)
        try:
            if lib.cudaRuntimeGetVersion(ctypes.byref(v)) == 0 and v.value:
                runtime = fmt(v.value)
        except AttributeError:
            pass
    drv = _load_first(["libcuda.so.1", "libcuda.so"])
    if drv is not None:
        v = ctypes.c_int(0)
        try:
            if drv.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value:
                driver = fmt(v.value)
        except AttributeError:
            pass
    return runtime, driver


def _pip_nvidia_libs(pattern: str) -> list[str]:
    """Libraries shipped by NVIDIA's pip wheels (``nvidia-cudnn-cu12`` etc.): they live under
    ``site-packages/nvidia/*/lib``, which is not on the loader path, so plain CDLL misses them."""
    import glob  # noqa: PLC0415
    import site  # noqa: PLC0415
    import sys  # noqa: PLC0415

    roots = [*sys.path, *(site.getsitepackages() if hasattr(site, "getsitepackages") else [])]
    found: list[str] = []
    for root in dict.fromkeys(roots):
        found += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", pattern)))
    return found


def cudnn_version() -> Optional[str]:
    lib = _load_first(["libcudnn.so", "libcudnn.so.9", "libcudnn.so.8", *_pip_nvidia_libs("libcudnn.so*")])
    if lib is None:
        return None
    try:
        lib.cudnnGetVersion.restype = ctypes.c_size_t
        v = int(lib.cudnnGetVersion())
    except AttributeError:
        return None
    # cuDNN 9: major*10000 + minor*100 + patch; cuDNN 8: major*1000 + minor*100 + patch
    if v >= 90000:
        return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
    return f"{v // 1000}.{(v % 1000) // 100}.{v % 100}"


def gpu_info() -> tuple[Optional[str], Optional[str], Optional[int], Optional[str]]:
    """(name, compute capability, memory MiB, pycuda version)."""
    try:
        import pycuda  # noqa: PLC0415
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        if cuda.Device.count() > 0:
            dev = cuda.Device(0)
            major, minor = dev.compute_capability()
            return dev.name(), f"{major}.{minor}", int(dev.total_memory() // (1 << 20)), str(pycuda.VERSION_TEXT)
    except Exception:
        pass
    out = _run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"])
    if out and out.strip():
        first = out.strip().splitlines()[0]
        parts = [p.strip() for p in first.split(",")]
        if len(parts) >= 3:
            mem = int(float(parts[2])) if re.match(r"^[\d.]+$", parts[2]) else None
            return parts[0], parts[1], mem, None
    model = read_text("/proc/device-tree/model")
    if model and "jetson" in model.lower():
        return model.strip("\x00 \n"), None, None, None
    return None, None, None, None


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def parse_nv_tegra_release(text: Optional[str]) -> Optional[str]:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` -> ``"36.4.3"``."""
    if not text:
        return None
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_dpkg_jetpack(text: Optional[str]) -> Optional[str]:
    """``nvidia-jetpack\t6.2+b77`` -> ``"6.2"``."""
    if not text:
        return None
    m = re.search(r"nvidia-jetpack\s+([\d.]+)", text)
    return m.group(1) if m else None


def jetpack_from_l4t(l4t: Optional[str]) -> Optional[str]:
    if not l4t:
        return None
    major_minor = ".".join(l4t.split(".")[:2])
    jp = L4T_TO_JETPACK.get(major_minor)
    return f"{jp} (from L4T {l4t})" if jp else None


def parse_nvpmodel(text: Optional[str]) -> Optional[str]:
    """``NV Power Mode: MAXN\\n0`` -> ``"MAXN (mode 0)"``."""
    if not text:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    num = re.search(r"^\s*(\d+)\s*$", text, re.M)
    return f"{m.group(1)} (mode {num.group(1)})" if num else m.group(1)


def ort_info() -> tuple[Optional[str], list[str]]:
    try:
        import onnxruntime as ort  # noqa: PLC0415

        return ort.__version__, list(ort.get_available_providers())
    except Exception:
        return None, []


def probe(tegra_release_path: str = "/etc/nv_tegra_release") -> Environment:
    """Probe this machine. Cheap (no engine, no CUDA context kept)."""
    env = Environment()
    env.tensorrt = tensorrt_version()
    env.cuda_runtime, env.cuda_driver = cuda_versions()
    env.cudnn = cudnn_version()
    env.gpu_name, env.compute_capability, env.gpu_memory_mb, env.pycuda = gpu_info()
    env.l4t = parse_nv_tegra_release(read_text(tegra_release_path))
    if env.l4t:
        env.jetpack = parse_dpkg_jetpack(_run(["dpkg-query", "-W", "nvidia-jetpack"])) or jetpack_from_l4t(env.l4t)
        env.power_mode = parse_nvpmodel(_run(["nvpmodel", "-q"]))
    env.onnxruntime, env.ort_providers = ort_info()
    return env
