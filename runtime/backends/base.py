"""The one small interface every inference backend implements (no torch, no backend imports).

A *backend* runs ONE graph (an encoder or a decoder) on NumPy arrays. The :class:`Predictor`
(``samdeploy.runtime.predictor``) only ever talks to this interface, so ONNX Runtime, TensorRT or
anything else can run the graphs without the predictor knowing.

Contract for implementers (ONNX Runtime: ``onnxruntime.py``; TensorRT: ``tensorrt.py``)
----------------------------------------------------------------------------------------
A backend *object* (see :class:`Backend`) must provide

* ``name``          -- short backend name, e.g. ``"onnxruntime"`` or ``"tensorrt"``.
* ``role``          -- ``"encoder"`` or ``"decoder"``.
* ``path``          -- the file it was loaded from.
* ``input_names``   -- tuple of graph input names (contract v1: see ``samdeploy.contract``).
* ``output_names``  -- tuple of graph output names.
* ``max_batch``     -- largest leading (prompt/image) batch dimension the graph accepts, or ``None``
                       for unlimited (ONNX Runtime). A TensorRT engine reports its profile's max; the
                       predictor chunks prompt batches to respect it.
* ``max_points``    -- largest N (points per prompt, incl. box corners and the padding point) the
                       graph accepts, or ``None`` for unlimited.
* ``min_points``    -- (optional, default 0) smallest N the graph accepts; a TensorRT profile's min.
                       With ``min_points >= 1`` the predictor encodes a prompt without clicks or box
                       as the padding point instead of N = 0.
* ``input_limits``  -- (optional, default ``None`` = unlimited) ``{input name: (min shape, max shape)}``
                       of a TensorRT profile; the Tracker reads it for the memory-bank axes (R, P)
                       and refuses a bank the engine cannot take with a typed error.
* ``run(feeds)``    -- ``feeds`` maps *every* input name to a C-contiguous float32 ndarray (the
                       predictor always sends float32, even when an engine's I/O is fp16: casting is
                       the backend's job). Returns ``{output_name: float32 ndarray}`` for *all*
                       outputs. Arrays returned must not be overwritten by a later ``run`` call
                       (copy out of device/pinned buffers).  Raise
                       :class:`~samdeploy.errors.InputError` for shapes outside the profile.
* ``describe()``    -- JSON-able dict: at least ``{"backend", "version", "device", "threads",
                       "providers"}`` (whatever applies; used by ``samdeploy bench`` and ``predict``).
* ``close()``       -- release sessions/engines/device memory. Idempotent.

A backend *module* (``samdeploy.runtime.backends.<name>``) must expose these functions, used by
:func:`samdeploy.runtime.backends.load_model` (in this order):

* ``available() -> None`` (optional but recommended) -- raise
  :class:`~samdeploy.errors.BackendUnavailableError` with an actionable hint when the backend cannot
  run on this machine (library missing, no GPU). Called first, before any file is looked at, so
  users without TensorRT get "TensorRT is not available" rather than "engine file not found".

* ``open_graph(path: str, role: str, **options) -> Backend`` -- open one graph. Options are
  backend-specific; ``load_model`` passes ``threads`` and ``providers`` (may be ``None``) plus any
  extra keyword arguments the user gave. Raise :class:`~samdeploy.errors.BackendUnavailableError`
  (with an actionable hint) when the backend's libraries or device are missing; import heavy
  libraries (tensorrt, pycuda) *inside* this function, never at module import time.
* ``read_contract(path: str) -> tuple[ModelContract, str]`` -- the
  :class:`~samdeploy.contract.ModelContract` stored with that graph (ONNX metadata, or the engine's
  manifest) and the graph's role as recorded there (``"encoder"``/``"decoder"``, or ``""`` if
  unknown). Raise :class:`~samdeploy.errors.ContractError` if there is none. Must be cheap (no
  weights loaded, no device needed) so mismatched files are refused before anything is built.
* ``find_graphs(model_dir: str) -> tuple[str, str]`` -- the (encoder, decoder) file paths inside a
  model directory; raise :class:`~samdeploy.errors.MissingFileError` if they are not there.
* ``find_video_graphs(encoder_path: str) -> dict[str, str]`` (optional) -- for a backend with its own
  files (TensorRT engines): role -> path of the three video graphs belonging with that encoder. Without
  it the :class:`~samdeploy.runtime.Tracker` opens the export directory's hash-checked ONNX files.

This module has no heavy imports so that every backend (and the TensorRT one on machines without
TensorRT) can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from ...contract import VIDEO_GRAPHS, ModelContract
from ...errors import InputError

ROLES = ("encoder", "decoder", *VIDEO_GRAPHS)  # the video graphs: `samdeploy export --video`


@runtime_checkable
class Backend(Protocol):
    """One loaded graph. See the module docstring for the full contract."""

    name: str
    role: str
    path: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    max_batch: Optional[int]
    max_points: Optional[int]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class BackendBase:
    """Optional convenience base class: holds the common attributes and checks feeds.

    Subclasses set ``name`` and implement ``_run`` (and usually ``describe``/``close``)."""

    name = "base"

    def __init__(
        self,
        path: str,
        role: str,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        max_batch: Optional[int] = None,
        max_points: Optional[int] = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.path = str(path)
        self.role = role
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.max_batch = max_batch
        self.max_points = max_points
        self.input_limits: Optional[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = None
        self._closed = False

    # -- public ---------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            from ...errors import PredictorStateError

            raise PredictorStateError(
                f"the {self.role} backend ({self.path}) was closed", hint="load the model again"
            )
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(
                f"{self.role} graph {self.path} needs inputs {missing} that were not given",
                hint="this graph does not follow the samdeploy contract; re-export it",
            )
        return self._run({n: feeds[n] for n in self.input_names})

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "role": self.role, "path": self.path}

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- to implement -----------------------------------------------------------------------------
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


@dataclass
class GraphPair:
    """An encoder backend + a decoder backend + the contract they share (what ``load_model`` returns).

    Closing the pair closes both backends; usable as a context manager."""

    encoder: Backend
    decoder: Backend
    contract: ModelContract
    backend: str
    encoder_path: str
    decoder_path: str
    options: dict[str, Any] = field(default_factory=dict)
    # Numeric precision of each graph ("fp32" | "fp16" | "int8"), from the engine or the file's contract.
    precisions: dict[str, str] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """One label for both graphs: ``"FP32"``, or ``"INT8 encoder + FP32 decoder"`` when they differ."""
        enc = self.precisions.get("encoder", "fp32").upper()
        dec = self.precisions.get("decoder", "fp32").upper()
        return enc if enc == dec else f"{enc} encoder + {dec} decoder"

    @property
    def random_weights(self) -> bool:
        return str(self.contract.weights_sha256).startswith("random:")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_id": self.contract.model_id,
            "family": self.contract.family,
            "variant": self.contract.variant,
            "precision": self.precision,
            "random_weights": self.random_weights,
            "encoder": self.encoder.describe(),
            "decoder": self.decoder.describe(),
        }

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

    def __enter__(self) -> "GraphPair":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
