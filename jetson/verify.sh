#!/usr/bin/env bash
# Parity (vs ONNX Runtime CPU, real photographs) and a benchmark of every engine directory.
#
#   jetson/verify.sh EXPORT_DIR [ENGINES_PARENT_DIR]
#
# Exit 1 if any engine fails its parity gate (with video engines, the Tracker too: verify.py --video). Reports go to <engine dir>/verify.json and bench.json.
set -euo pipefail

if [ "$#" -lt 1 ]; then
  echo "usage: $0 EXPORT_DIR [ENGINES_PARENT_DIR]" >&2
  exit 2
fi
export_dir=$1
parent=${2:-$export_dir}
here=$(cd "$(dirname "$0")" && pwd)
status=0
found=0

for engines in "$parent"/engines-*; do
  [ -d "$engines" ] || continue
  found=1
  echo "== parity: $engines"
  video=()
  if [ -f "$engines/memory_attention.engine" ]; then
    video=(--video)  # `build --graphs all` of an `export --video` directory: the tracker is compared too
  fi
  if ! python3 "$here/verify.py" --onnx-dir "$export_dir" --engine-dir "$engines" --json "$engines/verify.json" "${video[@]}"; then
    status=1
  fi
  echo "== benchmark: $engines"
  samdeploy bench --model-dir "$engines" --backend tensorrt --json "$engines/bench.json" --quiet || status=1
done

if [ "$found" -eq 0 ]; then
  echo "no engines-* directories under $parent; run jetson/build_engines.sh first" >&2
  exit 2
fi
exit "$status"
