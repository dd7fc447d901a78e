"""The harness-owned adaptation loop and its checkpoints.

This module owns what every method shares and none may change: drawing source and target batches
on the device, weak augmentation, autocast, the progress bar, epoch boundaries, the divergence
check, and evenly spaced checkpoints. A checkpoint keeps the weights plus the two scores model
selection may use: label-free validators on the hard pool and AUROC on the 20% labelled split;
the hard test split is never touched here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.api import AdaptationMethod, AdaptContext, DomainData
from harness.config import AdaptConfig
from harness.metrics import class_scores, score_auroc, validator_scores
from harness.training import Autocast, Throughput, infer, progress


@dataclass
class Checkpoint:
    step: int
    state: dict
    validator: dict[str, float]
    labelled_auroc: float

    def summary(self) -> dict[str, float]:
        """The selection scores of this checkpoint (one entry of the run folder's checkpoints.json)."""
        return {"step": self.step, **self.validator, "labelled_auroc": self.labelled_auroc}


def checkpoint(method: AdaptationMethod, pool: DomainData, labelled: DomainData, step: int, batch_size: int,
               autocast: Autocast) -> Checkpoint:
    """Scores used for selection: label-free validators on the pool, AUROC on the 20% labelled split."""
    method.eval()
    pool_logits = infer(method.predict, pool, batch_size, autocast)
    lab_scores = class_scores(infer(method.predict, labelled, batch_size, autocast))
    lab_auc = score_auroc(labelled.labels.cpu().numpy(), lab_scores)
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    method.train()
    return Checkpoint(step, state, validator_scores(pool_logits), lab_auc)


def adapt(method: AdaptationMethod, ctx: AdaptContext, pool: DomainData, labelled: DomainData,
          cfg: AdaptConfig, autocast: Autocast, quiet: bool = False) -> list[Checkpoint]:
    """The harness-owned loop: sampling, weak augmentation, AMP, progress, checkpoints.

    `pool` and `labelled` are the (label-free) hard pool and the 20% labelled split that
    checkpoints are scored on; a method that does not train gets one checkpoint at step 0.
    """
    eval_bs = cfg.batch_size * 2
    if not type(method).train_model:
        return [checkpoint(method, pool, labelled, 0, eval_bs, autocast)]
    bs, steps = cfg.batch_size, cfg.steps
    at = {max(1, round(steps * (i + 1) / cfg.checkpoints)) for i in range(cfg.checkpoints)}
    epoch_len = max(1, len(pool) // bs)
    bar, tp = progress(steps, type(method).name, quiet), Throughput()
    cks = []
    method.train()
    for step in range(steps):
        if step % epoch_len == 0:
            method.on_epoch_start(step // epoch_len)
        src, tgt = ctx.source.sample(bs, ctx.generator), ctx.target.sample(bs, ctx.generator)
        src.images, tgt.images = ctx.augment(src.images, "weak"), ctx.augment(tgt.images, "weak")
        with autocast():
            logs = method.update(src, tgt, step)
        bar.update()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(logs.items())[:3]} |
                            {"img_s": f"{tp.add(2 * bs * min(10, step + 1)):.0f}"})
        if step + 1 in at:
            cks.append(checkpoint(method, pool, labelled, step + 1, eval_bs, autocast))
    bar.close()
    for v in logs.values():
        if not np.isfinite(v):
            raise FloatingPointError(f"{type(method).name}: training diverged (a loss is {v})")
    return cks
