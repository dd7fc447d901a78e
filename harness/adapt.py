"""The harness-owned adaptation loop and its checkpoints: one fair protocol for every method.

This module owns what every method shares and none may change: the optimiser and its annealed
schedule, built from the method's declared recipe (`harness.protocol`), drawing source and target
batches on the device, weak augmentation, autocast, the progress bar, epoch boundaries, the
divergence check, and checkpoints: the start model (step 0) and evenly spaced ones after it. A
checkpoint keeps the weights plus the two scores model selection may use: label-free validators on
the hard pool and AUROC on the 20% labelled split; the hard test split is never touched here.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from harness.api import AdaptationMethod, AdaptContext, DomainData
from harness.config import AdaptConfig
from harness.metrics import class_scores, score_auroc, validator_scores
from harness.protocol import build_optimizer, build_scheduler
from harness.training import Autocast, Throughput, infer, progress


@dataclass
class Checkpoint:
    step: int
    state: dict
    validator: dict[str, float]
    labelled_auroc: float
    test_auroc: float | None = None     # filled only for the oracle's learning curve, after training
    start_key: str | None = None        # step 0 of a default-`predict` method: its weights' hash

    def summary(self) -> dict[str, float]:
        """The selection scores of this checkpoint (one entry of the run folder's checkpoints.json)."""
        out = {"step": self.step, **self.validator, "labelled_auroc": self.labelled_auroc}
        return out if self.test_auroc is None else {**out, "test_auroc": self.test_auroc}


class DivergenceCheck:
    """Stops the loop at the first step whose logged terms are not finite, reading them one step
    late: on CUDA, step N's terms are read once step N+1 is queued, so the device always has the next
    step's work while the host waits for the last one (`harness.api.Scalars`). `settle` checks the
    pending step and the weights themselves (an update can overflow after a finite loss) before a
    checkpoint scores them and before an epoch hook sees them, so a diverged model is never scored or
    selected; `guard` reports an error that a diverged step caused in the next one as that divergence."""

    def __init__(self, name: str) -> None:
        self.name, self.pending = name, None

    def after(self, step: int, logs: Mapping[str, float]) -> Mapping[str, float] | None:
        """Queue step `step`'s logs; check and return the previous step's (None at the first step)."""
        previous = self.flush()
        self.pending = (step, logs)
        return previous

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            self.flush()   # a pending diverged step raises its FloatingPointError, chained to this error
            raise

    def settle(self, steps_done: int, method: AdaptationMethod) -> None:
        """`flush`, then one check (one device sync) that every float weight and buffer is finite."""
        self.flush()
        state = [t for t in (*method.parameters(), *method.buffers()) if t.is_floating_point()]
        if state and not bool(torch.stack([torch.isfinite(t).all() for t in state]).all()):
            raise FloatingPointError(f"{self.name}: training diverged by step {steps_done} "
                                     "(weights not finite)")

    def flush(self) -> Mapping[str, float] | None:
        """Check the pending step's logs now; return them (None when nothing is pending)."""
        if self.pending is None:
            return None
        (step, logs), self.pending = self.pending, None
        if bad := next((k for k, v in logs.items() if not np.isfinite(v)), None):
            # stop here, with the step: a diverged model would go on to score NaNs at its checkpoints
            raise FloatingPointError(f"{self.name}: training diverged at step {step + 1} "
                                     f"({bad} = {logs[bad]})")
        return logs


def checkpoint(method: AdaptationMethod, pool: DomainData, labelled: DomainData, step: int, batch_size: int,
               autocast: Autocast) -> Checkpoint:
    """Scores used for selection: label-free validators on the pool, AUROC on the 20% labelled split."""
    method.eval()
    pool_logits = infer(method.predict, pool, batch_size, autocast)
    lab_logits = infer(method.predict, labelled, batch_size, autocast)
    if not bool(torch.isfinite(pool_logits).all() & torch.isfinite(lab_logits).all()):
        # finite weights can still overflow in the forward pass (a momentum that amplifies, say)
        raise FloatingPointError(f"{type(method).name}: training diverged by step {step} "
                                 "(outputs not finite)")
    lab_scores = class_scores(lab_logits)
    lab_auc = score_auroc(labelled.labels.cpu().numpy(), lab_scores)
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    method.train()
    return Checkpoint(step, state, validator_scores(pool_logits), lab_auc)


def start_checkpoint(method: AdaptationMethod, pool: DomainData, labelled: DomainData, batch_size: int,
                     autocast: Autocast, seen: dict | None = None) -> Checkpoint:
    """The step-0 checkpoint. Its scores depend only on the start weights when the method predicts
    with its lens finder (the contract's default `predict`), so methods that start from the same
    model share them through `seen` (keyed by a hash of those weights) instead of re-scoring."""
    if seen is None or type(method).predict is not AdaptationMethod.predict:
        return checkpoint(method, pool, labelled, 0, batch_size, autocast)
    h = hashlib.sha256()
    for k, v in method.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    key = h.hexdigest()
    if key not in seen:
        ck = checkpoint(method, pool, labelled, 0, batch_size, autocast)
        seen[key] = (ck.validator, ck.labelled_auroc)
        ck.start_key = key
        return ck
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    return Checkpoint(0, state, dict(seen[key][0]), seen[key][1], start_key=key)


def budget(cls: type[AdaptationMethod], hp: dict, adapt_cfg: AdaptConfig, source_steps: int,
           source_batch: int) -> tuple[int, int]:
    """(steps, source batch size) of a method: its `steps` hyper-parameter, else the preset's
    adaptation budget, or the source stage's budget for methods that declare `budget = "source"`."""
    if cls.budget == "source":
        steps, bs = source_steps, source_batch
    else:
        steps, bs = adapt_cfg.steps, adapt_cfg.batch_size
    return int(hp.get("steps", 0) or steps), bs


def adapt(method: AdaptationMethod, ctx: AdaptContext, pool: DomainData, labelled: DomainData,
          cfg: AdaptConfig, autocast: Autocast, quiet: bool = False, start_scores: dict | None = None
          ) -> list[Checkpoint]:
    """The harness-owned loop: optimiser and schedule, sampling, weak augmentation, AMP, progress,
    checkpoints (step 0 included, so the start model is always a candidate). The last checkpoint
    always holds the final weights (step `steps`, or step 0 for a method that does not train), so
    the final evaluation reuses its pool validators instead of scoring the pool again.

    `ctx.steps` and `ctx.batch_size` are the method's budget; target batches are `uratio` times the
    source batch when the method's recipe says so (AdaMatch). `pool` and `labelled` are the
    (label-free) hard pool and the 20% labelled split that checkpoints are scored on; `start_scores`
    shares the step-0 scores between methods that start from the same weights.
    """
    eval_bs = cfg.eval_batch_size
    cks = [start_checkpoint(method, pool, labelled, eval_bs, autocast, start_scores)]
    if not type(method).train_model:
        return cks
    hp = ctx.hparams
    bs, steps = ctx.batch_size, ctx.steps
    tbs = bs * int(hp.get("uratio", 1))
    method.opt = build_optimizer(method.param_groups(), hp, ctx.device)
    sched = build_scheduler(method.opt, hp, steps)
    at = {max(1, round(steps * (i + 1) / cfg.checkpoints)) for i in range(cfg.checkpoints)}
    epoch_len = max(1, len(pool) // tbs)
    bar, tp = progress(steps, type(method).name, quiet), Throughput()
    method.train()
    diverged = DivergenceCheck(type(method).name)
    for step in range(steps):
        with diverged.guard():
            if step % epoch_len == 0:
                diverged.settle(step, method)   # epoch hooks (re-estimates, bank refreshes) see it checked
                method.on_epoch_start(step // epoch_len)
            src, tgt = ctx.source.sample(bs, ctx.generator), ctx.target.sample(tbs, ctx.generator)
            src.images, tgt.images = ctx.augment(src.images, "weak"), ctx.augment(tgt.images, "weak")
            with autocast():
                logs = diverged.after(step, method.update(src, tgt, step))
        sched.step()
        bar.update()
        if logs is not None and (step % 10 == 1 or step == steps - 1):
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(logs.items())[:3]} |
                            {"img_s": f"{tp.rate((bs + tbs) * (step + 1)):.0f}"})
        if step + 1 in at:
            diverged.settle(step + 1, method)
            cks.append(checkpoint(method, pool, labelled, step + 1, eval_bs, autocast))
    bar.close()
    return cks
