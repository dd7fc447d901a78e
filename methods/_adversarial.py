"""What DANN, CDAN and IWDAN share: a gradient-reversed domain discriminator, its loss and Ganin's ramp.

Private (the leading `_` keeps the registry from importing it as a method), so the three method files
build on this instead of one plug-in importing another. The discriminator and the gradient-reversal
layer are pytorch-adapt's. The domain loss is Ganin et al.'s (JMLR 2016) and pytorch-adapt's
DANN hook's: the mean BCE over the source batch PLUS the mean BCE over the target batch (a sum of two
domain terms, not a mean over the joint batch). A variant chooses what the discriminator sees
(`disc_in_dim`, `disc_input`; default: the fused embedding, i.e. DANN) and how samples are weighted
(`domain_weights`, `class_loss`). The ramp and the domain BCE, pure functions: `_domain_loss.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch, scalars
from methods._domain_loss import domain_bce, grl_lambda

# TLlib's DANN/CDAN recipe (SGD, Ganin schedule, backbone 0.1x; the discriminator, a new layer, at 1x).
ADVERSARIAL_HPARAMS: dict[str, Any] = {
    **SGD_RECIPE,
    "lambda_max": 1.0,       # final gradient-reversal weight
    "lambda_gamma": 10.0,    # steepness of Ganin's ramp
    "disc_hidden": 256,      # discriminator MLP width (DomainBed's mlp_width)
}


class DomainAdversarial(AdaptationMethod):
    """Source CE + gradient-reversed domain BCE (source = 1, target = 0); not registered itself."""

    def setup(self, ctx: AdaptContext) -> None:
        from pytorch_adapt.layers import GradientReversal  # here: importing pytorch-adapt takes seconds,
        from pytorch_adapt.models import Discriminator  # and listing the methods should not pay it

        super().setup(ctx)
        self.steps = max(1, ctx.steps)
        self.grl = GradientReversal(weight=0.0).to(ctx.device)
        self.disc = Discriminator(self.disc_in_dim(), h=int(self.hp["disc_hidden"])).to(ctx.device)

    def param_groups(self) -> list[dict[str, Any]]:
        """The model's groups plus the discriminator, a layer trained from scratch, at the full rate."""
        return [*super().param_groups(), {"params": list(self.disc.parameters()), "lr_mult": 1.0}]

    # ---- what a variant chooses ----------------------------------------------------------------
    def disc_in_dim(self) -> int:
        """Input width of the discriminator (called in setup, before the discriminator is built)."""
        return int(self.model.dim)

    def disc_input(self, z: Tensor, logits: Tensor) -> Tensor:
        """What the discriminator sees for embeddings `z` with classifier outputs `logits`."""
        return z.float()

    def domain_weights(self, logits: Tensor, src: Batch) -> tuple[Tensor | None, bool]:
        """Per-sample BCE weights over the joint batch (None: all 1) and whether each domain's term is a
        weighted mean (True) or a mean over its rows (False)."""
        return None, False

    def class_loss(self, logits: Tensor, src: Batch) -> Tensor:
        """The source classification loss on the source rows' logits."""
        return F.cross_entropy(logits, src.labels)

    # ---- the shared loss and step --------------------------------------------------------------
    def domain_loss(self, z: Tensor, logits: Tensor, src: Batch) -> tuple[Tensor, Tensor]:
        """`domain_bce` of the discriminator on gradient-reversed inputs; also its accuracy."""
        n = len(src)
        d = self.disc(self.grl(self.disc_input(z, logits))).float()
        weight, normalise = self.domain_weights(logits, src)
        truth = torch.arange(len(d), device=d.device) < n
        return domain_bce(d, n, weight, normalise), ((d > 0) == truth).float().mean()

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        b = len(src)
        z = self.model.embed(torch.cat([src.images, tgt.images]), torch.cat([src.catalog, tgt.catalog]))
        logits = self.model.head(z).float()
        cls = self.class_loss(logits[:b], src)
        lam = self.hp["lambda_max"] * grl_lambda(step / self.steps, self.hp["lambda_gamma"])
        self.grl.update_weight(lam)
        dom, dom_acc = self.domain_loss(z, logits, src)
        loss = cls + dom
        self.step(loss)
        return scalars(loss=loss, cls=cls, domain=dom, domain_acc=dom_acc, grl_lambda=lam)
