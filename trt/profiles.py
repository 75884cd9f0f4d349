"""Optimization profiles (min/opt/max shapes) generated from the contract, never typed by hand.

Every dynamic axis of a samdeploy graph is one of these *symbols*:

  ``B``  the leading batch (images for the encoder, prompts for the decoder, tracked objects for the
         three video graphs of ``samdeploy export --video``)
  ``N``  points per prompt (clicks + box corners + the padding point), decoder and track_decoder
  ``R``  memory frames per object (memory_attention): conditioning frames + the last num_maskmem-1 frames
  ``P``  object pointers per object (memory_attention): conditioning frames + the last
         max_obj_ptrs_in_encoder-1 frames

The contract (:mod:`samdeploy.contract`) fixes which axis of which input is which symbol; the user
gives one range per symbol (``--max-prompts``, ``--max-points``, ``--max-objects``,
``--max-cond-frames``), so every input that shares a symbol gets the same min/opt/max. That makes
the nanosam #40 failure (``point_labels`` max 1x1 next to ``point_coords`` max 1x10x2) impossible
by construction.

The ONNX file is read too: a dimension that the file has fixed is kept fixed (and must agree with
the contract), a dynamic dimension must be one the contract knows about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Union

from ..contract import ENCODER_INPUT, VIDEO_GRAPHS, ModelContract, decoder_feeds
from ..errors import ContractError, InputError

Dim = Union[int, str]  # an int is fixed; "B"/"N"/"R"/"P" are the symbols


def contract_input_axes(contract: ModelContract, role: str) -> dict[str, tuple[Dim, ...]]:
    """Input name -> axes (ints or symbols), from the contract's graph I/O."""
    if role == "encoder":
        s = int(contract.preprocess.input_size)  # the encoder input (not the prompt frame)
        return {ENCODER_INPUT: ("B", 3, s, s)}
    if role == "decoder":
        low = int(contract.decoder.low_res_size)
        # every encoder output the decoder consumes arrives with batch 1 (one image per call)
        embeddings = {n: (1, *(int(x) for x in contract.embedding_shape(n))) for n in contract.decoder.embedding_inputs}
        return decoder_feeds(embeddings, ("B", "N", 2), ("B", "N"), ("B", 1, low, low), ("B",))
    if role in VIDEO_GRAPHS:
        return _video_input_axes(contract, role)
    raise InputError(f"graph role must be 'encoder', 'decoder' or one of {', '.join(VIDEO_GRAPHS)}, got {role!r}")


def _video_input_axes(contract: ModelContract, role: str) -> dict[str, tuple[Dim, ...]]:
    """The video graphs (layout at the top of :mod:`samdeploy.contract`): every per-object input has the
    object batch B first; the image encoder's outputs arrive with batch 1 (one frame per call)."""
    v = contract.video
    if v is None:
        raise ContractError(f"the contract of {contract.model_id} has no video graphs",
                            hint="re-export with `samdeploy export --video`")
    low = int(contract.decoder.low_res_size)
    image = (1, *(int(x) for x in contract.embedding_shape(v.attn_image)))
    hidden, h, w = image[1:]
    if role == "memory_attention":
        t, d, n_mem = int(v.tokens_per_frame), int(v.mem_dim), int(v.num_maskmem)
        return {v.attn_image: image, v.attn_memory: ("B", "R", t, d), v.attn_memory_time: ("B", "R", n_mem),
                v.attn_memory_valid: ("B", "R"), v.attn_obj_ptrs: ("B", "P", hidden),
                v.attn_obj_ptr_tpos: ("B", "P"), v.attn_obj_ptr_valid: ("B", "P")}
    if role == "memory_encoder":
        return {v.menc_image: image, v.menc_mask: ("B", 1, low, low), v.menc_object_score: ("B", 1),
                v.menc_binarize: ("B",)}
    feats = {n: (1, *(int(x) for x in contract.embedding_shape(n))) for n in v.track_feature_inputs}
    return {v.track_conditioned: ("B", hidden, h, w), **feats, v.track_point_coords: ("B", "N", 2),
            v.track_point_labels: ("B", "N"), v.track_mask_input: ("B", 1, low, low), v.track_has_mask_input: ("B",)}


