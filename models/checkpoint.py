"""Load official SAM-family checkpoints into our modules, strictly.

    model, info = load_checkpoint("sam_vit_b_01ec64.pth")            # variant detected from the file
    model, info = load_checkpoint("tinysam_42.3.pth", variant="tinysam")

What is accepted:
- a plain state_dict (the official layout of SAM, MobileSAM, TinySAM, SlimSAM-uniform), or one wrapped
  under ``"model"`` / ``"state_dict"``; a ``module.`` prefix left by DataParallel is removed;
- read with ``torch.load(weights_only=True)``: a file that needs arbitrary Python objects to unpickle
  (a whole pickled ``nn.Module`` such as Q-TinySAM or SlimSAM-global) is refused with
  :class:`~samdeploy.errors.UnsafeCheckpointError` unless ``trust_pickle=True``, which unpickles it
  (running whatever code it names) and takes ``.state_dict()`` from the module.

Integrity: a zip-format file is CRC-checked member by member before unpickling (a flipped or zeroed
byte raises :class:`~samdeploy.errors.CheckpointError` naming the corrupt member), and a state_dict
with NaN/Inf in any floating tensor is refused (naming the first bad keys).

Every key and shape must match the variant exactly (no ``strict=False``): a damaged, truncated or
foreign file raises :class:`~samdeploy.errors.CheckpointError` that says what the file looks like.
MobileSAM and TinySAM files have identical keys and shapes, so ``variant="auto"`` answers
``mobile_sam`` and says so in ``info.notes``; pass ``tinysam`` explicitly for TinySAM weights.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from .._io import sha256_file
from ..errors import CheckpointError, InputError, MissingFileError, UnsafeCheckpointError
from .variants import VARIANTS, family_signatures, get_variant

if TYPE_CHECKING:
    from .sam import Sam

__all__ = ["load_checkpoint", "detect_variant", "read_state_dict", "CheckpointInfo", "Detection"]

_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


# ---- detection -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """What a state_dict looks like."""

    family: str  # "sam", "slimsam", "mobile_sam", ... or a foreign family ("sam2", "edgesam", ...), "unknown"
    variant: str | None  # a supported variant name, or None
    description: str  # for humans: "SAM ViT-B (embed 768, depth 12, 12 heads, mlp 3072)"
    ambiguous_with: tuple[str, ...] = ()  # other variants with identical keys and shapes

    @property
    def supported(self) -> bool:
        return self.variant is not None


def _vit_signature(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any] | None:
    proj = sd.get(prefix + "patch_embed.proj.weight")
    if proj is None or proj.ndim != 4:
        return None
    embed = int(proj.shape[0])
    block_ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    depth = max(block_ids) + 1 if block_ids else 0
    lin1 = sd.get(prefix + "blocks.0.mlp.lin1.weight")
    mlp = int(lin1.shape[0]) if lin1 is not None else None
    rel = sd.get(prefix + "blocks.0.attn.rel_pos_h")
    heads = embed // int(rel.shape[1]) if rel is not None and rel.ndim == 2 and rel.shape[1] else None
    global_idx = tuple(
        i
        for i in sorted(block_ids)
        if (r := sd.get(f"{prefix}blocks.{i}.attn.rel_pos_h")) is not None and r.ndim == 2 and r.shape[0] != 27
    )
    split_qkv = any(re.search(r"\.attn\.q\.weight$", k) for k in sd)
    return dict(embed_dim=embed, depth=depth, num_heads=heads, mlp_dim=mlp, global_attn_indexes=global_idx, split_qkv=split_qkv)


def _foreign_family(sd: Mapping[str, torch.Tensor]) -> Detection | None:
    """Families other than SAM-1's ViT/TinyViT layouts: the variant table's signatures (each family
    declares the key substrings its checkpoints carry), then layouts samdeploy recognises but refuses."""
    keys = list(sd)

    def has(pattern: str) -> bool:
        return any(pattern in k for k in keys)

    if has("vision_encoder.") or has("shared_image_embedding"):
        return Detection("hf_transformers", None, "a Hugging Face transformers SamModel checkpoint (HF key names)")
    if has("a_interval") or has("w_interval"):
        return Detection("q_tinysam", None, "a fake-quantized (Q-TinySAM-style) model with quantizer buffers")
    for family, signature in family_signatures():
        if all(any(has(alt) for alt in p.split("|")) for p in signature):
            first = next(v for v in VARIANTS.values() if v.family == family)
            return _match_structure(sd, family, f"a {family} checkpoint ({first.description.split(' (')[0]})")
    if has("prompt_encoder.invalid_points") or has("final_output_upscaling_layers"):
        return Detection("efficient_sam", None, "a partial yformer EfficientSAM state_dict (prompt encoder / mask "
                         "decoder keys without its image encoder)")
    return None


def _match_structure(sd: Mapping[str, torch.Tensor], family: str, what: str) -> Detection:
    """The variants of ``family`` whose meta-built state_dict has exactly these keys and shapes.

    Works for full checkpoints and for bare encoders (keys without ``image_encoder.``), and needs
    nothing per family but its entries in the variant table."""
    from .build import build_model

    encoder_only = not any(k.startswith(_PREFIXES) for k in sd)
    got = {k: tuple(v.shape) for k, v in sd.items()}
    matches = []
    for v in VARIANTS.values():
        if v.family != family:
            continue
        ref = build_model(v.name, device="meta")
        module = ref.image_encoder if encoder_only else ref
        if {k: tuple(t.shape) for k, t in module.state_dict().items()} == got:
            matches.append(v)
    note = " (image encoder only: no prompt encoder / mask decoder keys)" if encoder_only else ""
    if not matches:
        return Detection(family, None, f"{what} whose keys/shapes match none of: "
                         f"{', '.join(v.name for v in VARIANTS.values() if v.family == family)}{note}")
    first = matches[0]
    return Detection(family, None if encoder_only else first.name, f"{first.description}{note}",
                     ambiguous_with=tuple(v.name for v in matches[1:]))


def detect_variant(state_dict: Mapping[str, torch.Tensor]) -> Detection:
    """Recognise the family and variant of a state_dict from its key names and shapes."""
    sd = state_dict
    foreign = _foreign_family(sd)
    if foreign is not None:
        return foreign
    keys = list(sd)
    if not keys:
        return Detection("unknown", None, "an empty state_dict")
    prefix = "image_encoder."
    encoder_only = not any(k.startswith(_PREFIXES) for k in keys)
    if encoder_only:
        prefix = ""
    note = " (image encoder only: no prompt encoder / mask decoder keys)" if encoder_only else ""

    if prefix + "patch_embed.seq.0.c.weight" in sd:
        dims = tuple(int(sd[k].shape[0]) for k in (f"{prefix}layers.{i}.blocks.0.attn.qkv.weight" for i in (1, 2, 3)) if k in sd)
        if dims == (384, 480, 960) or dims == ():  # qkv rows = 3 x (128, 160, 320)
            desc = "a TinyViT-5M ('vit_t') checkpoint: MobileSAM or TinySAM (identical keys and shapes)" + note
            return Detection("mobile_sam", None if encoder_only else "mobile_sam", desc, ambiguous_with=("tinysam",))
        return Detection("tiny_vit", None, f"a TinyViT encoder of another size (qkv rows {dims}){note}")

    sig = _vit_signature(sd, prefix)
    if sig is not None:
        shape = (
            f"embed {sig['embed_dim']}, depth {sig['depth']}, {sig['num_heads']} heads, mlp {sig['mlp_dim']}, "
            f"global attention {list(sig['global_attn_indexes'])}"
        )
        if sig["split_qkv"]:
            return Detection(
                "slimsam_global",
                None,
                f"a globally-pruned SlimSAM encoder with split q/k/v and per-layer widths ({shape})",
            )
        for v in VARIANTS.values():
            if v.encoder != "vit":
                continue
            a = v.encoder_args
            if (
                a["embed_dim"] == sig["embed_dim"]
                and a["depth"] == sig["depth"]
                and a["mlp_dim"] == sig["mlp_dim"]
                and a["num_heads"] == sig["num_heads"]
                and tuple(a["global_attn_indexes"]) == sig["global_attn_indexes"]
            ):
                return Detection(v.family, None if encoder_only else v.name, f"{v.description} ({shape}){note}")
        return Detection("sam", None, f"a SAM-style ViT encoder that matches no known variant ({shape}){note}")

    if any(k.startswith(("prompt_encoder.", "mask_decoder.")) for k in keys) and not any(k.startswith(prefix) for k in keys):
        return Detection("unknown", None, "a prompt encoder / mask decoder without an image encoder")
    return Detection("unknown", None, f"not a SAM-family checkpoint (first keys: {', '.join(keys[:3])})")


# ---- reading -------------------------------------------------------------------------------------
@dataclass
class CheckpointInfo:
    path: str
    sha256: str
    variant: str
    family: str
    detected: str  # description of what the file looks like
    container: str  # "state_dict", "dict['model']", "dict['state_dict']", "pickled module"
    num_tensors: int
    num_params: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) format or an older torch
        return []


def _damaged(path: Path, what: str = "damaged, truncated, or another file type") -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({what})",
        hint="re-download it (`samdeploy models download NAME`) and check its SHA-256, or point --checkpoint at the right file",
    )


def _check_zip_integrity(path: Path) -> None:
    """CRC-check every member of a zip-format (torch >= 1.6) checkpoint. torch.load does not verify
    CRCs, so changed bytes inside a weight record would otherwise load silently as wrong weights."""
    if not zipfile.is_zipfile(path):
        return  # legacy format, raw pickle or foreign bytes: torch.load decides
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise _damaged(path, f"corrupt zip container: {type(exc).__name__}: {exc}") from None
    if bad is not None:
        raise CheckpointError(
            f"{path} is corrupt: zip member {bad!r} fails its CRC-32 check (its bytes changed after the file "
            "was written, e.g. a bad download or disk error); the weights it holds cannot be trusted",
            hint="re-download it (`samdeploy models download NAME`) and compare its SHA-256 with the registry",
        )


def _pickle_globals(path: Path) -> list[str] | None:
    """Scan (never execute) the pickle stream of ``path``: the Python globals it names, or None if
    the file is not a parseable pickle (zip checkpoints: their ``data.pkl`` member)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return None
                data = zf.read(member)
        else:
            data = path.read_bytes()
        names: list[str] = []
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
            elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                strings.append(str(arg))
        return list(dict.fromkeys(names))
    except Exception:
        return None


