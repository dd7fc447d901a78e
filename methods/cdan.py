"""CDAN+E (Long et al. 2018): DANN whose discriminator sees features conditioned on predictions.

Why: aligning the marginal p(z) can mix lenses with non-lenses; conditioning the discriminator on
the classifier output (multilinear map z ⊗ softmax, randomised by pytorch-adapt's
`RandomizedDotProduct`) aligns the joint instead. Entropy conditioning up-weights confident samples.
The adversarial step itself is shared with DANN in `methods/_adversarial.py`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pytorch_adapt.layers import RandomizedDotProduct
from torch import Tensor

from harness.api import AdaptContext, register
from methods._adversarial import ADVERSARIAL_HPARAMS, DomainAdversarial


@register
class CDAN(DomainAdversarial):
    """Conditional adversarial adaptation with randomised multilinear conditioning and entropy weights."""

    name = "cdan"
    hparams: ClassVar[dict[str, Any]] = {
        **ADVERSARIAL_HPARAMS,
        "rand_dim": 512,        # output dim of the randomised multilinear map
        "entropy_weight": True,  # CDAN+E: weight samples by 1 + exp(-entropy)
    }

    def disc_in_dim(self, ctx: AdaptContext) -> int:
        self.rdot = RandomizedDotProduct([int(self.model.dim), int(self.model.num_classes)],
                                         out_dim=int(ctx.hparams["rand_dim"])).to(ctx.device)
        return int(ctx.hparams["rand_dim"])

    def disc_input(self, z: Tensor, logits: Tensor) -> Tensor:
        # Predictions condition the discriminator but are not trained through it (as in TLlib's CDAN).
        p = torch.softmax(logits.float(), dim=1).detach()
        return self.rdot(z.float(), p)

    def domain_weights(self, logits: Tensor, n_src: int) -> Tensor | None:
        if not self.hp["entropy_weight"]:
            return None
        with torch.no_grad():
            p = torch.softmax(logits.float(), dim=1)
            w = 1.0 + torch.exp((p * torch.log(p.clamp_min(1e-8))).sum(1))  # 1 + exp(-H)
            # each domain carries equal total weight, mean weight 1 overall
            w[:n_src] = w[:n_src] / w[:n_src].mean()
            w[n_src:] = w[n_src:] / w[n_src:].mean()
        return w
