"""Graph I/O names are spelled in contract.py only: every stage reads them from there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("runtime", "check", "calibration", "trt", "export", "jetson", "cli", "scripts")
# Names that mean only a graph tensor (point_coords / mask_input are also the Python API's keywords).
GRAPH_ONLY = re.compile(r"""["'](image_embeddings|iou_predictions|low_res_masks|has_mask_input)["']|run\(\s*(None,\s*)?\{["']image["']\s*:""")


# Lines that describe a FOREIGN graph (Meta's SamOnnxModel export, a peer's file) spell its names on purpose
# and say so with this comment.
FOREIGN = "# the official export's names"


def _stray(folders) -> list[str]:
    found = []
    for folder in folders:
        for f in sorted((ROOT / folder).rglob("*.py")):
            if f.resolve() == Path(__file__).resolve():
                continue
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if GRAPH_ONLY.search(line) and FOREIGN not in line:
                    found.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    return found


def test_no_stage_spells_graph_io_names():
    stray = _stray(STAGES)
    assert not stray, "use the names from samdeploy.contract:\n" + "\n".join(stray)


def test_models_and_tests_read_the_names_from_the_contract_too():
    """A test that spells a graph name checks its own copy, not the contract every stage reads."""
    stray = _stray(("models", "tests"))
    assert not stray, "use the names from samdeploy.contract:\n" + "\n".join(stray)


def test_the_public_names_are_pinned_here_once():
    """Users' code and peers' tools (SamOnnxModel, samexporter) rely on these exact spellings."""
    from samdeploy import contract as C

    assert (C.ENCODER_INPUT, C.ENCODER_OUTPUT) == ("image", "image_embeddings")
    assert C.DECODER_INPUTS == ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")
    assert C.DECODER_OUTPUTS == ("iou_predictions", "low_res_masks")


def test_the_check_can_fail(tmp_path):
    assert GRAPH_ONLY.search('out["low_res_masks"]') and GRAPH_ONLY.search('run(None, {"image": x})')
