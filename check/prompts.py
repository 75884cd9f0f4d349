"""The deterministic prompt suite of ``samdeploy check`` (NumPy only).

Prompts are placed on each image from a generator seeded by (seed, image name), in original-image
pixels, then encoded for decoder.onnx exactly as the contract says (and the runtime does): coordinates
mapped into the resized prompt frame (``contract.frame_size``), clicks first, then a box as two corner points (labels
2 and 3), and the padding point (0, 0, -1) appended when a prompt has no box.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..contract import ModelContract
from ..runtime.prompts import pack_for
from ..runtime.transforms import apply_boxes, apply_coords

# (case name, what it exercises)
CASES = (
    ("point", "one positive click"),
    ("multi_point", "two positive clicks + one negative"),
    ("box", "a box"),
    ("box_point", "a box + one positive click"),
    ("mask_input", "one click + the previous low-res mask fed back"),
    ("batch5", "5 prompts in one call (clicks and boxes)"),
)
CASE_NAMES = tuple(name for name, _ in CASES)


@dataclass(frozen=True)
class Prompt:
    """One prompt in original-image pixels."""

    points: np.ndarray  # [n, 2] (x, y)
    labels: np.ndarray  # [n] 1 positive, 0 negative
    box: np.ndarray | None = None  # [4] x0, y0, x1, y1


@dataclass
class DecoderCall:
    """One decoder call of the suite: B prompts of N points, plus whether its mask input is the
    previous call's output (``mask_from``)."""

    case: str
    prompts: list[Prompt]
    point_coords: np.ndarray  # [B, N, 2] prompt frame
    point_labels: np.ndarray  # [B, N]
    mask_from: str | None = None  # name of the case whose output is fed back as mask_input

    @property
    def batch(self) -> int:
        return int(self.point_coords.shape[0])


def encode_prompt(prompt: Prompt, original_hw: tuple[int, int], resized_hw: tuple[int, int], contract: ModelContract) -> tuple[np.ndarray, np.ndarray]:
    """One prompt -> (coords [N, 2], labels [N]) for decoder.onnx, packed by the runtime's packer."""
    coords = apply_coords(np.asarray(prompt.points, np.float32).reshape(1, -1, 2), original_hw, resized_hw)
    labels = np.asarray(prompt.labels, np.float32).reshape(1, -1)
    corners = None if prompt.box is None else apply_boxes(np.asarray(prompt.box, np.float32).reshape(1, 4), original_hw, resized_hw)
    pc, pl = pack_for(contract, coords, labels, corners, 1)
    return pc[0], pl[0]


def encode_batch(prompts: list[Prompt], original_hw, resized_hw, contract: ModelContract) -> tuple[np.ndarray, np.ndarray]:
    """Prompts -> ([B, N, 2], [B, N]); shorter prompts are filled up with padding points (0, 0, -1)
    (SAM's suite encodes every batch to one length; SAM2 appends its padding point after boxes too)."""
    enc = [encode_prompt(p, original_hw, resized_hw, contract) for p in prompts]
    n = max(c.shape[0] for c, _ in enc)
    pad = contract.prompts.labels["pad"]
    coords = [np.concatenate([c, np.zeros((n - len(c), 2), np.float32)]) for c, _ in enc]
    labels = [np.concatenate([lab, np.full(n - len(lab), pad, np.float32)]) for _, lab in enc]
    return np.stack(coords), np.stack(labels)


def _rng(seed: int, image_name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{image_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _point(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A point in the central 80% of the image (pixel coordinates, not necessarily integers)."""
    return np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h], np.float32)


def _box_around(rng: np.random.Generator, p: np.ndarray, h: int, w: int) -> np.ndarray:
    bw, bh = rng.uniform(0.15, 0.5) * w, rng.uniform(0.15, 0.5) * h
    x0, y0 = np.clip(p[0] - bw * rng.uniform(0.3, 0.7), 0, w - 1), np.clip(p[1] - bh * rng.uniform(0.3, 0.7), 0, h - 1)
    x1, y1 = np.clip(x0 + bw, x0 + 1, w - 1), np.clip(y0 + bh, y0 + 1, h - 1)
    return np.array([x0, y0, x1, y1], np.float32)


def prompt_suite(image_name: str, original_hw: tuple[int, int], resized_hw: tuple[int, int], contract: ModelContract, seed: int = 0) -> list[DecoderCall]:
    """The decoder calls for one image, in order (``mask_input`` feeds back ``point``'s output)."""
    h, w = original_hw
    rng = _rng(seed, image_name)
    p1, p2, p3 = (_point(rng, h, w) for _ in range(3))
    box = _box_around(rng, p1, h, w)
    single = [Prompt(p1[None], np.array([1]))]
    cases: list[tuple[str, list[Prompt], str | None]] = [
        ("point", single, None),
        ("multi_point", [Prompt(np.stack([p1, p2, p3]), np.array([1, 1, 0]))], None),
        ("box", [Prompt(np.zeros((0, 2), np.float32), np.zeros(0), box)], None),
        ("box_point", [Prompt(p1[None], np.array([1]), box)], None),
        ("mask_input", single, "point"),
    ]
    batch = []
    for i in range(5):  # all encode to N=3: [pos, neg, pad] or [pos, box TL, box BR]
        q = _point(rng, h, w)
        if i % 2 == 0:
            batch.append(Prompt(np.stack([q, _point(rng, h, w)]), np.array([1, 0])))
        else:
            batch.append(Prompt(q[None], np.array([1]), _box_around(rng, q, h, w)))
    cases.append(("batch5", batch, None))
    calls = []
    for name, prompts, mask_from in cases:
        coords, labels = encode_batch(prompts, original_hw, resized_hw, contract)
        calls.append(DecoderCall(name, prompts, coords, labels, mask_from))
    return calls


def mask_feedback(previous_masks: np.ndarray, token: int) -> np.ndarray:
    """The previous call's low-res logits of ``token`` as the next call's mask_input [B,1,256,256]."""
    return np.ascontiguousarray(previous_masks[:, token : token + 1], dtype=np.float32)
