"""source_finetune: the adaptation loop with the source CE alone (a control, not a method).

Why: every adaptation method trains the source model further with its own recipe, steps and
augmentation; a gain over `source_only` could come from that extra training rather than from the
adaptation loss. This control runs the same loop, recipe (`harness.api.SGD_RECIPE`), steps and
augmentation with the source cross-entropy only, so "method minus source_finetune" isolates the loss.
"""

from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as F

from harness.api import SGD_RECIPE, AdaptationMethod, Batch, register, scalars


@register
class SourceFinetune(AdaptationMethod):
    """Control: the adaptation loop and recipe with the source cross-entropy alone."""

    name = "source_finetune"
    role = "control"
    hparams: ClassVar[dict[str, Any]] = {**SGD_RECIPE}

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        loss = F.cross_entropy(self.model(src.images, src.catalog).float(), src.labels)
        self.step(loss)
        return scalars(loss=loss)
