"""The domain-adversarial loss pieces as pure functions: Ganin's gradient-reversal ramp and the domain
BCE summed over the two domains (Ganin et al., JMLR 2016; pytorch-adapt's DANN hook).

Private (the leading `_` keeps the registry from importing it as a method); `_adversarial.py` builds
the shared DANN/CDAN/IWDAN step on these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def grl_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin's ramp 2/(1+exp(-gamma p)) - 1: 0 at the start (the discriminator is noise), ~1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


def domain_bce(d: Tensor, n_src: int, weight: Tensor | None = None, normalise: bool = False) -> Tensor:
    """Source term (label 1, rows `:n_src`) + target term (label 0): each the mean of `weight`·BCE over
    its own domain, divided by that domain's row count, or by its weight sum when `normalise`."""
    y = torch.zeros_like(d)
    y[:n_src] = 1.0
    per = F.binary_cross_entropy_with_logits(d, y, reduction="none")
    w = torch.ones_like(per) if weight is None else weight
    total = per.new_zeros(())
    for rows in (slice(0, n_src), slice(n_src, None)):
        den = w[rows].sum() if normalise else per.new_tensor(float(per[rows].numel()))
        total = total + (w[rows] * per[rows]).sum() / den
    return total
