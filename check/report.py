"""The result of ``samdeploy check``: gates, metrics, a human table and JSON (no torch)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import GateFailedError


@dataclass
class Gate:
    name: str
    section: str  # "encoder" | "decoder" | "end_to_end"
    value: float
    limit: float | None
    op: str
    passed: bool
    advisory: bool = False  # reported, does not decide pass/fail

    @property
    def failed(self) -> bool:
        return not self.passed and not self.advisory

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "section": self.section, "value": _num(self.value), "limit": self.limit,
            "op": self.op, "passed": self.passed, "advisory": self.advisory,
        }


@dataclass
class CheckReport:
    export_dir: str
    model_id: str
    precision: str
    thresholds: dict[str, float | None]
    backend: str = "onnxruntime"
    provider: str = "cpu"
    images: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_image: dict[str, dict[str, Any]] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    reference_logit_median_abs: float | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.gates) and not any(g.failed for g in self.gates)

    @property
    def failures(self) -> list[Gate]:
        return [g for g in self.gates if g.failed]

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "passed": self.passed,
            "precision": self.precision,
            "model_id": self.model_id,
            "export_dir": self.export_dir,
            "backend": self.backend,
            "provider": self.provider,
            "images": self.images,
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "per_image": self.per_image,
            "gates": [g.to_dict() for g in self.gates],
            "reference_logit_median_abs": self.reference_logit_median_abs,
            "notes": self.notes,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 2),
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def table(self) -> str:
        lines = [
            f"samdeploy check: {self.model_id}",
            f"  precision {self.precision}, {self.backend} ({self.provider}), {len(self.images)} image(s): {', '.join(self.images)}",
            "",
            f"  {'metric':<22}{'section':<12}{'value':>12}  {'limit':<14}result",
        ]
        for g in self.gates:
            limit = "-" if g.limit is None else f"{g.op} {g.limit:g}"
            result = "pass" if g.passed else "FAIL"
            if g.advisory and g.limit is not None:
                result += " (advisory)"
            elif g.limit is None:
                result = "info"
            lines.append(f"  {g.name:<22}{g.section:<12}{_fmt(g.value):>12}  {limit:<14}{result}")
        for section in ("decoder", "end_to_end"):
            per_token = self.metrics.get(section, {}).get("mask_iou_per_token")
            if per_token:
                toks = "  ".join(f"t{t}: mean {v['mean']:.4f} min {v['min']:.4f}" for t, v in per_token.items())
                lines.append(f"  mask IoU per token ({section}): {toks}")
        if self.reference_logit_median_abs is not None:
            lines.append(f"  reference mask logits: median |logit| {self.reference_logit_median_abs:.2f}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        verdict = "PASS" if self.passed else "FAIL: " + ", ".join(f"{g.section}.{g.name}" for g in self.failures)
        lines += ["", f"  {verdict}  ({self.seconds:.1f} s)"]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if not self.passed:
            what = ", ".join(f"{g.section}.{g.name}={_fmt(g.value)} (limit {g.op} {g.limit:g})" for g in self.failures)
            raise GateFailedError(
                f"parity check failed for {self.model_id} at {self.precision}: {what or 'nothing was compared'}",
                hint="the exported graphs do not match the PyTorch model; re-export from an eval-mode model with "
                "`samdeploy export`, or loosen a threshold with --threshold NAME=VALUE if this is expected",
            )


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.6f}".rstrip("0").rstrip(".") if v else "0"
    return f"{v:.3e}"


def _num(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    return v


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf as strings, numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    return _num(obj)
