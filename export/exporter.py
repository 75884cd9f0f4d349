"""Export ``Sam.encode`` / ``Sam.decode`` to ``encoder.onnx`` / ``decoder.onnx`` + ``manifest.json``.

Pipeline per graph: TorchScript exporter (``dynamo=False``, opset >= 17, constant folding, eval mode,
no_grad) into a private staging directory -> load -> tidy (drop Identity-of-initializer nodes) ->
contract checks (no OneHot/Tile, float32 inputs, no shape-tensor inputs, I/O
names) -> shape inference -> metadata. Only when every requested graph is ready are the files
written into the staging directory; only then is the previous export in the output directory
replaced: its manifest is removed, the new files are renamed into place (external data first) and
the new manifest is written last. So a manifest on disk always matches the files next to it, and
an export that fails or is interrupted (exception / Ctrl-C) before the end leaves the previous
export complete and usable (it is restored if the failure happens during the swap). A SIGKILLed
export leaves a ``.samdeploy-export-<pid>-*`` staging directory, removed by the next export once
that process is gone.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

from .. import __version__, _io
from ..contract import VIDEO_CONSTANTS, VIDEO_GRAPHS, ModelContract, Video, metadata_props
from ..errors import ExportError, InputError
from . import graph_checks, onnx_io, wrappers
from .manifest import MANIFEST_NAME, build_manifest, file_entry, write_manifest
from .source import ModelSource

GRAPHS = ("encoder", "decoder")
MIN_OPSET = 17
FILE_NAMES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", **Video().files}  # + the --video files
STAGING_PREFIX = _io.EXPORT_STAGING_PREFIX
STALE_STAGING_SECONDS = 3600.0  # staging dirs without a pid in the name (older samdeploy)


@dataclass(frozen=True)
class ExportOptions:
    graphs: tuple[str, ...] = GRAPHS
    opset: int = 17
    encoder_batch: int | None = 1  # None: dynamic batch axis
    external_data: str = "auto"  # "auto" | "always" | "never"
    external_data_threshold: int = onnx_io.DEFAULT_EXTERNAL_DATA_THRESHOLD  # bytes of weights, for "auto"
    video: bool = False  # SAM2: also memory_attention / memory_encoder / track_decoder.onnx + video_constants.npz

    @property
    def roles(self) -> tuple[str, ...]:
        """The graphs to export, in order."""
        return tuple(g for g in GRAPHS if g in self.graphs) + (VIDEO_GRAPHS if self.video else ())

    def validate(self) -> None:
        bad = [g for g in self.graphs if g not in GRAPHS]
        if bad or not self.graphs:
            raise InputError(f"unknown graph(s) {bad or '(none)'}", hint="--graphs takes encoder, decoder or encoder,decoder")
        if self.opset < MIN_OPSET:
            raise InputError(
                f"opset {self.opset} is too old: samdeploy needs opset >= {MIN_OPSET} (LayerNormalization)",
                hint=f"use --opset {MIN_OPSET} (the default)",
            )
        if self.external_data not in ("auto", "always", "never"):
            raise InputError(f"--external-data must be auto, always or never, not {self.external_data!r}")
        if self.encoder_batch is not None and self.encoder_batch < 1:
            raise InputError(f"--encoder-batch must be >= 1 or 'dynamic', not {self.encoder_batch}")

    def provenance(self) -> dict[str, Any]:
        """What goes into the contract (and so into the files): only options that change the graphs."""
        return {
            "exporter": "torch.onnx.export(dynamo=False)",
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "opset": self.opset,
            "encoder_batch": "dynamic" if self.encoder_batch is None else self.encoder_batch,
            "constant_folding": True,
            **({"video_graphs": True} if self.video else {}),
        }


@dataclass
class GraphResult:
    role: str
    path: Path
    files: list[onnx_io.SavedFile]
    inputs: list[dict]
    outputs: list[dict]
    op_counts: dict[str, int]
    export_seconds: float
    external_data: bool


@dataclass
class ExportResult:
    out_dir: Path
    contract: ModelContract
    source: ModelSource
    graphs: dict[str, GraphResult] = field(default_factory=dict)
    constants: onnx_io.SavedFile | None = None  # video_constants.npz (--video)
    manifest_path: Path | None = None
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        c = self.contract
        lines = [
            f"model     {c.family}/{c.variant}  weights {c.weights_sha256[:24]}{'...' if len(c.weights_sha256) > 24 else ''}",
            f"source    {self.source.describe()}",
            f"contract  v{c.contract_version}, opset {c.opset}, encoder input {c.preprocess.input_size}px "
            f"{c.preprocess.channel_order} 0..255 (normalised in graph), prompt/mask frame {c.frame_size}px, "
            f"{'always multimask' if c.decoder.always_multimask else 'tokens 0 / 1..3'}"
            f"{'' if c.decoder.hq_token is None else f' + HQ token {c.decoder.hq_token}'}, scores: {c.decoder.score}",
        ]
        if c.licence and not c.licence.startswith("Apache"):
            lines.append(f"licence   {c.licence}")
        for g in self.graphs.values():
            shapes = ", ".join(f"{i['name']}{list(i['shape'])}" for i in g.inputs)
            for f in g.files:
                lines.append(f"wrote     {f.path}  {_human(f.size)}  sha256 {f.sha256[:16]}")
            lines.append(f"          {g.role}: {shapes}  ({sum(g.op_counts.values())} nodes, {g.export_seconds:.1f} s)")
        if self.constants is not None:
            lines.append(f"wrote     {self.constants.path}  {_human(self.constants.size)}  sha256 {self.constants.sha256[:16]}")
        if self.manifest_path:
            lines.append(f"wrote     {self.manifest_path}")
        lines.append(f"done in {self.seconds:.1f} s")
        return lines


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _is_training(module: torch.nn.Module) -> list[str]:
    return [name or type(m).__name__ for name, m in module.named_modules() if m.training]


def trace_graph(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
    staging: Path,
    training: "torch.onnx.TrainingMode | None" = None,
) -> onnx.ModelProto:
    """TorchScript-export ``module`` and load the result. Refuses training-mode modules (the
    exporter would silently bake batch statistics / dropout into the graph) unless ``training`` is
    given explicitly (tests use that to build a deliberately broken export)."""
    if training is None:
        training = torch.onnx.TrainingMode.EVAL
        if _is_training(module):
            raise ExportError(
                f"refusing to export a model in training mode ({', '.join(_is_training(module)[:3])} ...)",
                hint="call model.eval() before exporting",
            )
    if torch.is_grad_enabled():
        raise ExportError("export must run under torch.no_grad()", hint="wrap the call in `with torch.no_grad():`")
    path = staging / "graph.onnx"
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=False,
                export_params=True,
                opset_version=opset,
                do_constant_folding=True,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes or None,
                training=training,
                keep_initializers_as_inputs=False,
            )
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="set SAMDEPLOY_DEBUG=1 for the traceback and report it with the model variant",
        ) from exc
    return onnx_io.load_model(path)


def finish_graph(model: onnx.ModelProto, role: str, contract: ModelContract) -> graph_checks.GraphReport:
    """Tidy, check, infer shapes and stamp the contract into ``model`` in place.

    (onnxslim was measured and is not used: it changes decoder outputs by up to 3e-5 and does not
    make ONNX Runtime faster, which applies its own fusions.)"""
    onnx_io.remove_initializer_identities(model)
    onnx_io.remove_unused_initializers(model)
    onnx_io.fold_constants(model)
    report = graph_checks.check_graph(model, role, contract)
    if not report.ok:
        raise ExportError(
            f"the exported {role} graph breaks the samdeploy contract:\n    " + "\n    ".join(report.problems),
            hint="this is a bug in the model's forward (samdeploy.models); report it with the variant",
        )
    onnx_io.infer_shapes(model)
    model.producer_name = "samdeploy"
    model.producer_version = __version__
    onnx_io.set_metadata(
        model,
        metadata_props(contract, role),
        doc=f"samdeploy {role} for {contract.family}/{contract.variant} (see metadata samdeploy.contract)",
    )
    return report


def export_model(
    sam: torch.nn.Module,
    out_dir: str | os.PathLike,
    source: ModelSource,
    options: ExportOptions = ExportOptions(),
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``sam`` (an eval-mode ``samdeploy.models.Sam``) into ``out_dir``.

    ``source`` is what the model was built from; it is recorded in the manifest so that ``check`` can
    rebuild it. The contract's weights hash is ``sam.weights_sha256``."""
    options.validate()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    say = log or (lambda s: None)
    if not getattr(sam, "weights_sha256", ""):
        raise ExportError("the model has no weights hash", hint="build it with random_model() or load_checkpoint()")
    if options.video and not callable(getattr(sam, "video_contract", None)):
        raise InputError(
            f"--video needs a SAM2 / SAM2.1 model; {getattr(sam, 'variant', '?')} has no memory (video) modules",
            hint="use --model sam2.1_hiera_t (or another sam2*_hiera_* variant), or drop --video",
        )
    extra = {"video": True} if options.video else {}
    contract = sam.make_contract(**extra, **options.provenance())
    contract = _with_opset(contract, options.opset)
    result = ExportResult(out_dir=out_dir, contract=contract, source=source)

    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, not a directory", hint="pass a directory path")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)

    # Everything is first written into a private staging directory; the old export in ``out_dir``
    # stays complete and usable until the new files are ready. Then ``_swap_in`` replaces it:
    # old manifest removed, graph files renamed into place (external data first), new manifest
    # written last -- so a manifest on disk always describes the files next to it.
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
    os.chmod(staging, _io.default_dir_mode())  # mkdtemp makes it 0700
    try:
        protos: dict[str, tuple[onnx.ModelProto, graph_checks.GraphReport, float]] = {}
        with torch.no_grad():
            for role in options.roles:
                say(f"exporting {role} ...")
                t0 = time.perf_counter()
                module, args, (names_in, names_out, axes) = _graph_spec(sam, role, contract, options)
                sub = staging / role
                sub.mkdir()
                proto = trace_graph(module, args, names_in, names_out, axes, options.opset, sub)
                shutil.rmtree(sub, ignore_errors=True)
                report = finish_graph(proto, role, contract)
                protos[role] = (proto, report, time.perf_counter() - t0)
        # Everything is in memory and checked; write the new files into staging/new.
        new_dir = staging / "new"
        new_dir.mkdir()
        staged: dict[str, list[onnx_io.SavedFile]] = {}
        for role, (proto, report, seconds) in protos.items():
            path = out_dir / FILE_NAMES[role]
            external = _use_external_data(proto, options)
            files = onnx_io.save_model(proto, new_dir / FILE_NAMES[role], external_data=external)
            staged[role] = files
            result.graphs[role] = GraphResult(
                role=role,
                path=path,
                files=[onnx_io.SavedFile(out_dir / f.path.name, f.sha256, f.size) for f in files],
                inputs=graph_checks.value_info_summary(_real_inputs(proto)),
                outputs=graph_checks.value_info_summary(proto.graph.output),
                op_counts=report.op_counts,
                export_seconds=seconds,
                external_data=external,
            )
        files_entries = {role: file_entry(g, out_dir) for role, g in result.graphs.items()}
        if options.video:  # the constants the tracker needs besides the graphs, hashed like them
            name = contract.video.constants_file
            arrays = wrappers.video_constants(sam)
            saved = _save_npz(new_dir / name, arrays)
            staged[VIDEO_CONSTANTS] = [saved]
            result.constants = onnx_io.SavedFile(out_dir / name, saved.sha256, saved.size)
            files_entries[VIDEO_CONSTANTS] = {"path": name, "sha256": saved.sha256, "size": saved.size,
                                              "arrays": {k: list(a.shape) for k, a in sorted(arrays.items())}}
        result.seconds = time.perf_counter() - t_start
        manifest = build_manifest(
            contract=contract,
            source=source,
            files=files_entries,
            options=_options_dict(options),
            export_seconds=result.seconds,
        )
        result.manifest_path = _swap_in(out_dir, staging, staged, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.seconds = time.perf_counter() - t_start
    return result


def _with_opset(contract: ModelContract, opset: int) -> ModelContract:
    import dataclasses

    return dataclasses.replace(contract, opset=opset)


def _graph_spec(sam, role: str, contract: ModelContract, options: ExportOptions):
    if role in VIDEO_GRAPHS:
        return wrappers.video_graph(sam, role), wrappers.video_example(sam, role), wrappers.video_io(contract, role)
    if role == "encoder":
        batch = options.encoder_batch or 2  # dynamic: trace with 2 so nothing specialises on 1
        return (
            wrappers.EncoderGraph(sam),
            wrappers.encoder_example(contract.preprocess.input_size, batch),
            wrappers.encoder_io(contract, options.encoder_batch is None),
        )
    return (
        wrappers.DecoderGraph(sam),
        wrappers.decoder_example(contract),
        wrappers.decoder_io(contract),
    )


def _real_inputs(proto: onnx.ModelProto):
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _use_external_data(proto: onnx.ModelProto, options: ExportOptions) -> bool:
    if options.external_data == "always":
        return True
    big = onnx_io.initializer_bytes(proto) > options.external_data_threshold
    if options.external_data == "never":
        if onnx_io.initializer_bytes(proto) > onnx_io.DEFAULT_EXTERNAL_DATA_THRESHOLD:
            raise ExportError(
                "the weights exceed the 2 GB protobuf limit and --external-data never was given",
                hint="use --external-data auto (the default)",
            )
        return False
    return big


def _swap_in(out_dir: Path, staging: Path, staged: dict[str, list[Any]], manifest: dict[str, Any]) -> Path:
    """Replace the export in ``out_dir`` by the staged files; manifest last.

    The previous files (and manifest) are moved into ``staging/old`` first; if anything fails before
    the new manifest is written they are moved back, so the old export is complete again."""
    backup = staging / "old"
    backup.mkdir()
    names = [MANIFEST_NAME]
    # a previous external-data file must not outlive its graph; nor previous video files an export
    # without --video (its manifest does not list them)
    for name in dict.fromkeys([*(FILE_NAMES[role] for role in staged), *Video().files.values()]):
        names += [name, name + ".data"]
    moved_old: list[str] = []
    placed: list[str] = []
    try:
        for name in names:  # the manifest first: from here on no manifest until the new one
            with contextlib.suppress(FileNotFoundError):
                os.replace(out_dir / name, backup / name)
                moved_old.append(name)
        for role, files in staged.items():
            main, *data = files
            for f in [*data, main]:  # external data first: the .onnx never points at a missing file
                os.replace(f.path, out_dir / f.path.name)
                placed.append(f.path.name)
        return write_manifest(out_dir, manifest)
    except BaseException:
        for name in placed:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
        for name in reversed(moved_old):  # manifest last again
            with contextlib.suppress(OSError):
                os.replace(backup / name, out_dir / name)
        raise


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def remove_stale_staging(out_dir: str | os.PathLike, max_age: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove ``.samdeploy-export-*`` staging directories left in ``out_dir`` by killed exports.

    A staging dir named ``.samdeploy-export-<pid>-*`` is removed when that process no longer exists
    (a live, concurrent export keeps its own); one without a pid (older samdeploy) when it is older
    than ``max_age`` seconds. Returns the removed directories."""
    removed = []
    try:
        entries = list(Path(out_dir).iterdir())
    except OSError:
        return removed
    now = time.time()
    for d in entries:
        if not d.name.startswith(STAGING_PREFIX) or not d.is_dir() or d.is_symlink():
            continue
        head = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if head.isdigit() and "-" in d.name[len(STAGING_PREFIX):]:
            stale = not _pid_alive(int(head))
        else:
            try:
                stale = now - d.stat().st_mtime > max_age
            except OSError:
                continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(d)
    return removed


def _save_npz(path: Path, arrays: dict[str, Any]) -> onnx_io.SavedFile:
    """An uncompressed .npz (what ``numpy.load`` reads) with fixed zip timestamps: byte-deterministic."""
    import zipfile

    import numpy as np

    with _io.atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(arrays[key], dtype=np.float32), allow_pickle=False)
    return onnx_io.SavedFile(path, _io.sha256_file(path), path.stat().st_size)


def _options_dict(options: ExportOptions) -> dict[str, Any]:
    return {
        "graphs": list(options.graphs),
        "opset": options.opset,
        "encoder_batch": "dynamic" if options.encoder_batch is None else options.encoder_batch,
        "external_data": options.external_data,
        "external_data_threshold": options.external_data_threshold,
        **({"video": True} if options.video else {}),
    }
