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

from harness.api import AdaptationMethod, AdaptContext, Batch, register, scalars


def unlabelled_loss(strong_logits: Tensor, probs: Tensor, threshold: float | Tensor) -> tuple[Tensor, Tensor]:
    """CE of the strong view against argmax(probs) where max(probs) >= threshold; returns (loss, mask).

    Averaged over the whole batch (AdaMatch): nothing above threshold gives exactly 0 and no gradient."""
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
        "lr": 3e-4, "weight_decay": 1e-4,
        "tau": 0.9,             # relative confidence threshold (x mean source confidence)
        "unlabelled_weight": 1.0,  # mu_max
        "dist_momentum": 0.99,  # EMA of source / target class distributions for alignment
    }

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.steps, k = max(1, ctx.steps), int(ctx.num_classes)
        for buffer in ("p_src", "p_tgt"):  # class distributions (EMA) of source and target predictions
            self.register_buffer(buffer, torch.full((k,), 1.0 / k, device=ctx.device))
        self.opt = ctx.optimizer(self.model.parameters())  # AdamW at hparams' lr and weight_decay

    def labelled_batch(self) -> Batch | None:
        """A weakly augmented batch of the 20% labelled split; only the semi-supervised variant reads it."""
        if not self.uses_target_labels or (labelled := self.ctx.labelled) is None or len(labelled) == 0:
            return None
        b = labelled.sample(self.ctx.batch_size, generator=self.ctx.generator)
        b.images = self.ctx.augment(b.images, "weak")
        return b

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        lab = self.labelled_batch()
        parts = [src] + ([lab] if lab is not None else [])
        images = torch.cat([p.images for p in parts] + [tgt.images, self.ctx.augment(tgt.images, "strong")])
        catalog = torch.cat([p.catalog for p in parts] + [tgt.catalog, tgt.catalog])
        logits = self.model(images, catalog).float()
        n_lab, bt = sum(len(p) for p in parts), len(tgt)
        src_logits, tgt_weak, tgt_strong = logits[:len(src)], logits[n_lab:n_lab + bt], logits[n_lab + bt:]
        cls = F.cross_entropy(src_logits, src.labels)
        sup, sup_total = torch.zeros((), device=logits.device), cls
        if lab is not None:  # the semi-supervised variant: CE on the labelled split too
            sup = F.cross_entropy(logits[len(src):n_lab], lab.labels)
            sup_total = cls + self.hp["labelled_weight"] * sup
        with torch.no_grad():
            ps, pt = src_logits.softmax(1), tgt_weak.softmax(1)
            m = float(self.hp["dist_momentum"])
            self.p_src.mul_(m).add_(ps.mean(0), alpha=1 - m)
            self.p_tgt.mul_(m).add_(pt.mean(0), alpha=1 - m)
            aligned = pt * (self.p_src / self.p_tgt.clamp_min(1e-6))
            aligned = aligned / aligned.sum(1, keepdim=True)
            threshold = self.hp["tau"] * ps.max(1).values.mean()
        unl, mask = unlabelled_loss(tgt_strong, aligned, threshold)
        loss = sup_total + self.hp["unlabelled_weight"] * warmup(step / self.steps) * unl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return scalars(loss=loss, cls=cls, labelled=sup, unlabelled=unl, mask_rate=mask.mean(),
                       threshold=threshold)


@register
class PseudoLabelSemi(PseudoLabel):
    """AdaMatch in its semi-supervised setting: adds CE on the 20% labelled hard split."""

    name = "pseudo_label_semi"
    uses_target_labels = True
    hparams: ClassVar[dict[str, Any]] = {**PseudoLabel.hparams, "labelled_weight": 1.0}  # CE on the 20% split
