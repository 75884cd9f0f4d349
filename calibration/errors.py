"""Calibration's typed error (a ``SamDeployError``: the CLI prints it and exits with code 2)."""

from __future__ import annotations

from ..errors import GateFailedError, SamDeployError

__all__ = ["CalibrationError", "GateFailedError"]


class CalibrationError(SamDeployError):
    """Calibration cannot produce meaningful scales (degenerate gradient, unmatched layers, ...)."""
