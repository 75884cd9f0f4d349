"""Where the PyTorch model comes from: a checkpoint file, a registry download, or seeded random weights.

A :class:`ModelSource` is recorded in ``manifest.json`` so that ``samdeploy check`` can rebuild
exactly the model that was exported.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..errors import InputError, MissingFileError

RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "checkpoint" | "registry" | "random"
    variant: str  # "auto" until a checkpoint has been inspected
    checkpoint: str | None = None  # absolute path (checkpoint / registry)
    registry_name: str | None = None
    seed: int | None = None  # random
    realistic: bool = True  # random: decoder output layers rescaled to +-20 logits (models.init)
    trust_pickle: bool = False
    image_size: int | None = None  # SAM2: S x S encoder input (None: the variant's default, 1024)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSource":
        fields = {k: d[k] for k in ("kind", "variant", "checkpoint", "registry_name", "seed", "realistic", "trust_pickle",
                                          "image_size") if k in d}
        return cls(**fields)

    def describe(self) -> str:
        at = f" at {self.image_size}x{self.image_size}" if self.image_size else ""
        return self._describe() + at

    def _describe(self) -> str:
        if self.kind == "random":
            return f"random weights ({self.variant}, seed {self.seed}{'' if self.realistic else ', raw'})"
        if self.kind == "registry":
            return f"registry checkpoint {self.registry_name} ({self.checkpoint})"
        return f"checkpoint {self.checkpoint}"


def random_source(variant: str, seed: int = 0, realistic: bool = True) -> ModelSource:
    from ..models.variants import get_variant

    if variant in ("auto", "", None):
        raise InputError(
            "--random-weights needs an explicit --model variant (there is no checkpoint to detect it from)",
            hint="e.g. --model mobile_sam --random-weights --seed 0",
        )
    get_variant(variant)  # raises InputError listing the variants
    return ModelSource(kind="random", variant=variant, seed=int(seed), realistic=realistic)


def checkpoint_source(path: str | os.PathLike, variant: str = "auto", trust_pickle: bool = False) -> ModelSource:
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path}", hint="check the --checkpoint path")
    return ModelSource(kind="checkpoint", variant=variant or "auto", checkpoint=path, trust_pickle=trust_pickle)


def registry_source(name: str) -> ModelSource:
    """Download (or find in the cache) registry checkpoint ``name``; a variant name means its default
    checkpoint (``Variant.registry_name``). Offline, the registry's DownloadError tells the user to
    pass ``--checkpoint PATH``."""
    from ..models import registry
    from ..models.variants import VARIANTS

    if name in VARIANTS and VARIANTS[name].registry_name:
        name = VARIANTS[name].registry_name
    entry = registry.get_checkpoint(name)
    path = registry.download(name)
    return ModelSource(kind="registry", variant=entry.variant, checkpoint=os.path.abspath(path), registry_name=name)


def resolve_source(
    model: str = "auto",
    checkpoint: str | os.PathLike | None = None,
    random_weights: bool = False,
    seed: int = 0,
    trust_pickle: bool = False,
) -> ModelSource:
    """The CLI's model options -> a ModelSource (downloads registry checkpoints)."""
    if random_weights and checkpoint:
        raise InputError("--random-weights and --checkpoint are mutually exclusive", hint="pass one of them")
    if random_weights:
        return random_source(model, seed)
    if checkpoint:
        return checkpoint_source(checkpoint, model, trust_pickle)
    from ..models.variants import VARIANTS

    if model in ("auto", "", None):
        raise InputError(
            "no model given",
            hint="pass --checkpoint PATH, a registry name as --model (see `samdeploy models list`), "
            "or --model VARIANT --random-weights",
        )
    from ..models.registry import REGISTRY

    if model not in REGISTRY and not (model in VARIANTS and VARIANTS[model].registry_name):
        raise InputError(
            f"{model!r} is neither a variant nor a registry checkpoint",
            hint=f"variants: {', '.join(VARIANTS)}; registry: {', '.join(REGISTRY)}",
        )
    return registry_source(model)


def load_source(src: ModelSource, notes: list[str] | None = None):
    """Build the PyTorch ``Sam`` of ``src`` in eval mode (``sam.variant``/``sam.weights_sha256`` set).
    The checkpoint loader's remarks (e.g. "mobile_sam or tinysam?") are appended to ``notes``."""
    if src.kind == "random":
        from ..models.build import random_model

        sam = random_model(src.variant, seed=int(src.seed or 0), realistic=src.realistic)
    elif src.kind in ("checkpoint", "registry"):
        from ..models.checkpoint import load_checkpoint

        if not src.checkpoint or not os.path.isfile(src.checkpoint):
            raise MissingFileError(
                f"checkpoint not found: {src.checkpoint}",
                hint="pass --checkpoint PATH pointing at the checkpoint the model was exported from",
            )
        sam, info = load_checkpoint(src.checkpoint, variant=src.variant or "auto", trust_pickle=src.trust_pickle)
        if notes is not None:
            notes.extend(getattr(info, "notes", []))
    else:
        if src.kind == "onnx_import":
            raise InputError(
                "this model was imported from a foreign ONNX file (`samdeploy import`): there is no PyTorch "
                "model to compare it with",
                hint="check the import's own probe (printed by `samdeploy import`), or export from a checkpoint",
            )
        raise InputError(f"unknown model source kind {src.kind!r} in the manifest", hint="re-export the model")
    if src.image_size is not None:
        sam = with_image_size(sam, int(src.image_size))
    return sam.eval()


def check_image_size(size: int, variant: str | None = None) -> int:
    """``--image-size``: SAM2 / SAM2.1 only, a multiple of 32 in 256..4096 (Hiera's stride-32 stage and
    8x8 window position embedding; the memory encoder's stride 16)."""
    if variant not in (None, "", "auto"):
        from ..models.variants import get_variant

        if not get_variant(variant).sam2:
            raise InputError(f"--image-size is only for SAM2 / SAM2.1 models, not {variant}",
                             hint="drop --image-size (the encoder input of this family is fixed)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 256 or size > 4096 or size % 32:
        raise InputError(f"--image-size must be a multiple of 32 in 256..4096, got {size!r}",
                         hint="e.g. --image-size 512 or 1024 (the default)")
    return size


def with_image_size(sam, size: int):
    """A SAM2 model rebuilt for S x S inputs (same weights); other families are refused."""
    check_image_size(size)
    if not callable(getattr(sam, "with_image_size", None)):
        raise InputError(f"--image-size is only for SAM2 / SAM2.1 models, not {getattr(sam, 'variant', '?')}",
                         hint="drop --image-size (the encoder input of this family is fixed)")
    return sam.with_image_size(size)


def resolved(src: ModelSource, sam) -> ModelSource:
    """``src`` with the variant the loader detected (for "auto")."""
    if src.variant == sam.variant:
        return src
    return ModelSource(**{**asdict(src), "variant": sam.variant})
