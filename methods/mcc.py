"""MCC (Jin et al. 2020): minimise class confusion of target predictions.

Why: no discriminator to balance; the loss only asks that the target batch not spread its
probability mass across classes pairwise, which suits a binary lens / non-lens task with few
hyper-parameters. The loss itself is pytorch-adapt's `MCCLoss`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_adapt.layers import MCCLoss

from harness.api import AdaptationMethod, AdaptContext, Batch, register, scalars


@register
class MCC(AdaptationMethod):
    """Minimum Class Confusion on target logits plus source cross-entropy."""

    name = "mcc"
    hparams: ClassVar[dict[str, Any]] = {
        "lr": 3e-4,
        "weight_decay": 1e-4,
        "temperature": 2.5,   # softmax temperature for the confusion matrix (paper default)
        "mcc_weight": 1.0,
    }

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.mcc = MCCLoss(T=float(self.hp["temperature"]))
        self.opt = ctx.optimizer(self.model.parameters())  # AdamW at hparams' lr and weight_decay

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        b = len(src)
        logits = self.model(torch.cat([src.images, tgt.images]),
                            torch.cat([src.catalog, tgt.catalog])).float()
        cls = F.cross_entropy(logits[:b], src.labels)
        mcc = self.mcc(logits[b:])
        loss = cls + self.hp["mcc_weight"] * mcc
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return scalars(loss=loss, cls=cls, mcc=mcc)
