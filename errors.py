"""Typed errors. Every user-facing failure raises a subclass of :class:`SamDeployError` whose
message says what went wrong *and what to do about it*. The CLI prints the message (no traceback)
and exits with the error's ``exit_code``."""

from __future__ import annotations


class SamDeployError(Exception):
    """Base class for all samdeploy errors."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


# -- inputs and files -------------------------------------------------------------------------
class InputError(SamDeployError, ValueError):
    """A user-supplied value (image, prompt, option) is invalid."""


class MissingFileError(SamDeployError, FileNotFoundError):
    """A file the user pointed at does not exist."""


# -- checkpoints --------------------------------------------------------------------------------
class CheckpointError(SamDeployError):
    """A checkpoint cannot be loaded (damaged, wrong family, wrong keys/shapes)."""


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint is a pickled Python object, refused unless the user trusts it explicitly."""


class DownloadError(SamDeployError):
    """A registry checkpoint could not be downloaded or failed its hash check."""


# -- contracts between stages ----------------------------------------------------------------
class ContractError(SamDeployError):
    """An ONNX/engine file lacks the samdeploy contract, or two files come from different models."""


class ExportError(SamDeployError):
    """Export to ONNX failed."""


# -- runtime --------------------------------------------------------------------------------------
class PredictorStateError(SamDeployError, RuntimeError):
    """An operation was called in the wrong order (e.g. predict() before set_image())."""


class NumericalError(SamDeployError, RuntimeError):
    """A backend returned NaN/inf for inputs that passed validation (never handed to the caller)."""


class BackendUnavailableError(SamDeployError, RuntimeError):
    """The requested inference backend (TensorRT, CUDA EP, ...) is not installed or has no device."""


class EngineMismatchError(SamDeployError):
    """A TensorRT engine was built for another TensorRT version / GPU and must be rebuilt."""


# -- gates ------------------------------------------------------------------------------------------
class GateFailedError(SamDeployError):
    """A parity or accuracy gate failed (exit code 1, the 'check failed' code)."""

    exit_code = 1
