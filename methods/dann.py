"""DANN (Ganin et al. 2016): align source and target embeddings by fooling a domain discriminator.

The step (source CE + gradient-reversed domain BCE, Ganin's lambda ramp) is shared with CDAN in
`methods/_adversarial.py`; DANN is the marginal variant: the discriminator sees the fused
embedding itself and every sample weighs the same.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from harness.api import AdaptContext, register
from methods._adversarial import ADVERSARIAL_HPARAMS, DomainAdversarial


@register
class DANN(DomainAdversarial):
    """Domain-adversarial training: source CE + gradient-reversed domain BCE on the fused embedding."""

    name = "dann"
    hparams: ClassVar[dict[str, Any]] = {**ADVERSARIAL_HPARAMS}

    def disc_in_dim(self, ctx: AdaptContext) -> int:
        return int(self.model.dim)

    def disc_input(self, z: Tensor, logits: Tensor) -> Tensor:
        return z

    def domain_weights(self, logits: Tensor, n_src: int) -> Tensor | None:
        return None
