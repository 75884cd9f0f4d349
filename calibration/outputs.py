"""The INT8 output directory of ``samdeploy calibrate``: QDQ graphs stamped with the INT8 contract, the FP32
graphs that stay float (copied so the directory is a complete model), calibration.json, the report, and the
manifest last (no manifest = not a finished output). Apart from pipeline.py so the directory layout and
the INT8 contract do not depend on the calibration stages.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .. import __version__
from .._io import write_json_atomic, write_text_atomic
from ..contract import ModelContract, metadata_props
from ..errors import InputError

if TYPE_CHECKING:  # annotations only: pipeline.py imports this module
    import onnx

    from .pipeline import CalibrationResult, CalibrationSettings, _Run

GRAPH_FILES = {"encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx"}
CALIBRATION_JSON = "calibration.json"
REPORT_MD = "calibration_report.md"
FORMAT = "samdeploy.calibration/1"


def graph_precisions(int8_graphs: Iterable[str]) -> dict[str, str]:
    """{"encoder": "int8", "decoder": "fp32"}: what each graph of the output directory runs in."""
    return {role: "int8" if role in tuple(int8_graphs) else "fp32" for role in GRAPH_FILES}


def int8_contract(contract: ModelContract, settings: CalibrationSettings, method: str,
                  int8_graphs: tuple[str, ...] | None = None) -> ModelContract:
    """Same model_id; provenance notes the precision and the calibration (and which graphs stay FP32)."""
    prov = dict(contract.provenance)
    prov["precision"] = "int8"
    prov["calibration"] = {"method": method, "samdeploy": __version__, "format": FORMAT,
                           "graphs": list(settings.graphs), "target": settings.target,
                           "precision": graph_precisions(settings.graphs if int8_graphs is None else int8_graphs)}
    return dataclasses.replace(contract, provenance=prov)


def write_outputs(run: _Run, out: Path, models: Mapping[str, onnx.ModelProto], doc: dict[str, Any],
                  result: CalibrationResult) -> list[Path]:
    """Write the INT8 directory ``out`` (``doc``: calibration.json, completed here with the file names);
    returns every file written."""
    from ..export.onnx_io import save_model, set_metadata
    from ..export.manifest import MANIFEST_NAME

    out = Path(out)
    if out.resolve() == run.model_dir.resolve():
        raise InputError("--out must differ from --model-dir (the FP32 export stays untouched)",
                         hint=f"e.g. --out {run.model_dir / 'int8'}")
    out.mkdir(parents=True, exist_ok=True)
    with_manifest = out / MANIFEST_NAME
    if with_manifest.exists():
        with_manifest.unlink()  # no manifest = not a finished output while we write
    contract = int8_contract(run.contract, run.settings, result.method, tuple(models))
    written: list[Path] = []
    files: dict[str, Any] = {}
    for role in ("encoder", "decoder"):
        if role in models:
            m = models[role]
            props = metadata_props(contract, role)
            props["samdeploy.precision"] = "int8"
            props["samdeploy.calibration"] = json.dumps({"method": result.method, "file": CALIBRATION_JSON})
            set_metadata(m, props, doc=f"samdeploy INT8 {role} for {contract.family}/{contract.variant}")
            path = out / GRAPH_FILES[role]
            saved = save_model(m, path, external_data=m.ByteSize() > 1_800_000_000)
        else:  # the FP32 decoder, copied so the directory is a complete model
            src = run.paths[role]
            path = out / src.name
            if path.resolve() != src.resolve():
                from .._io import atomic_path

                with atomic_path(path) as tmp:
                    shutil.copyfile(src, tmp)
            from ..export.onnx_io import SavedFile
            from .._io import sha256_file

            saved = [SavedFile(path, sha256_file(path), path.stat().st_size)]
        written += [f.path for f in saved]
        main, *data = saved
        files[role] = {
            "path": os.path.relpath(main.path, out), "sha256": main.sha256, "size": main.size,
            "external_data": [{"path": os.path.relpath(f.path, out), "sha256": f.sha256, "size": f.size} for f in data],
            "precision": "int8" if role in models else "fp32",
            "inputs": run.manifest["files"][role].get("inputs", []),
            "outputs": run.manifest["files"][role].get("outputs", []),
        }
    doc["files"] = {k: v["path"] for k, v in files.items()}
    write_json_atomic(out / CALIBRATION_JSON, doc)
    write_text_atomic(out / REPORT_MD, result.report)
    written += [out / CALIBRATION_JSON, out / REPORT_MD]
    manifest = dict(run.manifest)
    manifest.update({
        "model_id": contract.model_id,
        "precision": "int8",
        "contract": contract.to_dict(),
        "files": files,
        "calibration": {"file": CALIBRATION_JSON, "method": result.method, "from": str(run.model_dir.resolve()),
                        "precision": graph_precisions(tuple(models))},
    })
    write_json_atomic(out / MANIFEST_NAME, manifest)
    written.append(out / MANIFEST_NAME)
    return written