@dataclass(frozen=True)
class SymbolRange:
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (1 <= self.min <= self.opt <= self.max):
            raise InputError(
                f"profile range must satisfy 1 <= min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}",
                hint="fix --max-prompts/--opt-prompts/--max-points/--opt-points/--max-objects/--opt-objects",
            )


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile: input name -> (min, opt, max) shapes."""

    shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {n: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for n, s in self.shapes.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, Sequence[int]]]) -> "Profile":
        return cls({n: (tuple(v["min"]), tuple(v["opt"]), tuple(v["max"])) for n, v in d.items()})

    def max_of(self, name: str, axis: int) -> int:
        return int(self.shapes[name][2][axis])

    def is_static(self) -> bool:
        return all(s[0] == s[2] for s in self.shapes.values())


def decoder_ranges(
    max_prompts: int = 16, max_points: int = 8, opt_prompts: Optional[int] = None, opt_points: Optional[int] = None
) -> dict[str, SymbolRange]:
    """Ranges for the decoder symbols.

    ``max_points`` counts every row of ``point_coords``: clicks, the two box corners and the padding
    point the runtime appends when a prompt has no box. Defaults for opt: one prompt with one click
    + padding point (N=2), the interactive case."""
    opt_b = 1 if opt_prompts is None else int(opt_prompts)
    opt_n = min(2, int(max_points)) if opt_points is None else int(opt_points)
    return {"B": SymbolRange(1, opt_b, int(max_prompts)), "N": SymbolRange(1, opt_n, int(max_points))}


def video_ranges(
    contract: ModelContract,
    max_objects: int = 4,
    opt_objects: Optional[int] = None,
    max_cond_frames: int = 4,
    max_points: int = 8,
    opt_points: Optional[int] = None,
) -> dict[str, SymbolRange]:
    """Ranges for the video graphs, from the contract's memory settings (SAM2VideoPredictor's).

    ``B`` = objects tracked in one call (the Tracker splits larger sets into chunks of ``max_objects``);
    ``R`` = 1 .. ``num_maskmem - 1 + max_cond_frames`` (every conditioning frame is attended, plus the
    recent frames), opt ``num_maskmem`` (one prompt frame + a full recent window, the steady state);
    ``P`` = 1 .. ``max_obj_ptrs_in_encoder - 1 + max_cond_frames``, opt ``max_obj_ptrs_in_encoder``;
    ``N`` as for the decoder (the tracker always sends >= 2 rows: clicks or a placeholder + SAM2's
    padding point), opt 2."""
    v = contract.video
    if v is None:
        raise ContractError(f"the contract of {contract.model_id} has no video graphs",
                            hint="re-export with `samdeploy export --video`")
    if int(max_cond_frames) < 1:
        raise InputError(f"--max-cond-frames must be >= 1, got {max_cond_frames}",
                         hint="every tracked object has at least the frame it was prompted on")
    n_mem, n_ptr, c = int(v.num_maskmem), int(v.max_obj_ptrs_in_encoder), int(max_cond_frames)
    r_max, p_max = n_mem - 1 + c, n_ptr - 1 + c
    opt_n = min(2, int(max_points)) if opt_points is None else int(opt_points)
    return {
        "B": SymbolRange(1, 1 if opt_objects is None else int(opt_objects), int(max_objects)),
        "R": SymbolRange(1, min(n_mem, r_max), r_max),
        "P": SymbolRange(1, min(n_ptr, p_max), p_max),
        "N": SymbolRange(1, opt_n, int(max_points)),
    }


def encoder_ranges(max_images: int = 1, opt_images: Optional[int] = None) -> dict[str, SymbolRange]:
    return {"B": SymbolRange(1, int(opt_images or 1), int(max_images))}


def onnx_input_dims(model_or_path) -> dict[str, tuple[Union[int, str, None], ...]]:
    """Graph input name -> dims as stored: int for fixed, the dim_param string (or None) for dynamic."""
    import onnx  # noqa: PLC0415

    model = onnx.load(model_or_path, load_external_data=False) if isinstance(model_or_path, str) else model_or_path
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, tuple[Union[int, str, None], ...]] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        out[vi.name] = tuple(dims)
    return out


def make_profile(
    contract: ModelContract,
    role: str,
    ranges: Mapping[str, SymbolRange],
    onnx_dims: Optional[Mapping[str, Sequence[Union[int, str, None]]]] = None,
) -> Profile:
    """Build the profile for one graph. ``onnx_dims`` (from :func:`onnx_input_dims`) is checked
    against the contract: names must match, fixed dims must agree, dynamic dims must be symbols."""
    axes = contract_input_axes(contract, role)
    symbol_fixed: dict[str, int] = {}  # a symbol the ONNX file fixed somewhere is fixed everywhere
    if onnx_dims is not None:
        if set(onnx_dims) != set(axes):
            raise ContractError(
                f"{role} graph inputs {sorted(onnx_dims)} do not match contract v{contract.contract_version} "
                f"inputs {sorted(axes)}",
                hint="build engines only from graphs written by `samdeploy export` / `samdeploy calibrate`",
            )
        # dim_param names shared across inputs must map to the same symbol
        param_symbol: dict[str, Dim] = {}
        for name, want in axes.items():
            for h, w in zip(tuple(onnx_dims[name]), want):
                if isinstance(h, int) and isinstance(w, str):
                    if symbol_fixed.setdefault(w, h) != h:
                        raise ContractError(f"{role} axis {w} is fixed to both {symbol_fixed[w]} and {h} in the ONNX file")
        for name, want in axes.items():
            have = tuple(onnx_dims[name])
            if len(have) != len(want):
                raise ContractError(f"{role} input {name} has rank {len(have)} in the ONNX file, contract says {len(want)}")
            for i, (h, w) in enumerate(zip(have, want)):
                if isinstance(h, int) and isinstance(w, int) and h != w:
                    raise ContractError(f"{role} input {name} dim {i} is {h} in the ONNX file, contract says {w}")
                if not isinstance(h, int) and isinstance(w, int):
                    continue  # dynamic in the file where the contract is fixed: pin it to the contract value
                if isinstance(h, str) and h:
                    prev = param_symbol.setdefault(h, w)
                    if prev != w:
                        raise ContractError(
                            f"{role} ONNX dim '{h}' is used for both {prev} and {w}",
                            hint="re-export the model; its dynamic axes are inconsistent",
                        )

    def pick(name: str, which: str) -> tuple[int, ...]:
        dims = []
        for w in axes[name]:
            if isinstance(w, int):
                dims.append(w)
            elif w in symbol_fixed:
                dims.append(symbol_fixed[w])
            else:
                if w not in ranges:
                    raise InputError(f"no range given for the {role} axis {w}")
                dims.append(int(getattr(ranges[w], which)))
        return tuple(dims)

    shapes = {n: (pick(n, "min"), pick(n, "opt"), pick(n, "max")) for n in axes}
    return Profile(shapes)


def shape_spec(profile: Profile, which: str) -> str:
    """trtexec shape spec: ``name:1x2x2,other:1x2`` (``which`` = min/opt/max)."""
    idx = {"min": 0, "opt": 1, "max": 2}[which]
    return ",".join(f"{n}:{'x'.join(str(d) for d in s[idx])}" for n, s in profile.shapes.items())
