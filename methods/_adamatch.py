"""The pieces of AdaMatch (Berthelot et al. 2021): its loss terms as pure functions unit-tested by hand,
and the step's plumbing (the `align_to` check, the labelled batches' two views, and the source-only
forward pass that leaves the batch-norm running statistics as they were).

Private (the leading `_` keeps the registry from importing it as a method); `pseudo_label.py` holds
the method and its step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.api import Batch
from harness.errors import BadInput


def check_align_to(method: str, align_to: str, target_prior: Tensor | None) -> None:
    """BadInput unless `align_to` is "source", or "estimated" with the harness's target-prior estimate."""
    if align_to not in ("source", "estimated"):
        raise BadInput(f"--hp {method}.align_to={align_to!r}: choose source or estimated")
    if align_to == "estimated" and target_prior is None:
        raise BadInput(f"--hp {method}.align_to=estimated needs the harness's target-prior estimate")


def weak_then_strong(batches: list[Batch], augment: Callable[[Tensor, str], Tensor]) -> tuple[Tensor, Tensor]:
    """The labelled batches' images (already weak) then their strong views; the catalog rows twice."""
    images = torch.cat([b.images for b in batches] + [augment(b.images, "strong") for b in batches])
    return images, torch.cat([b.catalog for b in batches] * 2)


def forward_keeping_running_stats(model: nn.Module, images: Tensor, catalog: Tensor) -> Tensor:
    """Float logits of a pass whose batch-norm running statistics are thrown away (the pass updates
    copies; the originals are put back untouched, so autograd's saved tensors stay valid)."""
    kept = [(m, n, b) for m in model.modules() for n, b in m.named_buffers(recurse=False)]
    for m, n, b in kept:
        setattr(m, n, b.clone())
    try:
        return model(images, catalog).float()
    finally:
        for m, n, b in kept:
            setattr(m, n, b)


def interpolate_logits(joint: Tensor, alone: Tensor, u: Tensor) -> Tensor:
    """z_joint + (z_alone - z_joint)·u: random logit interpolation, u ~ U(0,1) elementwise."""
    return joint + (alone - joint) * u


def relative_threshold(weak_source_logits: Tensor, tau: float) -> Tensor:
    """tau x the mean over the batch of the max softmax of the weak source logits (no gradient)."""
    return tau * weak_source_logits.detach().float().softmax(1).max(1).values.mean()


def labelled_losses(weak: Tensor, strong: Tensor, batches: list[Batch]) -> tuple[Tensor, Tensor]:
    """0.5·(CE(weak) + CE(strong)) of the source batch (first) and of the labelled split (second; 0
    without one), whose rows follow one another in the `weak` and `strong` logits."""
    ns = len(batches[0])
    terms = [0.5 * (F.cross_entropy(weak[s], b.labels) + F.cross_entropy(strong[s], b.labels))
             for b, s in zip(batches, (slice(0, ns), slice(ns, None)))]
    return terms[0], terms[1] if len(terms) > 1 else torch.zeros((), device=weak.device)


def ema_(average: Tensor, value: Tensor, momentum: float) -> None:
    """In place: average <- momentum·average + (1 - momentum)·value."""
    average.mul_(momentum).add_(value, alpha=1 - momentum)


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
