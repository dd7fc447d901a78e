"""DANN (Ganin et al. 2016, JMLR): align source and target embeddings by fooling a domain discriminator.

As published: source CE + Ganin's domain loss (mean BCE over the source batch + mean BCE
over the target batch, as pytorch-adapt's DANN hook), through a gradient-reversal layer whose weight
follows Ganin's ramp 2/(1+exp(-10p))-1. The discriminator sees the fused embedding; every sample
weighs the same. Recipe: TLlib's for DANN (`harness.api.SGD_RECIPE`: momentum-0.9 SGD, lr 0.01,
weight decay 1e-3, Ganin's annealing lr·(1+10p)^-0.75, the pretrained backbone at 0.1x), the
discriminator (a new layer) at 1x. The step is shared with CDAN and IWDAN in `methods/_adversarial.py`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from harness.api import register
from methods._adversarial import ADVERSARIAL_HPARAMS, DomainAdversarial


@register
class DANN(DomainAdversarial):
    """Domain-adversarial training: source CE + gradient-reversed domain BCE on the fused embedding."""

    name = "dann"
    hparams: ClassVar[dict[str, Any]] = {**ADVERSARIAL_HPARAMS}
