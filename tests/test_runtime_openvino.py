"""ONNX Runtime's OpenVINO execution provider on the CPU, for real.

`onnxruntime-openvino` replaces the `onnxruntime` package, so it lives in its own `--target` folder
that subprocesses put first on PYTHONPATH; there it shadows the CPU-only build. Checked against ONNX Runtime's CPU provider in this process:
the FP32 and the INT8 QDQ graphs compute the same network, and `samdeploy predict --providers
openvino` gives the CPU provider's mask and score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures_calibration import minmax_qdq, ort_run, rel_err

OV_WHEEL = "onnxruntime-openvino==1.24.1"


# The provider build is installed ONCE, before the tests, by `.ci/run` / the README test command
# (`pip install --no-deps --target .cache/ort-openvino onnxruntime-openvino==...`): no test downloads.
# Putting that folder first on PYTHONPATH makes *this* interpreter (venv or not) import the OpenVINO
# build of onnxruntime instead of the CPU one; everything else (numpy, samdeploy) resolves as usual.
OV_SITE = Path(os.environ.get("SAMDEPLOY_OPENVINO_SITE", Path(__file__).resolve().parents[1] / ".cache" / "ort-openvino"))


@pytest.fixture(scope="module")
def ov_env() -> dict:
    if not (OV_SITE / "onnxruntime" / "__init__.py").exists():
        pytest.skip(f"{OV_WHEEL} is not installed in {OV_SITE}: run "
                    f"`python -m pip install --no-deps --target {OV_SITE} {OV_WHEEL}` (as .ci/run does)")
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(OV_SITE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = subprocess.run([sys.executable, "-c", "import onnxruntime as o; print(o.__file__); print(o.get_available_providers())"],
                           capture_output=True, text=True, check=True, env=env).stdout
    assert str(OV_SITE) in probe.splitlines()[0]  # the OpenVINO build shadows the CPU onnxruntime
    assert "OpenVINOExecutionProvider" in probe
    return env


_RUN = r"""
import sys, numpy as np, onnxruntime as ort
ort.set_default_logger_severity(3)
path, inp, out = sys.argv[1:4]
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(path, so, providers=[("OpenVINOExecutionProvider", {"device_type": "CPU", "num_of_threads": "1"})])
assert s.get_providers()[0] == "OpenVINOExecutionProvider", s.get_providers()
np.save(out, s.run(None, {"x": np.load(inp)})[0])
"""


def _run_openvino(env: dict, model: onnx.ModelProto, x: np.ndarray, tmp: Path) -> np.ndarray:
    onnx.save(model, tmp / "m.onnx")
    np.save(tmp / "x.npy", x)
    subprocess.run([sys.executable, "-c", _RUN, str(tmp / "m.onnx"), str(tmp / "x.npy"), str(tmp / "y.npy")], check=True, env=env)
    return np.load(tmp / "y.npy")


def test_openvino_runs_fp32_and_int8_qdq_graphs_like_the_cpu_provider(ov_env, tmp_path, tiny_net, tiny_input,
                                                                      tiny_net_onnx):
    x = tiny_input.numpy()
    (fp_cpu,) = ort_run(tiny_net_onnx, {"x": x})
    fp_ov = _run_openvino(ov_env, tiny_net_onnx, x, tmp_path)
    assert rel_err(fp_cpu, fp_ov) <= 1e-4

    # the TensorRT / OpenVINO placement: every Conv, ConvTranspose and Linear input quantized
    q = minmax_qdq(tiny_net, tiny_input, tiny_net_onnx)
    (q_cpu,) = ort_run(q, {"x": x})
    q_ov = _run_openvino(ov_env, q, x, tmp_path)
    # same scales, same integer products; requantization order may differ by a rounding step
    assert rel_err(q_cpu, q_ov) <= 1e-2
    # and both really are the quantized network, not the FP32 one
    assert rel_err(fp_cpu, q_ov) > 5 * rel_err(q_cpu, q_ov)


def test_predict_cli_with_the_openvino_provider(ov_env, exported_model_dir, tmp_path):
    import cv2

    model_dir = exported_model_dir("mobile_sam")
    results = {}
    for prov, env in (("cpu", {**os.environ, "PYTHONWARNINGS": "ignore"}), ("openvino", ov_env)):
        out = tmp_path / prov
        r = subprocess.run(
            [sys.executable, "-m", "samdeploy.cli.main", "predict", "sample:astronaut", "--model-dir", str(model_dir),
             "--providers", prov, "--threads", "1", "--point", "250,150", "--out", str(out), "--json"],
            capture_output=True, text=True, env=env,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads(r.stdout)
        assert summary["providers"][0] == {"cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider"}[prov]
        results[prov] = (summary["scores"][0][0], cv2.imread(str(out / "mask_0.png"), cv2.IMREAD_GRAYSCALE) > 0)
    (s_cpu, m_cpu), (s_ov, m_ov) = results["cpu"], results["openvino"]
    assert abs(s_cpu - s_ov) <= 1e-3
    iou = (m_cpu & m_ov).sum() / max((m_cpu | m_ov).sum(), 1)
    assert m_cpu.sum() > 1000 and iou >= 0.99
