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

Every key and shape must match the variant exactly (no ``strict=False``): a damaged, truncated or
foreign file raises :class:`~samdeploy.errors.CheckpointError` that says what the file looks like.
MobileSAM and TinySAM files have identical keys and shapes, so ``variant="auto"`` answers
``mobile_sam`` and says so in ``info.notes``; pass ``tinysam`` explicitly for TinySAM weights.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from .._io import sha256_file
from ..errors import CheckpointError, InputError, MissingFileError, UnsafeCheckpointError
from .variants import VARIANTS, get_variant

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
    keys = list(sd)

    def has(pattern: str) -> bool:
        return any(pattern in k for k in keys)

    if has("sam_mask_decoder.") or has("image_encoder.trunk."):
        v = "SAM 2.1" if "no_obj_embed_spatial" in sd else "SAM 2"
        return Detection("sam2", None, f"a {v} (Hiera) checkpoint")
    if has("vision_encoder.") or has("shared_image_embedding"):
        return Detection("hf_transformers", None, "a Hugging Face transformers SamModel checkpoint (HF key names)")
    if has("a_interval") or has("w_interval"):
        return Detection("q_tinysam", None, "a fake-quantized (Q-TinySAM-style) model with quantizer buffers")
    if has("mask_decoder.hf_token") or has("mask_decoder.compress_vit_feat"):
        return Detection("hq_sam", None, "an HQ-SAM checkpoint (MaskDecoderHQ)")
    if has("image_encoder.fuse_stage2"):
        return Detection("edgesam", None, "an EdgeSAM checkpoint (RepViT-M1 encoder)")
    if has("image_encoder.features."):
        return Detection("repvit_sam", None, "a RepViT-SAM checkpoint (RepViT-M2.3 encoder)")
    if has("image_encoder.backbone.stages."):
        return Detection("efficientvit_sam", None, "an EfficientViT-SAM checkpoint")
    if has("prompt_encoder.invalid_points") or has("final_output_upscaling_layers"):
        return Detection("efficient_sam", None, "a yformer EfficientSAM checkpoint (different decoder)")
    if "up_1.0.weight" in sd and has("backbone."):
        return Detection("nanosam", None, "a NanoSAM image-encoder checkpoint")
    return None


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


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    damaged = CheckpointError(
        f"{path} is not a readable PyTorch checkpoint (damaged, truncated, or another file type)",
        hint="re-download it (`samdeploy models download NAME`) and check its SHA-256, or point --checkpoint at the right file",
    )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path) if not trust_pickle else []
        # "Unsupported global" = a real pickle naming Python classes; other weights-only failures
        # ("Unsupported operand", "invalid load key") are damaged or foreign bytes.
        if not trust_pickle and ("Unsupported global" in str(exc) or names):
            shown = ", ".join(names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
            raise UnsafeCheckpointError(
                f"{path} is a pickled Python object{f' referencing {shown}' if shown else ''}, not a plain "
                "state_dict. Unpickling it runs code named inside the file, which can execute arbitrary "
                "commands (this is how Q-TinySAM and the global-pruned SlimSAM files are stored)",
                hint="only if you trust where the file came from, pass --trust-pickle "
                "(load_checkpoint(..., trust_pickle=True)); the classes it names must be importable. "
                "Better: save `model.state_dict()` from the original code once and load that file",
            ) from None
        raise damaged from None
    except (ModuleNotFoundError, AttributeError, ImportError) as exc:
        # only with trust_pickle: the pickle names classes that are not importable here
        raise CheckpointError(
            f"{path} is a pickled object whose classes cannot be imported here ({type(exc).__name__}: {exc})",
            hint="put the original project's code (e.g. the TinySAM or SlimSAM repository) on PYTHONPATH, "
            "or export `model.state_dict()` with that code and load the resulting file",
        ) from None
    except Exception:  # the unpickler fails in many ways on damaged bytes (struct.error, EOFError, ...)
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


def read_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read a checkpoint file -> (state_dict, container description). See the module docstring."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"checkpoint not found: {path}", hint="check the path, or `samdeploy models download NAME`")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a checkpoint file", hint="pass the .pth/.pt file itself")
    obj = _torch_load(path, trust_pickle)
    sd, container = _unwrap(obj, path)
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
                hint=f"supported: {', '.join(VARIANTS)} (official PyTorch checkpoints of SAM, SlimSAM-uniform, MobileSAM, TinySAM)",
            )
        chosen = det.variant
        if det.ambiguous_with:
            notes.append(
                f"keys and shapes are identical for {chosen} and {', '.join(det.ambiguous_with)}; picked {chosen}. "
                f"Pass --model {det.ambiguous_with[0]} if these are {det.ambiguous_with[0]} weights "
                "(it changes the decoder contract: always multimask)"
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
