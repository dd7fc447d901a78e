"""oracle: fine-tune on the whole hard pool WITH its labels. An upper bound, never a result."""

from typing import Any, ClassVar

import torch.nn.functional as F

from harness.api import AdaptationMethod, AdaptContext, Batch, register, scalars


@register
class Oracle(AdaptationMethod):
    """ORACLE upper bound: trained on all hard-pool labels (the top reference for 'gap closed')."""

    name = "oracle"
    uses_target_labels = True
    oracle = True
    role = "oracle"
    hparams: ClassVar[dict[str, Any]] = {"lr": 5e-4, "weight_decay": 1e-4}

    def setup(self, ctx: AdaptContext) -> None:
        super().setup(ctx)
        self.opt = ctx.optimizer(self.model.parameters())

    def update(self, src: Batch, tgt: Batch, step: int) -> dict[str, float]:
        loss = F.cross_entropy(self.model(tgt.images, tgt.catalog), tgt.labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return scalars(loss=loss)
