"""DANN (Ganin et al. 2016): align source and target embeddings by fooling a domain discriminator.

The discriminator and gradient-reversal layer are pytorch-adapt's; the loss is written out here
so the method stays typed and explicit (no string-keyed hook plumbing).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_adapt.layers import GradientReversal
from pytorch_adapt.models import Discriminator
from torch import Tensor

from harness.api import AdaptationMethod, AdaptContext, Batch, register


def grl_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin's ramp 2/(1+exp(-gamma p)) - 1: 0 at the start (the discriminator is noise), ~1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


def scalars(**values: Tensor) -> dict[str, float]:
    """Detached scalars to floats with a single device sync."""
    return dict(zip(values, torch.stack([v.detach().float() for v in values.values()]).tolist()))


@register
class DANN(AdaptationMethod):
    """Domain-adversarial training: source CE + gradient-reversed domain BCE on the fused embedding."""

    name = "dann"
    hparams: ClassVar[dict[str, Any]] = {
        "lr": 3e-4,              # model and discriminator
        "weight_decay": 1e-4,
        "lambda_max": 1.0,       # final gradient-reversal weight
        "lambda_gamma": 10.0,    # steepness of the ramp
        "disc_hidden": 256,      # discriminator MLP width (DomainBed's mlp_width)
    }

    def setup(self, ctx: AdaptContext) -> None:
        self.model = ctx.model
        self.hp = dict(ctx.hparams)
        self.steps = max(1, ctx.steps)
        self.grl = GradientReversal(weight=0.0).to(ctx.device)
        self.disc = Discriminator(self.disc_in_dim(ctx), h=int(self.hp["disc_hidden"])).to(ctx.device)
        self.opt = ctx.optimizer(list(self.model.parameters()) + list(self.disc.parameters()),
                                 lr=self.hp["lr"], weight_decay=self.hp["weight_decay"])

    # ---- the parts CDAN overrides -------------------------------------------------------------
    def disc_in_dim(self, ctx: AdaptContext) -> int:
        return int(self.model.dim)

    def disc_input(self, z: Tensor, logits: Tensor) -> Tensor:
        return z

    def domain_weights(self, logits: Tensor, n_src: int) -> Tensor | None:
        return None

    # ---- the loss ------------------------------------------------------------------------------
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
        return scalars(loss=loss, cls=cls, domain=dom, domain_acc=dom_acc,
                       grl_lambda=torch.tensor(lam, device=loss.device))
