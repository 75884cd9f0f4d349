"""``samdeploy check``: parity of exported graphs vs the PyTorch model on real photographs.

    from samdeploy.check import run_check, CheckOptions
    report = run_check("out/", options=CheckOptions(precision="fp32", max_images=2))
    print(report.table()); report.raise_if_failed()

Modules: ``metrics`` (NumPy metric functions, reused by calibration and the Jetson verify script),
``prompts`` (the seeded prompt suite, contract-driven), ``thresholds`` (per-precision defaults and
overrides), ``report`` (gates, table, JSON) -- none of these import torch -- and ``parity`` (the
runner, torch).
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "run_check": "parity",
    "CheckOptions": "parity",
    "load_reference": "parity",
    "CheckReport": "report",
    "resolve_thresholds": "thresholds",
    "DEFAULTS": "thresholds",
    "prompt_suite": "prompts",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
