"""The loss pieces of AdaMatch (Berthelot et al. 2021), as pure functions that are unit-tested by hand.

Private (the leading `_` keeps the registry from importing it as a method); `pseudo_label.py` holds
the method and its step.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def interpolate_logits(joint: Tensor, alone: Tensor, u: Tensor) -> Tensor:
    """z_joint + (z_alone - z_joint)·u: random logit interpolation, u ~ U(0,1) elementwise."""
    return joint + (alone - joint) * u


def relative_threshold(weak_source_logits: Tensor, tau: float) -> Tensor:
    """tau x the mean over the batch of the max softmax of the weak source logits (no gradient)."""
    return tau * weak_source_logits.detach().float().softmax(1).max(1).values.mean()


def align(probs: Tensor, reference: Tensor, current: Tensor) -> Tensor:
    """Distribution alignment: probs x (reference+1e-6)/(current+1e-6), each row renormalised."""
    aligned = probs * (reference + 1e-6) / (current + 1e-6)
    return aligned / aligned.sum(1, keepdim=True)


def unlabelled_loss(strong_logits: Tensor, probs: Tensor, threshold: float | Tensor) -> tuple[Tensor, Tensor]:
    """Mean over the batch of mask·CE(strong, argmax probs), mask = max probs >= threshold; (loss, mask)."""
    conf, pseudo = probs.detach().max(dim=1)
    mask = (conf >= threshold).float()
    return (F.cross_entropy(strong_logits.float(), pseudo, reduction="none") * mask).mean(), mask


def warmup(progress: float) -> float:
    """AdaMatch's weight schedule: 0.5 - cos(min(pi, 2 pi p)) / 2, from 0 to 1 over the first half."""
    return 0.5 - math.cos(min(math.pi, 2.0 * math.pi * progress)) / 2.0
