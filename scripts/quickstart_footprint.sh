#!/usr/bin/env bash
# Run README quick-start command 1 in a brand-new venv and report its footprint.
# Usage: bash scripts/quickstart_footprint.sh [WORKDIR]   (needs the package index; takes a few minutes)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
python -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH" PIP_DISABLE_PIP_VERSION_CHECK=1
cache="$work/pip-cache"
start=$(date +%s)
( cd "$repo" && pip install -q --cache-dir "$cache" torch==2.13.0 && pip install -q --cache-dir "$cache" -e ".[export]" )
( cd "$work" && samdeploy export --model mobile_sam --random-weights --out out/mobile_sam \
  && samdeploy check out/mobile_sam --max-images 2 \
  && samdeploy predict sample:astronaut --model-dir out/mobile_sam --point 250,180 --out out/predict )
echo "quick start command 1: $(( $(date +%s) - start )) s"
echo "venv size:        $(du -sh "$work/venv" | cut -f1)"
echo "downloaded (pip cache, wheels fetched from the index): $(du -sh "$cache" | cut -f1)"
python - "$work/venv" <<'PY'
import subprocess, sys
out = subprocess.run([sys.argv[1] + "/bin/python", "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True).stdout
print("torch in venv:   ", out.strip())
PY