_SAFE_GLOBAL_PREFIXES = ("torch._utils._rebuild", "collections.OrderedDict", "torch.FloatStorage", "torch.HalfStorage",
                         "torch.BFloat16Storage", "torch.DoubleStorage", "torch.LongStorage", "torch.IntStorage",
                         "torch.ByteStorage", "torch.BoolStorage", "torch.serialization._get_layout", "torch.float",
                         "torch.half", "torch.bfloat16", "torch.device", "torch.Size")


def _unsafe_pickle_error(path: Path, names: list[str]) -> UnsafeCheckpointError:
    shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
    return UnsafeCheckpointError(
        f"{path} contains pickled Python objects{f' referencing {shown}' if shown else ''}, not a plain "
        "state_dict of tensors (it needs torch.load(weights_only=False)). Unpickling it runs code named "
        "inside the file, which can execute arbitrary commands (this is how Q-TinySAM and the "
        "global-pruned SlimSAM files are stored)",
        hint="only if you trust where the file came from, pass --trust-pickle "
        "(load_checkpoint(..., trust_pickle=True)); the classes it names must be importable. "
        "Better: save `model.state_dict()` from the original code once and load that file",
    )


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    _check_zip_integrity(path)
    damaged = _damaged(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if trust_pickle:
            raise damaged from None
        names = _unsafe_globals(path)
        # "Unsupported global" = a real pickle naming Python classes. Other weights-only failures
        # ("Unsupported operand 149" from a plain pickle.dump, ...) may still be a valid pickle of
        # Python objects: scan the opcodes (without executing anything) before calling it damaged.
        if not names:
            scanned = _pickle_globals(path)
            unsafe = [n for n in scanned or [] if not n.startswith(_SAFE_GLOBAL_PREFIXES)]
            if scanned is not None and ("Unsupported global" in str(exc) or unsafe):
                raise _unsafe_pickle_error(path, unsafe) from None
        if "Unsupported global" in str(exc) or names:
            raise _unsafe_pickle_error(path, names) from None
        raise damaged from None
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:
        # only with trust_pickle: the pickle names classes that are not importable here
        raise CheckpointError(
            f"{path} is a pickled object whose classes cannot be imported here ({type(exc).__name__}: {exc})",
            hint="put the original project's code (e.g. the TinySAM or SlimSAM repository) on PYTHONPATH, "
            "or export `model.state_dict()` with that code and load the resulting file",
        ) from None
    except Exception as exc:  # the unpickler fails in many ways on damaged bytes (struct.error, EOFError, ...)
        if trust_pickle and "magic number" in str(exc) and _pickle_globals(path) is not None:
            # a plain pickle.dump() file (not torch.save): the user trusts it, so unpickle it as such
            try:
                with open(path, "rb") as fh:
                    return pickle.load(fh)
            except (ModuleNotFoundError, AttributeError, ImportError) as exc2:
                raise CheckpointError(
                    f"{path} is a pickled object whose classes cannot be imported here ({type(exc2).__name__}: {exc2})",
                    hint="put the original project's code on PYTHONPATH, or export `model.state_dict()` with it",
                ) from None
            except Exception:
                raise damaged from None
        raise damaged from None


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict()), "pickled module"
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return dict(inner.state_dict()), f"pickled module in dict[{key!r}]"
            if _is_tensor_dict(inner):
                return dict(inner), f"dict[{key!r}]"
        if _is_tensor_dict(obj):
            return dict(obj), "state_dict"
        keys = ", ".join(map(str, list(obj)[:6]))
        raise CheckpointError(
            f"{path} holds a dict that is not a state_dict (top-level keys: {keys or 'none'})",
            hint="expected a state_dict of tensors, or one under 'model' / 'state_dict'",
        )
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return dict(obj.state_dict()), "pickled object with state_dict()"
    raise CheckpointError(
        f"{path} holds a {type(obj).__module__}.{type(obj).__name__}, which has no state_dict",
        hint="save the model's weights with torch.save(model.state_dict(), path) and load that file",
    )


