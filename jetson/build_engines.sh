#!/usr/bin/env bash
# Build every samdeploy engine ON the Jetson (engines are specific to the TensorRT version and GPU).
#
#   jetson/build_engines.sh EXPORT_DIR [OUT_DIR]
#
# Environment: PRECISIONS (default "fp16 fp32"; add int8 when a QDQ file from `samdeploy calibrate`
# is in EXPORT_DIR or CALIB_DIR), MAX_PROMPTS (16), MAX_POINTS (8), WORKSPACE_MB (2048 — keep it
# small on an 8 GB Orin Nano), DLA_CORE (unset = GPU only), CALIB_DIR (extra directory with QDQ ONNX),
# GRAPHS (default "all": encoder, decoder and, for an `export --video` directory, the three video
# graphs), MAX_OBJECTS (4: objects per video-graph call), MAX_COND_FRAMES (4: prompted frames per object).
set -euo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: $0 EXPORT_DIR [OUT_DIR]" >&2
  exit 2
fi
export_dir=$1
out_dir=${2:-$export_dir}
precisions=${PRECISIONS:-"fp16 fp32"}
max_prompts=${MAX_PROMPTS:-16}
max_points=${MAX_POINTS:-8}
workspace_mb=${WORKSPACE_MB:-2048}
graphs=${GRAPHS:-all}
max_objects=${MAX_OBJECTS:-4}
max_cond_frames=${MAX_COND_FRAMES:-4}

echo "== environment and ONNX pre-flight"
samdeploy doctor "$export_dir"

inputs=("$export_dir")
if [ -n "${CALIB_DIR:-}" ]; then
  inputs+=("$CALIB_DIR")
fi
extra=()
if [ -n "${DLA_CORE:-}" ]; then
  extra+=(--dla-core "$DLA_CORE")
fi

for precision in $precisions; do
  echo "== building $precision engines"
  samdeploy build "${inputs[@]}" \
    --precision "$precision" \
    --out "$out_dir/engines-$precision" \
    --max-prompts "$max_prompts" \
    --max-points "$max_points" \
    --graphs "$graphs" \
    --max-objects "$max_objects" \
    --max-cond-frames "$max_cond_frames" \
    --workspace-mb "$workspace_mb" \
    --timing-cache "$out_dir/timing.cache" \
    "${extra[@]}"
done
echo "engines written under $out_dir/engines-*"
