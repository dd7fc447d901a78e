"""What DANN and CDAN share: a gradient-reversed domain discriminator, its loss and Ganin's ramp.

Private (the leading `_` keeps the registry from importing it as a method), so `cdan.py` and
`dann.py` both build on this instead of one plug-in importing another. The discriminator and the
gradient-reversal layer are pytorch-adapt's; the loss is written out so it stays typed and explicit.
A subclass chooses what the discriminator sees (`disc_in_dim`, `disc_input`) and how samples are
weighted (`domain_weights`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_adapt.layers import GradientReversal
from pytorch_adapt.models import Discriminator
from torch import Tensor

from harness.api import AdaptationMethod, AdaptContext, Batch, scalars

ADVERSARIAL_HPARAMS: dict[str, Any] = {
    "lr": 3e-4,              # model and discriminator
    "weight_decay": 1e-4,
    "lambda_max": 1.0,       # final gradient-reversal weight
    "lambda_gamma": 10.0,    # steepness of the ramp
    "disc_hidden": 256,      # discriminator MLP width (DomainBed's mlp_width)
}


def grl_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin's ramp 2/(1+exp(-gamma p)) - 1: 0 at the start (the discriminator is noise), ~1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


class DomainAdversarial(AdaptationMethod):
    """Source CE + gradient-reversed domain BCE (source = 1, target = 0); not registered itself."""

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.steps = max(1, ctx.steps)
        self.grl = GradientReversal(weight=0.0).to(ctx.device)
        self.disc = Discriminator(self.disc_in_dim(ctx), h=int(self.hp["disc_hidden"])).to(ctx.device)
        self.opt = ctx.optimizer(list(self.model.parameters()) + list(self.disc.parameters()),
                                 lr=self.hp["lr"], weight_decay=self.hp["weight_decay"])

    # ---- what a variant chooses ----------------------------------------------------------------
    def disc_in_dim(self, ctx: AdaptContext) -> int:
        """Input width of the discriminator (called in setup, before the discriminator is built)."""
        raise NotImplementedError

    def disc_input(self, z: Tensor, logits: Tensor) -> Tensor:
        """What the discriminator sees for embeddings `z` with classifier outputs `logits`."""
        raise NotImplementedError

    def domain_weights(self, logits: Tensor, n_src: int) -> Tensor | None:
        """Per-sample BCE weights, or None for a plain mean."""
        raise NotImplementedError

    # ---- the shared loss and step --------------------------------------------------------------
    def domain_loss(self, z: Tensor, logits: Tensor, n_src: int) -> tuple[Tensor, Tensor]:
        """BCE of the discriminator (source = 1, target = 0) on gradient-reversed inputs; also accuracy."""
        d = self.disc(self.grl(self.disc_input(z, logits))).float()
        y = torch.zeros_like(d)
        y[:n_src] = 1.0
        loss = F.binary_cross_entropy_with_logits(d, y, weight=self.domain_weights(logits, n_src))
        return loss, ((d > 0).float() == y).float().mean()

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        b = len(src)
        z = self.model.embed(torch.cat([src.images, tgt.images]), torch.cat([src.catalog, tgt.catalog]))
        logits = self.model.head(z)
        cls = F.cross_entropy(logits[:b].float(), src.labels)
        lam = self.hp["lambda_max"] * grl_lambda(step / self.steps, self.hp["lambda_gamma"])
        self.grl.update_weight(lam)
        dom, dom_acc = self.domain_loss(z, logits, b)
        loss = cls + dom
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return scalars(loss=loss, cls=cls, domain=dom, domain_acc=dom_acc, grl_lambda=lam)
