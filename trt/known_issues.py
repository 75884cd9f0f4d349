"""TensorRT bugs known to make a samdeploy graph build but compute wrong results.

These are warnings, not errors: the engine builds, and whether a given graph is hit can only be
measured on the device (``jetson/verify.py`` compares every engine output with ONNX Runtime). The
same list is reported by ``samdeploy doctor`` (as findings), printed by ``samdeploy build`` and
recorded in the engine manifest (``EngineManifest.known_issues``), so a user on an affected
TensorRT sees it before, during and after the build.

Each issue is decided from the **model contract** (family / contract fields) and the target
TensorRT version -- never from file names.

Entries (sources: /work/shared/reference/landscape.md §1.5 and theme 8):

``trt-sam2-decoder-miscompile``
    shalomsb/sam2-trt-tracker, JETSON_TRT_ISSUES.md: on Jetson AGX Orin / JetPack 6 (TensorRT
    10.3) the SAM2.1 mask-decoder engine builds but its outputs are silently wrong (a k/v
    projection MatMul; output cosine 0.62 vs the ONNX reference). The author reports it fixed in
    TensorRT >= 10.9; JetPack 6 has no upgrade path to it. samdeploy's SAM2 decoder graph has the
    same image-token k/v projections (``/k_proj/MatMul``, ``/v_proj/MatMul``) but is factored
    differently; it has NOT been run on TensorRT 10.3 by us, so whether it is hit is unknown --
    hence a warning plus the on-device check.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from ..contract import SAM2_OBJECT_SCORE, ModelContract

# The one place the threshold lives: first TensorRT release reported to compute the SAM2 mask
# decoder correctly.
SAM2_DECODER_FIXED_IN: tuple[int, int] = (10, 9)
# What an unknown target is assumed to be (doctor's default target: JetPack 6).
ASSUMED_TARGET: tuple[int, int] = (10, 3)

_DECODER_REMEDY = (
    "use TensorRT >= %s, or build only the encoder with TensorRT (`samdeploy build --graphs encoder`) and run "
    "decoder.onnx on ONNX Runtime (CUDA or CPU provider); check any decoder engine on the device with "
    "`python jetson/verify.py --onnx-dir EXPORT --engine-dir ENGINES` (compares masks, IoU and object_score_logits)"
)
# track_decoder.onnx (`export --video`) is the same mask decoder fed memory-conditioned features
_TRACK_REMEDY = (
    "use TensorRT >= %s, or track with `--backend onnxruntime` (the CUDA provider on a GPU); track_decoder is "
    "the same mask decoder as decoder.onnx, fed memory-conditioned features, so it is assumed to be hit alike"
)

SAM2_FAMILIES = frozenset({"sam2"})  # ModelContract.family of SAM 2 and SAM 2.1 exports


@dataclass(frozen=True)
class KnownIssue:
    code: str
    role: str  # the graph concerned: "encoder" | "decoder" | "track_decoder" (the video graphs' mask decoder)
    message: str
    remedy: str
    fixed_in: str  # TensorRT version that fixes it, "MAJOR.MINOR"
    target: str  # the TensorRT version it was judged against ("10.3", "10.x", "unknown (assumed 10.3)")
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.code}: {self.message}; {self.remedy}"


def parse_trt_version(version: Optional[str]) -> Optional[tuple[int, ...]]:
    """``"10.3.0.30"`` -> ``(10, 3)``; ``"10"`` -> ``(10,)``; ``None``/unparsable -> ``None``."""
    if not version:
        return None
    m = re.match(r"^\s*(\d+)(?:\.(\d+))?", str(version))
    if not m:
        return None
    return (int(m.group(1)),) if m.group(2) is None else (int(m.group(1)), int(m.group(2)))


def is_sam2_family_decoder(contract: ModelContract) -> bool:
    """A decoder with SAM 2's mask decoder, from the contract: the SAM2 family, or a decoder that
    returns SAM 2's object-score output (families derived from SAM 2 carry it too)."""
    return contract.family in SAM2_FAMILIES or SAM2_OBJECT_SCORE in tuple(contract.decoder.extra_outputs)


def _affected(target: Optional[Sequence[int]], fixed_in: tuple[int, int]) -> tuple[bool, str]:
    """(may the target be affected, how the target is described)."""
    if target is None:
        return True, "unknown (assumed %d.%d, JetPack 6)" % ASSUMED_TARGET
    t = tuple(int(x) for x in target)
    if len(t) == 1:  # major only (``build --dry-run --trt-major 10``): any minor is possible
        return t[0] <= fixed_in[0], f"{t[0]}.x"
    return t[:2] < fixed_in, f"{t[0]}.{t[1]}"


def known_issues(contract: ModelContract, role: str, target: Optional[Sequence[int]]) -> list[KnownIssue]:
    """Known TensorRT miscompiles that apply to the ``role`` graph of ``contract`` on TensorRT
    ``target`` ((major, minor), (major,) when only the major is known, or None = unknown)."""
    issues: list[KnownIssue] = []
    if role in ("decoder", "track_decoder") and is_sam2_family_decoder(contract):
        hit, described = _affected(target, SAM2_DECODER_FIXED_IN)
        if hit:
            fixed = "%d.%d" % SAM2_DECODER_FIXED_IN
            issues.append(KnownIssue(
                code="trt-sam2-decoder-miscompile",
                role=role,
                message=(
                    f"TensorRT < {fixed} (JetPack 6 ships 10.3) is reported to build the SAM2 mask decoder but "
                    "compute wrong outputs (a k/v projection MatMul; output cosine 0.62 vs ONNX Runtime); "
                    f"target TensorRT {described}"
                ),
                remedy=(_TRACK_REMEDY if role == "track_decoder" else _DECODER_REMEDY) % fixed,
                fixed_in=fixed,
                target=described,
                source="shalomsb/sam2-trt-tracker JETSON_TRT_ISSUES.md (landscape.md §1.5, theme 8)",
            ))
    return issues