def _strip_wrappers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DataParallel's ``module.`` segments (official SAM-family names never contain one)."""
    if not any(k.startswith("module.") or ".module." in k for k in sd):
        return sd
    return {re.sub(r"(^|\.)module\.", r"\1", k): v for k, v in sd.items()}


def _check_finite(sd: Mapping[str, torch.Tensor], path: Path) -> None:
    bad: list[str] = []
    for k, t in sd.items():
        if t.is_floating_point() or t.is_complex():
            if t.device.type == "meta" or t.numel() == 0:
                continue
            if not bool(torch.isfinite(t).all()):
                bad.append(k)
    if bad:
        first = sd[bad[0]]
        n_nan = int(torch.isnan(first).sum())
        n_inf = int(torch.isinf(first).sum())
        raise CheckpointError(
            f"{path} has non-finite weights (NaN/Inf) in {len(bad)} tensor(s): {_names(bad, 4)} "
            f"(first: {n_nan} NaN, {n_inf} Inf of {first.numel()} values); a model built from it "
            "would output garbage",
            hint="the training run diverged or the file is damaged: use another checkpoint or re-download it",
        )


def read_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file -> (state_dict, container description). See the module docstring."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"checkpoint not found: {path}", hint="check the path, or `samdeploy models download NAME`")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a checkpoint file", hint="pass the .pth/.pt file itself")
    obj = _torch_load(path, trust_pickle)
    sd, container = _unwrap(obj, path)
    _check_finite(sd, path)
    return _strip_wrappers(sd), container


