"""AdaMatch (Berthelot et al. 2021, ICLR 2022), unsupervised and semi-supervised, as the reference
google-research/adamatch `domain_adaptation/adamatch.py` (and `semi_supervised_domain_adaptation/`).

Why each piece (formulas tested by hand in `methods/_adamatch.py`): random logit interpolation between a
source-only pass (the source's own batch-norm statistics; running statistics restored afterwards, as the
reference) and the joint pass keeps the classifier right under either; the RELATIVE threshold (tau x mean
max softmax of the weak source logits) adapts to a finder less sure of the hard domain; distribution
alignment (target weak probabilities x (p_src+1e-6)/(p_tgt+1e-6), renormalised) stops the pool collapsing
onto one class; the strong target view learns the weak view's pseudo-labels (FixMatch), weighted by
mu(p) = 0.5 - cos(min(pi, 2 pi p))/2 (ScheduleCosPhases, to 1 over the first half). Source loss
0.5·(CE(weak) + CE(strong)); target batches uratio=3 times larger. Recipe as the reference: SGD momentum
0.9 without nesterov (objax Momentum), lr 0.03 decayed as lr·cos(arccos(0.25)·p) (ScheduleCos;
`lr_decay`), weight decay 1e-3, every layer at one rate.
Departures, on purpose: p_src and p_tgt are EMAs (momentum 0.999) from the first batch (the reference
starts p_src uniform, p_tgt a 128-batch moving average); weight decay is SGD's on every parameter (the
reference's: an L2 term on weights only); no EMA of weights for evaluation (too few steps to matter).
Ablation `align_to = "estimated"`: align to the harness's BBSE estimate of the target prior
(`ctx.target_prior`) instead of the source EMA, the label-shift-aware variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch, register, scalars
from methods import _adamatch as adamatch


@register
class PseudoLabel(AdaptationMethod):
    """AdaMatch: logit interpolation, relative threshold, distribution alignment, weak->strong."""

    name = "pseudo_label"
    hparams: ClassVar[dict[str, Any]] = {
        **SGD_RECIPE, "lr": 0.03, "nesterov": False, "schedule": "cos_decay", "lr_decay": 0.25,
        "backbone_mult": 1.0, "uratio": 3,
        "tau": 0.9,                 # relative confidence threshold (x mean source confidence)
        "unlabelled_weight": 1.0,   # mu_max
        "dist_momentum": 0.999,     # EMA of the source / target class distributions
        "align_to": "source",       # source (paper) | estimated (ctx.target_prior; ablation)
    }

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.steps, k = max(1, ctx.steps), int(ctx.num_classes)
        adamatch.check_align_to(self.name, self.hp["align_to"], ctx.target_prior)
        for buffer in ("p_src", "p_tgt"):   # class distributions (EMA) of source and target predictions
            self.register_buffer(buffer, torch.zeros(k, device=ctx.device))
        self.dist_seen = False

    def labelled_batch(self, n: int) -> Batch | None:
        """A weak view of `n` rows of the 20% labelled split; only the semi-supervised variant has one."""
        if not self.uses_target_labels or (labelled := self.ctx.labelled) is None or len(labelled) == 0:
            return None
        b = labelled.sample(n, generator=self.ctx.generator)
        b.images = self.ctx.augment(b.images, "weak")
        return b

    def mix_weights(self, like: Tensor) -> Tensor:
        """u ~ U(0,1) elementwise for the logit interpolation, from the run's generator."""
        return torch.rand(like.shape, device=like.device, generator=self.ctx.generator)

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        labelled = [src] + [b for b in [self.labelled_batch(len(src))] if b is not None]
        x_l, c_l = adamatch.weak_then_strong(labelled, self.ctx.augment)
        alone = adamatch.forward_keeping_running_stats(self.model, x_l, c_l)   # source-alone batch statistics
        joint = self.model(torch.cat([x_l, tgt.images, self.ctx.augment(tgt.images, "strong")]),
                           torch.cat([c_l, tgt.catalog, tgt.catalog])).float()
        n, bt, ns = len(x_l), len(tgt), len(src)
        mixed = adamatch.interpolate_logits(joint[:n], alone, self.mix_weights(alone))
        weak, strong = mixed[:n // 2], mixed[n // 2:]
        cls, sup = adamatch.labelled_losses(weak, strong, labelled)
        with torch.no_grad():
            threshold = adamatch.relative_threshold(weak[:ns], self.hp["tau"])
            ps, pt = weak[:ns].softmax(1).mean(0), joint[n:n + bt].softmax(1)
            m = float(self.hp["dist_momentum"]) if self.dist_seen else 0.0   # the first batch starts the EMAs
            adamatch.ema_(self.p_src, ps, m)
            adamatch.ema_(self.p_tgt, pt.mean(0), m)
            self.dist_seen = True
            ref = self.p_src if self.hp["align_to"] == "source" else self.ctx.target_prior.to(pt)
            aligned = adamatch.align(pt, ref, self.p_tgt)
        unl, mask = adamatch.unlabelled_loss(joint[n + bt:], aligned, threshold)
        mu = self.hp["unlabelled_weight"] * adamatch.warmup(step / self.steps)
        loss = cls + self.hp.get("labelled_weight", 0.0) * sup + mu * unl
        self.step(loss)
        return scalars(loss=loss, cls=cls, labelled=sup, unlabelled=unl, mask_rate=mask.mean(),
                       threshold=threshold, mu=mu)


@register
class PseudoLabelSemi(PseudoLabel):
    """AdaMatch in its semi-supervised setting: the 20% labelled hard split joins the source batch."""

    name = "pseudo_label_semi"
    uses_target_labels = True
    hparams: ClassVar[dict[str, Any]] = {**PseudoLabel.hparams, "labelled_weight": 1.0}  # CE on the 20% split
