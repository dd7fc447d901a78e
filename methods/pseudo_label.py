"""AdaMatch (Berthelot et al. 2021, ICLR 2022), unsupervised and semi-supervised, as the reference
google-research/adamatch `domain_adaptation/adamatch.py` (and `semi_supervised_domain_adaptation/`).

Why each piece: random logit interpolation between a source-only forward pass (batch-norm statistics
of the source alone; the running statistics are restored afterwards, as the reference) and the joint
pass keeps the classifier right under either statistics; the RELATIVE threshold (tau x mean max
softmax of the weak source logits) adapts to a finder that is less confident on the hard domain;
distribution alignment (target weak probabilities x (p_src+1e-6)/(p_tgt+1e-6), renormalised) stops
the pool from collapsing onto one class; the strong target view learns the weak view's pseudo-labels
(FixMatch), weighted by mu(p) = 0.5 - cos(min(pi, 2 pi p))/2 (the reference's ScheduleCosPhases, to 1
over the first half). Source loss 0.5·(CE(weak) + CE(strong)); target batches uratio=3 times larger.
Recipe as the reference: SGD momentum 0.9 without nesterov (objax Momentum), lr 0.03 decayed as
lr·cos(arccos(0.25)·p) (ScheduleCos; `lr_decay`), weight decay 1e-3, every layer at one rate.
Differences, on purpose: p_src and p_tgt are EMAs (momentum 0.999) that start from the first batch
(the reference starts p_src uniform and keeps p_tgt as a 128-batch moving average); weight decay is
SGD's on every parameter (the reference's is an L2 term on weights only); the reference's EMA of
weights for evaluation is not used (too few steps here for it to matter).
Ablation `align_to = "estimated"`: align to the harness's BBSE estimate of the target prior
(`ctx.target_prior`) instead of the source EMA, the label-shift-aware variant.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch, register, scalars
from harness.errors import BadInput
from methods._adamatch import align, interpolate_logits, relative_threshold, unlabelled_loss, warmup


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
        if self.hp["align_to"] not in ("source", "estimated"):
            raise BadInput(f"--hp {self.name}.align_to={self.hp['align_to']!r}: choose source or estimated")
        if self.hp["align_to"] == "estimated" and ctx.target_prior is None:
            raise BadInput(f"--hp {self.name}.align_to=estimated needs the harness's target-prior estimate")
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

    def source_alone(self, images: Tensor, catalog: Tensor) -> Tensor:
        """Logits of a labelled-only pass whose batch-norm running statistics are thrown away (the pass
        updates copies; the originals are put back untouched, so autograd's saved tensors stay valid)."""
        kept = [(m, n, b) for m in self.model.modules() for n, b in m.named_buffers(recurse=False)]
        for m, n, b in kept:
            setattr(m, n, b.clone())
        try:
            return self.model(images, catalog).float()
        finally:
            for m, n, b in kept:
                setattr(m, n, b)

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        labelled = [src] + [b for b in [self.labelled_batch(len(src))] if b is not None]
        aug = self.ctx.augment
        x_l = torch.cat([b.images for b in labelled] + [aug(b.images, "strong") for b in labelled])
        c_l = torch.cat([b.catalog for b in labelled] * 2)
        alone = self.source_alone(x_l, c_l)
        joint = self.model(torch.cat([x_l, tgt.images, aug(tgt.images, "strong")]),
                           torch.cat([c_l, tgt.catalog, tgt.catalog])).float()
        n, bt, ns = len(x_l), len(tgt), len(src)
        mixed = interpolate_logits(joint[:n], alone, self.mix_weights(alone))
        weak, strong = mixed[:n // 2], mixed[n // 2:]
        terms = [0.5 * (F.cross_entropy(weak[s], b.labels) + F.cross_entropy(strong[s], b.labels))
                 for b, s in zip(labelled, (slice(0, ns), slice(ns, None)))]
        cls, sup = terms[0], terms[1] if len(terms) > 1 else torch.zeros((), device=joint.device)
        with torch.no_grad():
            threshold = relative_threshold(weak[:ns], self.hp["tau"])
            ps, pt = weak[:ns].softmax(1).mean(0), joint[n:n + bt].softmax(1)
            m = float(self.hp["dist_momentum"]) if self.dist_seen else 0.0   # the first batch starts the EMAs
            self.p_src.mul_(m).add_(ps, alpha=1 - m)
            self.p_tgt.mul_(m).add_(pt.mean(0), alpha=1 - m)
            self.dist_seen = True
            ref = self.p_src if self.hp["align_to"] == "source" else self.ctx.target_prior.to(pt)
            aligned = align(pt, ref, self.p_tgt)
        unl, mask = unlabelled_loss(joint[n + bt:], aligned, threshold)
        mu = self.hp["unlabelled_weight"] * warmup(step / self.steps)
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
