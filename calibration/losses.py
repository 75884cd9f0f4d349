"""Task losses whose gradient g = dL/dO weights the Hessian-guided metric sum (g * (O - O_hat))^2.

The gradient is taken on the MASK DECODER's outputs (mask logits and IoU predictions), as TinySAM
does (ptq.md §1.1). TinySAM's stated loss, KL(FP output || quantized output), has a *zero* gradient
when both sides are the FP model (PTQ4ViT's "parallel" calibration, PTQ4ViT issue #23, ptq.md §2.6):
d/dz KL(p_fp || sigmoid(z)) = sigmoid(z) - p_fp = 0 at z = z_fp. ``kl_identical`` reproduces that
pitfall on purpose (tests show the calibrator refuses it).

``fisher`` (default) is the sampled-label Fisher: labels drawn from the model's own predictive
distribution, so E[g g^T] is the Fisher information (= the Gauss-Newton Hessian of the NLL) and the
metric's diag((dL/dO)^2) is an unbiased estimate of its diagonal:

* masks: y ~ Bernoulli(sigmoid(logits)) per pixel, BCE negative log-likelihood (summed over the
  valid pixels, averaged over prompts and mask tokens);
* IoU predictions: y ~ Normal(iou, sigma^2) (sigma = 0.1 IoU units), Gaussian NLL.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor, tuple[int, int], torch.Generator], torch.Tensor]

IOU_SIGMA = 0.1


def fisher_loss(iou: torch.Tensor, masks: torch.Tensor, valid_hw: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Sampled-label Fisher loss. iou [B,T], masks [B,T,H,W] logits (the tokens to calibrate for)."""
    h, w = valid_hw
    logits = masks[..., :h, :w]
    with torch.no_grad():
        labels = torch.bernoulli(torch.sigmoid(logits), generator=gen)
        noise = torch.randn(iou.shape, generator=gen, dtype=iou.dtype)
    n_masks = logits.shape[0] * logits.shape[1]
    mask_nll = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / n_masks
    target = iou.detach() + IOU_SIGMA * noise
    iou_nll = ((iou - target) ** 2).sum() / (2 * IOU_SIGMA**2) / iou.shape[0]
    return mask_nll + iou_nll


def kl_identical(iou: torch.Tensor, masks: torch.Tensor, valid_hw: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """TinySAM's KL(masks) + KL(IoUs) evaluated between the FP model and itself (the pitfall):
    its gradient is zero up to rounding. Only for demonstrating/testing the gradient check."""
    h, w = valid_hw
    logits = masks[..., :h, :w]
    p_ref = torch.sigmoid(logits).detach()
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    kl_mask = (p_ref * (torch.log(p_ref.clamp_min(1e-12)) - logp)
               + (1 - p_ref) * (torch.log((1 - p_ref).clamp_min(1e-12)) - log1mp)).sum()
    q_ref = torch.softmax(iou, dim=-1).detach()
    kl_iou = (q_ref * (torch.log(q_ref) - torch.log_softmax(iou, dim=-1))).sum()
    return kl_mask + kl_iou


LOSSES: dict[str, LossFn] = {"fisher": fisher_loss, "kl_identical": kl_identical}
