"""IWDAN (Tachet des Combes et al. 2020): DANN with importance weights for label shift.

Why: lenses are rare in the survey pool but not in the simulated source, and plain DANN then aligns
the wrong marginals (matching p(z) across different class priors forces lenses onto non-lenses).
IWDAN re-weights every SOURCE term, the domain loss and the classification loss, per sample by
w[y_s] = q_t(y)/p_s(y), so the weighted source marginal is the one to match under generalised label
shift. The weights start from the harness's label-free BBSE estimate (`ctx.target_prior /
ctx.source_prior`; if the harness gives none, from the solve below, on first use) and are re-estimated
from the current model at each new pass over the target pool, as the paper: on a fixed source subset
C[i, j] = mean softmax_i · 1[y = j], on the pool mu = mean softmax; solve C w = mu (least squares),
clip at 0, rescale so that sum_y p_s(y) w[y] = 1 (the reference's QP constraint), and average with the
previous w (the reference's `ma` = 0.5). The reference accumulates C and mu over the pass's training
batches (train mode) where this uses an eval-mode pass at the start of the next; it solves the same
problem as a QP (cvxopt); and it also divides the source CE by K·p_s(y) (a balanced error), which is 1
with a balanced source and is not used here. Recipe and discriminator: DANN's (`methods/_adversarial.py`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import AdaptContext, Batch, register
from methods._adversarial import ADVERSARIAL_HPARAMS, DomainAdversarial
from methods._neighbourhood import embed_rows


def solve_importance_weights(joint: Tensor, mu: Tensor, source_prior: Tensor) -> Tensor:
    """w >= 0 with C w ≈ mu (least squares), rescaled so that source_prior · w = 1."""
    w = torch.linalg.lstsq(joint.double().cpu(), mu.double().cpu()[:, None]).solution[:, 0].clamp_min(0.0)
    norm = float(source_prior.double().cpu() @ w)
    return (w / norm if norm > 0 else torch.ones_like(w)).float().to(mu.device)


@register
class IWDAN(DomainAdversarial):
    """Importance-weighted DANN: source domain and class terms weighted by q_t(y)/p_s(y), re-estimated."""

    name = "iwdann"
    hparams: ClassVar[dict[str, Any]] = {
        **ADVERSARIAL_HPARAMS,
        "reestimate": True,       # re-estimate w from the current model at each pass over the pool
        "iw_momentum": 0.5,       # weight of the previous w in the average (the reference's ma)
        "iw_source_rows": 4096,   # source rows (a fixed random subset) for the confusion matrix
    }

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        n = min(len(ctx.source), int(self.hp["iw_source_rows"]))
        self.src_rows = torch.randperm(len(ctx.source), device=ctx.device, generator=ctx.generator)[:n]
        k = int(ctx.num_classes)
        p_s = (ctx.source_prior if ctx.source_prior is not None else torch.bincount(
            ctx.source.labels[self.src_rows], minlength=k) / n).float().to(ctx.device)
        self.register_buffer("source_prior", p_s)
        self.has_iw = ctx.target_prior is not None   # else estimated from the model itself on first use
        w = ctx.target_prior.float().to(ctx.device) / p_s.clamp_min(1e-12) if self.has_iw else torch.ones(k)
        self.register_buffer("iw", w.to(ctx.device))

    def estimate_weights(self) -> Tensor:
        """w from the current model's soft confusion on the source subset and mean prediction on the pool."""
        c, k = self.ctx, int(self.ctx.num_classes)
        was_training = self.model.training
        self.model.eval()
        _, p_src = embed_rows(self.model, c.source, self.src_rows, c.batch_size, c.autocast)
        _, p_tgt = embed_rows(self.model, c.target, torch.arange(len(c.target), device=c.device),
                              c.batch_size, c.autocast)
        self.model.train(was_training)
        joint = p_src.T @ F.one_hot(c.source.labels[self.src_rows], k).float() / len(p_src)
        return solve_importance_weights(joint, p_tgt.mean(0), self.source_prior)

    def class_weights(self) -> Tensor:
        """The current w (K,); estimated from the model itself first if the harness gave no prior."""
        if not self.has_iw:
            self.iw.copy_(self.estimate_weights())
            self.has_iw = True
        return self.iw

    def on_epoch_start(self, epoch: int) -> None:
        if epoch > 0 and self.hp["reestimate"]:
            m = float(self.hp["iw_momentum"])
            self.iw.copy_(m * self.class_weights() + (1.0 - m) * self.estimate_weights())

    def domain_weights(self, logits: Tensor, src: Batch) -> tuple[Tensor | None, bool]:
        w = torch.ones(len(logits), device=logits.device)
        w[:len(src)] = self.class_weights()[src.labels]
        return w, False

    def class_loss(self, logits: Tensor, src: Batch) -> Tensor:
        per_sample = F.cross_entropy(logits, src.labels, reduction="none")
        return (self.class_weights()[src.labels] * per_sample).mean()
