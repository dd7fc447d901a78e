"""target_labelled: fine-tune the source model on the 20% labelled hard split only.

The shared recipe (`harness.api.SGD_RECIPE`), the adaptation steps and weak augmentation, so it
differs from `source_finetune` only in which labelled data it sees.
"""

from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as F

from harness.api import SGD_RECIPE, AdaptationMethod, Batch, register, scalars


@register
class TargetLabelled(AdaptationMethod):
    """Fine-tunes on the 20% labelled hard split (uses target labels; no unlabelled data)."""

    name = "target_labelled"
    uses_target_labels = True
    hparams: ClassVar[dict[str, Any]] = {**SGD_RECIPE}

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        b = self.ctx.labelled.sample(len(src), self.ctx.generator)
        loss = F.cross_entropy(self.model(self.ctx.augment(b.images, "weak"), b.catalog).float(), b.labels)
        self.step(loss)
        return scalars(loss=loss)