# ---- matching ------------------------------------------------------------------------------------
def _names(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def _mismatch_report(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> list[str]:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    lines = []
    if missing:
        lines.append(f"{len(missing)} missing keys: {_names(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected keys: {_names(unexpected)}")
    if shapes:
        lines.append(f"{len(shapes)} shape mismatches (file vs model): {_names(shapes, 2)}")
    return lines


def load_checkpoint(
    path: str | os.PathLike,
    variant: str = "auto",
    trust_pickle: bool = False,
) -> tuple["Sam", CheckpointInfo]:
    """Read ``path``, check it against ``variant`` (or the detected one), build and load our ``Sam``
    strictly, in eval mode. Returns ``(model, info)``; ``model.weights_sha256`` is the file's SHA-256."""
    from .build import build_model

    path = Path(path)
    sd, container = read_state_dict(path, trust_pickle=trust_pickle)
    det = detect_variant(sd)
    notes: list[str] = []

    if variant in (None, "", "auto"):
        if not det.supported:
            raise CheckpointError(
                f"{path} looks like {det.description}, which samdeploy cannot load",
                hint=f"supported: {', '.join(VARIANTS)} (official PyTorch checkpoints; `samdeploy models list`)",
            )
        chosen = det.variant
        if det.ambiguous_with:
            other = det.ambiguous_with[0]
            differs = get_variant(other).decoder != get_variant(chosen).decoder
            notes.append(
                f"keys and shapes are identical for {chosen} and {', '.join(det.ambiguous_with)}; picked {chosen}. "
                f"Pass --model {other} if these are {other} weights"
                + (" (it changes the decoder contract)" if differs else " (only the recorded model name changes)")
            )
    else:
        chosen = get_variant(variant).name
        same = det.variant == chosen or chosen in det.ambiguous_with
        if not same and det.family not in ("unknown",):
            suggestion = f"pass --model {det.variant} (or --model auto)" if det.supported else "use a checkpoint of the requested model"
            raise CheckpointError(
                f"{path} looks like {det.description}, not {chosen} ({get_variant(chosen).description})",
                hint=suggestion,
            )

    model = build_model(chosen)
    expected = model.state_dict()
    problems = _mismatch_report(expected, sd)
    if problems:
        raise CheckpointError(
            f"{path} does not match {chosen} exactly; it looks like {det.description}:\n    " + "\n    ".join(problems),
            hint="the file is incomplete, damaged or of another model: re-download it, or pass the right --model",
        )
    model.load_state_dict(sd, strict=True)  # copies and casts (fp16 files become fp32)
    sha = sha256_file(path)
    model.weights_sha256 = sha
    model.eval()
    info = CheckpointInfo(
        path=str(path),
        sha256=sha,
        variant=chosen,
        family=get_variant(chosen).family,
        detected=det.description,
        container=container,
        num_tensors=len(sd),
        num_params=sum(int(t.numel()) for t in sd.values() if t.is_floating_point()),
        notes=notes,
    )
    if container != "state_dict":
        info.notes.append(f"weights read from {container}")
    return model, info
