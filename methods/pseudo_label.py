"""AdaMatch-style pseudo-labelling (Berthelot et al. 2021), unsupervised and semi-supervised.

Why each piece: the RELATIVE threshold (tau x mean source confidence) adapts to a finder that is
less confident on the hard domain; distribution alignment stops the lens-poor target pool from
collapsing onto "non-lens"; training the strong view on weak-view labels is FixMatch's consistency;
the sin-shaped warm-up keeps early, noisy pseudo-labels from dominating.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import AdaptationMethod, AdaptContext, Batch, register


def unlabelled_loss(strong_logits: Tensor, probs: Tensor, threshold: float | Tensor) -> tuple[Tensor, Tensor]:
    """CE of the strong view against argmax(probs), kept where max(probs) >= threshold.

    Averaged over the whole batch (AdaMatch), so a batch with nothing above threshold gives exactly
    0 and no gradient. Returns (loss, mask).
    """
    conf, pseudo = probs.detach().max(dim=1)
    mask = (conf >= threshold).float()
    per_sample = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
    return (per_sample * mask).mean(), mask


def warmup(progress: float) -> float:
    """AdaMatch's weight schedule: 0.5 - cos(min(pi, 2 pi p)) / 2, from 0 to 1 over the first half."""
    return 0.5 - math.cos(min(math.pi, 2.0 * math.pi * progress)) / 2.0


@register
class PseudoLabel(AdaptationMethod):
    """AdaMatch: relative-threshold pseudo-labels with distribution alignment, weak->strong consistency."""

    name = "pseudo_label"
    hparams: ClassVar[dict[str, Any]] = {
        "lr": 3e-4,
        "weight_decay": 1e-4,
        "tau": 0.9,             # relative confidence threshold (x mean source confidence)
        "unlabelled_weight": 1.0,  # mu_max
        "dist_momentum": 0.99,  # EMA of source / target class distributions for alignment
        "labelled_weight": 1.0,  # pseudo_label_semi only: CE weight on the 20% labelled split
    }

    def setup(self, ctx: AdaptContext) -> None:
        self.model = ctx.model
        self.hp = dict(ctx.hparams)
        self.steps = max(1, ctx.steps)
        self.augment = ctx.augment
        k = int(ctx.num_classes)
        self.register_buffer("p_src", torch.full((k,), 1.0 / k, device=ctx.device))
        self.register_buffer("p_tgt", torch.full((k,), 1.0 / k, device=ctx.device))
        self.opt = ctx.optimizer(self.model.parameters(), lr=self.hp["lr"],
                                 weight_decay=self.hp["weight_decay"])
        # Only the semi-supervised variant may look at the labelled split.
        self.labelled = ctx.labelled if self.uses_target_labels else None
        self.batch_size, self.generator = ctx.batch_size, ctx.generator

    def labelled_batch(self) -> Batch | None:
        return None

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        lab = self.labelled_batch()
        parts = [src] + ([lab] if lab is not None else [])
        strong = self.augment(tgt.images, "strong")
        images = torch.cat([p.images for p in parts] + [tgt.images, strong])
        catalog = torch.cat([p.catalog for p in parts] + [tgt.catalog, tgt.catalog])
        logits = self.model(images, catalog).float()
        n_lab, bt = sum(len(p) for p in parts), len(tgt)
        src_logits, tgt_weak, tgt_strong = logits[:len(src)], logits[n_lab:n_lab + bt], logits[n_lab + bt:]

        cls = F.cross_entropy(src_logits, src.labels)
        sup = torch.zeros((), device=logits.device)
        if lab is not None:
            sup = F.cross_entropy(logits[len(src):n_lab], lab.labels)
        with torch.no_grad():
            ps, pt = src_logits.softmax(1), tgt_weak.softmax(1)
            m = float(self.hp["dist_momentum"])
            self.p_src.mul_(m).add_(ps.mean(0), alpha=1 - m)
            self.p_tgt.mul_(m).add_(pt.mean(0), alpha=1 - m)
            aligned = pt * (self.p_src / self.p_tgt.clamp_min(1e-6))
            aligned = aligned / aligned.sum(1, keepdim=True)
            threshold = self.hp["tau"] * ps.max(1).values.mean()
        unl, mask = unlabelled_loss(tgt_strong, aligned, threshold)
        mu = self.hp["unlabelled_weight"] * warmup(step / self.steps)
        loss = cls + self.hp["labelled_weight"] * sup + mu * unl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        vals = torch.stack([loss.detach(), cls.detach(), sup.detach(), unl.detach(),
                            mask.mean(), threshold.float()]).tolist()
        return dict(zip(("loss", "cls", "labelled", "unlabelled", "mask_rate", "threshold"), vals))


@register
class PseudoLabelSemi(PseudoLabel):
    """AdaMatch in its semi-supervised setting: adds CE on the 20% labelled hard split."""

    name = "pseudo_label_semi"
    uses_target_labels = True

    def labelled_batch(self) -> Batch | None:
        if self.labelled is None or len(self.labelled) == 0:
            return None
        b = self.labelled.sample(self.batch_size, generator=self.generator)
        b.images = self.augment(b.images, "weak")
        return b
