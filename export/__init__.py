"""ONNX export of the samdeploy model zoo: ``encoder.onnx``, ``decoder.onnx``, ``manifest.json``.

    from samdeploy.export import export_model, ExportOptions, resolve_source, load_source

    src = resolve_source(model="mobile_sam", random_weights=True, seed=0)
    sam = load_source(src)
    result = export_model(sam, "out/", src, ExportOptions())

Modules: ``exporter`` (the pipeline, torch), ``wrappers`` (the traced modules, torch),
``onnx_io`` (tidy / shape inference / metadata / atomic save + external data), ``graph_checks``
(contract checks on graphs), ``manifest`` (manifest.json), ``source`` (checkpoint / registry /
random weights). ``manifest``, ``graph_checks`` and ``onnx_io`` do not import torch; this package
imports its torch modules lazily.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "export_model": "exporter",
    "ExportOptions": "exporter",
    "ExportResult": "exporter",
    "GRAPHS": "exporter",
    "FILE_NAMES": "exporter",
    "ModelSource": "source",
    "resolve_source": "source",
    "load_source": "source",
    "random_source": "source",
    "checkpoint_source": "source",
    "read_manifest": "manifest",
    "MANIFEST_NAME": "manifest",
    "check_graph": "graph_checks",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
