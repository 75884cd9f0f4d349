"""Graph I/O names are spelled in contract.py only: every stage reads them from there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("runtime", "check", "calibration", "trt", "export", "jetson", "cli", "scripts")
# Names that mean only a graph tensor (point_coords / mask_input are also the Python API's keywords).
GRAPH_ONLY = re.compile(r"""["'](image_embeddings|iou_predictions|low_res_masks|has_mask_input)["']|run\(\s*(None,\s*)?\{["']image["']\s*:""")


def test_no_stage_spells_graph_io_names():
    stray = []
    for stage in STAGES:
        for f in sorted((ROOT / stage).rglob("*.py")):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if GRAPH_ONLY.search(line):
                    stray.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not stray, "use the names from samdeploy.contract:\n" + "\n".join(stray)


def test_the_check_can_fail(tmp_path):
    assert GRAPH_ONLY.search('out["low_res_masks"]') and GRAPH_ONLY.search('run(None, {"image": x})')
