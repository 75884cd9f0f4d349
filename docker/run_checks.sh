#!/usr/bin/env bash
# Run inside a samdeploy image: print the environment (samdeploy doctor) and the tests that apply.
#   docker/run_checks.sh cpu|gpu|jetson
set -euo pipefail

kind=${1:-cpu}
cd "$(dirname "$0")/.."

echo "== samdeploy doctor ($kind)"
samdeploy doctor

case "$kind" in
  cpu)
    # the whole GPU-independent suite
    python -m pytest -q tests
    ;;
  gpu)
    # TensorRT planning, manifests, pre-flight and API names; then the engine path on the GPU
    python -m pytest -q tests/test_trt_*.py tests/test_doctor_*.py
    ;;
  jetson)
    # device runtime image: no torch, so only the tests that need neither torch nor exports
    # (--noconftest: the shared fixtures import torch)
    python -m pytest -q --noconftest tests/test_trt_api_names.py tests/test_trt_manifest.py
    ;;
  *)
    echo "unknown kind: $kind (cpu, gpu or jetson)" >&2
    exit 2
    ;;
esac
