"""oracle: train on every hard-domain label there is (pool + 20% split). An upper bound, never a result.

It uses the source model's own recipe and budget (AdamW, lr 2e-3, weight decay 1e-4, warm-up + cosine,
every layer at one rate; `budget = "source"`: the source stage's steps and batch size), so the bound
is what the source stage would have reached had it been trained on the hard domain. Each step draws
from the labelled split in proportion to its size next to the pool batch, so the CE is a uniform
sample of the union of the two.
"""

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness.api import SGD_RECIPE, AdaptationMethod, Batch, register, scalars


@register
class Oracle(AdaptationMethod):
    """ORACLE upper bound: trained on all hard-pool and labelled-split labels (the top of 'gap closed')."""

    name = "oracle"
    uses_target_labels = True
    oracle = True
    role = "oracle"
    budget = "source"
    hparams: ClassVar[dict[str, Any]] = {**SGD_RECIPE, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
                                         "schedule": "cosine", "backbone_mult": 1.0}

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        parts = [tgt]
        lab = self.ctx.labelled
        if lab is not None and len(lab):
            n = max(1, round(len(tgt) * len(lab) / len(self.ctx.target)))
            b = lab.sample(n, self.ctx.generator)
            b.images = self.ctx.augment(b.images, "weak")
            parts.append(b)
        logits = self.model(torch.cat([p.images for p in parts]), torch.cat([p.catalog for p in parts]))
        loss = F.cross_entropy(logits.float(), torch.cat([p.labels for p in parts]))
        self.step(loss)
        return scalars(loss=loss)
