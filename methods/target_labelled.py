"""target_labelled: fine-tune the source model on the 20% labelled hard split only."""

from typing import Any, ClassVar

import torch.nn.functional as F

from harness.api import AdaptationMethod, AdaptContext, Batch, register, scalars


@register
class TargetLabelled(AdaptationMethod):
    """Fine-tunes on the 20% labelled hard split (uses target labels; no unlabelled data)."""

    name = "target_labelled"
    uses_target_labels = True
    hparams: ClassVar[dict[str, Any]] = {"lr": 5e-4, "weight_decay": 1e-4}

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.opt = ctx.optimizer(self.model.parameters())

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        b = self.ctx.labelled.sample(self.ctx.batch_size, self.ctx.generator)
        loss = F.cross_entropy(self.model(self.ctx.augment(b.images, "weak"), b.catalog), b.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return scalars(loss=loss)
