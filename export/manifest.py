"""``manifest.json``: what an export directory contains (no torch; the runtime may read it).

::

    {
      "format": "samdeploy.manifest/1",
      "model_id": "mobile_sam/mobile_sam@<sha256>",
      "precision": "fp32",
      "contract": {...ModelContract...},          # identical to the files' metadata
      "files": {"encoder": {"path": "encoder.onnx", "sha256": ..., "size": ...,
                            "external_data": [{"path": "encoder.onnx.data", "sha256": ..., "size": ...}],
                            "inputs": [{"name", "dtype", "shape"}], "outputs": [...]},
                "decoder": {...}},
      "source": {"kind": "checkpoint", "checkpoint": "/abs/path.pth", "variant": ...}
                | {"kind": "random", "variant": ..., "seed": 0, "realistic": true},
      "options": {...export options...},
      "exported_at": "2025-01-01T00:00:00Z", "export_seconds": 12.3,
      "versions": {"samdeploy": ..., "torch": ..., "onnx": ..., "python": ...}
    }

Written last by ``samdeploy export``: a directory without a manifest is not a finished export.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from .. import __version__
from .._io import sha256_file, write_json_atomic
from ..contract import ModelContract
from ..errors import ContractError, MissingFileError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "samdeploy.manifest/1"


def file_entry(graph_result: Any, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Manifest entry of one exported graph (an ``exporter.GraphResult``)."""
    out_dir = Path(out_dir)
    main, *data = graph_result.files
    return {
        "path": os.path.relpath(main.path, out_dir),
        "sha256": main.sha256,
        "size": main.size,
        "external_data": [{"path": os.path.relpath(f.path, out_dir), "sha256": f.sha256, "size": f.size} for f in data],
        "inputs": graph_result.inputs,
        "outputs": graph_result.outputs,
    }


def build_manifest(
    contract: ModelContract,
    source: Any,
    files: Mapping[str, Any],
    options: Mapping[str, Any],
    export_seconds: float,
    precision: str = "fp32",
) -> dict[str, Any]:
    versions = {"samdeploy": __version__, "python": platform.python_version()}
    for mod in ("torch", "onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            pass
    return {
        "format": MANIFEST_FORMAT,
        "model_id": contract.model_id,
        "precision": precision,
        "contract": contract.to_dict(),
        "files": dict(files),
        "source": source.to_dict() if hasattr(source, "to_dict") else dict(source),
        "options": dict(options),
        "exported_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "export_seconds": round(float(export_seconds), 3),
        "versions": versions,
    }


def write_manifest(out_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path


def read_manifest(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Load and sanity-check ``<export_dir>/manifest.json``."""
    export_dir = export_dir_of(export_dir)
    path = export_dir / MANIFEST_NAME
    if not path.exists():
        if not export_dir.exists():
            raise MissingFileError(f"export directory not found: {export_dir}", hint="run `samdeploy export --out DIR` first")
        raise ContractError(
            f"{export_dir} has no {MANIFEST_NAME} (not a finished samdeploy export)",
            hint="re-run `samdeploy export --out DIR`; an interrupted export leaves no manifest",
        )
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ContractError(
                f"{path} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}",
                hint="re-export with this samdeploy version",
            )
        manifest["contract"] = ModelContract.from_dict(manifest["contract"]).to_dict()
        if not isinstance(manifest.get("files"), dict):
            raise KeyError("files")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError(f"{path} is not a valid samdeploy manifest ({type(exc).__name__}: {exc})",
                            hint="re-run `samdeploy export`") from None
    return manifest


def export_dir_of(path: str | os.PathLike) -> Path:
    """An export directory, also when given the path of its manifest.json."""
    path = Path(path)
    return path.parent if path.name == MANIFEST_NAME and path.is_file() else path


def manifest_contract(manifest: Mapping[str, Any]) -> ModelContract:
    return ModelContract.from_dict(manifest["contract"])


def graph_path(export_dir: str | os.PathLike, manifest: Mapping[str, Any], role: str) -> Path:
    try:
        return Path(export_dir) / manifest["files"][role]["path"]
    except KeyError:
        raise ContractError(
            f"the export in {export_dir} has no {role} graph",
            hint=f"re-export with --graphs encoder,decoder (this one has {', '.join(manifest.get('files', {})) or 'none'})",
        ) from None


def verify_files(export_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> list[str]:
    """Problems (missing files, size/SHA-256 mismatches) between the manifest and the directory.

    The same cached check the runtime runs when it opens a model directory."""
    from .._io import verify_sha256_cached

    problems = []
    for role, entry in manifest.get("files", {}).items():
        files = [(f["path"], f.get("size"), f["sha256"]) for f in [entry, *entry.get("external_data", [])]]
        problems += [f"{role}: {p}" for p in verify_sha256_cached(export_dir, files)]
    return problems
