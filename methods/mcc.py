"""MCC (Jin et al. 2020, ECCV): minimise the class confusion of target predictions.

Why: no discriminator to balance; the loss only asks that the target batch not spread its probability
mass across classes pairwise, which suits a binary lens / non-lens task with few hyper-parameters.
The loss is pytorch-adapt's `MCCLoss` at the paper's temperature T = 2.5 (entropy-weighted,
class-normalised confusion), added to the source CE with weight 1. Recipe: the paper's SGD at lr 0.005
on the shared Ganin/TLlib recipe (`harness.api.SGD_RECIPE`: momentum 0.9, weight decay 1e-3, Ganin's
annealing, the backbone at 0.1x).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch, register, scalars


@register
class MCC(AdaptationMethod):
    """Minimum class confusion on target predictions, plus source cross-entropy."""

    name = "mcc"
    hparams: ClassVar[dict[str, Any]] = {
        **SGD_RECIPE, "lr": 0.005,
        "temperature": 2.5,   # softmax temperature for the confusion matrix (paper default)
        "mcc_weight": 1.0,
    }

    def setup(self, ctx: AdaptContext) -> None:
        from pytorch_adapt.layers import MCCLoss  # imported on use: pytorch-adapt is slow to import

        super().setup(ctx)
        self.mcc = MCCLoss(T=float(self.hp["temperature"]))

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        b = len(src)
        logits = self.model(torch.cat([src.images, tgt.images]),
                            torch.cat([src.catalog, tgt.catalog])).float()
        cls = F.cross_entropy(logits[:b], src.labels)
        mcc = self.mcc(logits[b:])
        loss = cls + self.hp["mcc_weight"] * mcc
        self.step(loss)
        return scalars(loss=loss, cls=cls, mcc=mcc)
