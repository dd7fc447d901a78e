"""CDAN+E (Long et al. 2018): DANN whose discriminator sees features conditioned on predictions.

Why: aligning the marginal p(z) can mix lenses with non-lenses; conditioning the discriminator on the
classifier output aligns the joint of features and predictions instead. As published:
- the multilinear map T(z, p) = z ⊗ p (the flattened outer product, as the reference's
  `bmm(p.unsqueeze(2), z.unsqueeze(1))`) when d·K <= `exact_max_dim` (here d=128, K=2: exact);
  above that pytorch-adapt's `RandomizedDotProduct` with `rand_dim` = 1024, the paper's setting;
- predictions condition the discriminator but are not trained through it (detached, as the
  reference and TLlib);
- entropy conditioning (+E): sample weights w = 1 + exp(-H(p)) (no gradient, as TLlib), and each
  domain's term is its weighted mean; the loss is the sum of the two domain terms, as DANN's.
Recipe: DANN's (`methods/_adversarial.py`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from harness.api import Batch, register
from methods._adversarial import ADVERSARIAL_HPARAMS, DomainAdversarial


def multilinear_map(z: Tensor, p: Tensor) -> Tensor:
    """Flattened outer product (B, K·d): row b is [p[b,0]·z[b], p[b,1]·z[b], ...]."""
    return (p.unsqueeze(2) * z.unsqueeze(1)).flatten(1)


def entropy_weights(p: Tensor) -> Tensor:
    """CDAN+E's 1 + exp(-H(p)) per row, H the prediction entropy in nats."""
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(1)
    return 1.0 + torch.exp(-entropy)


@register
class CDAN(DomainAdversarial):
    """Conditional adversarial adaptation (CDAN+E): multilinear conditioning and entropy weights."""

    name = "cdan"
    hparams: ClassVar[dict[str, Any]] = {
        **ADVERSARIAL_HPARAMS,
        "exact_max_dim": 4096,   # exact multilinear map up to this d·K, randomised above
        "rand_dim": 1024,        # output dim of the randomised map (the paper's)
        "entropy_weight": True,  # CDAN+E
    }

    def disc_in_dim(self) -> int:
        d, k = int(self.model.dim), int(self.model.num_classes)
        if d * k <= int(self.hp["exact_max_dim"]):
            self.rdot = None
            return d * k
        from pytorch_adapt.layers import RandomizedDotProduct  # imported on use (slow to import)

        self.rdot = RandomizedDotProduct([d, k], out_dim=int(self.hp["rand_dim"])).to(self.ctx.device)
        return int(self.hp["rand_dim"])

    def disc_input(self, z: Tensor, logits: Tensor) -> Tensor:
        p = torch.softmax(logits.float(), dim=1).detach()
        return multilinear_map(z.float(), p) if self.rdot is None else self.rdot(z.float(), p)

    def domain_weights(self, logits: Tensor, src: Batch) -> tuple[Tensor | None, bool]:
        if not self.hp["entropy_weight"]:
            return None, False
        with torch.no_grad():
            return entropy_weights(torch.softmax(logits.float(), dim=1)), True
