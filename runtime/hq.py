"""HQ-SAM's answer from its decoder graph's outputs (NumPy only; see ``samdeploy.models.hq_sam``).

The graph returns the 4 SAM tokens' logits and the HQ token's (channel ``decoder.hq_token``); HQ-SAM's
official ``MaskDecoderHQ.forward`` combines them into ONE mask per prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def hq_select(iou: Any, low_res: Any, multimask: bool, hq_token_only: bool = False, hq_token: int = 4) -> tuple[Any, Any]:
    """HQ-SAM's answer from the decoder graph's outputs (official ``MaskDecoderHQ.forward``):
    iou [B,4], low_res [B,5,H,W] -> (scores [B,1], masks [B,1,H,W]) logits. NumPy only (no torch),
    ``hq_token`` is the HQ channel (``contract.decoder.hq_token``). Rule: multimask -> the best of
    tokens 1..3 by IoU, else token 0; its logits + the HQ logits (or the HQ logits alone with
    ``hq_token_only``); the score is that token's IoU."""
    iou = np.asarray(iou)
    low_res = np.asarray(low_res)
    rows = np.arange(iou.shape[0])
    if multimask:
        best = 1 + np.argmax(iou[:, 1:4], axis=1)  # the first maximum on ties, like the official max
    else:
        best = np.zeros(iou.shape[0], dtype=np.int64)
    scores = iou[rows, best][:, None]
    hq = low_res[:, hq_token : hq_token + 1]
    masks = hq if hq_token_only else low_res[rows, best][:, None] + hq
    return scores, masks
