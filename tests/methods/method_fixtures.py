"""A tiny hand-built context and the harness's side of the protocol, for the method unit tests.

`build_optimizer` builds `method.opt` the way the harness does from the method's recipe (one group per
`param_groups()` entry at lr·lr_mult; momentum SGD, or AdamW when `optimizer` is "adamw"), so these
tests exercise the methods without the pipeline. The LR schedule is the harness's and is not needed
to check a loss.
"""

from __future__ import annotations

import torch

from harness.api import SGD_RECIPE, AdaptationMethod, AdaptContext, Batch, DomainData
from harness.models.finder import LensFinder
from harness.registry import get_method

B, STEPS = 8, 5
SOURCE_PRIOR = torch.tensor([0.5, 0.5])
TARGET_PRIOR = torch.tensor([0.75, 0.25])   # a stand-in for the harness's BBSE estimate


class Tripwire:
    """Stands in for ctx.labelled: any use fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"method touched ctx.labelled.{name} without uses_target_labels")

    def __len__(self) -> int:
        raise AssertionError("method touched len(ctx.labelled) without uses_target_labels")


def domain(n: int, labels: bool, seed: int, shift: float = 0.0) -> DomainData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 3, 16, 16, generator=g) + shift + y[:, None, None, None].float()
    return DomainData(images, torch.randn(n, 4, generator=g), y if labels else None, f"d{seed}")


def weak(x: torch.Tensor, strength: str = "weak") -> torch.Tensor:
    x = torch.flip(x, dims=[3])
    return x + 0.1 * torch.randn_like(x) if strength == "strong" else x


def make_ctx(cls: type[AdaptationMethod], **overrides) -> AdaptContext:
    """As the pipeline builds it: the labelled split only where declared, pool labels only for oracles."""
    torch.manual_seed(0)
    labelled = domain(24, True, 3, shift=0.5) if cls.uses_target_labels or cls.oracle else Tripwire()
    return AdaptContext(
        model=LensFinder("small", 3, n_features=4), source=domain(64, True, 1),
        target=domain(40, cls.oracle, 2, shift=0.5), labelled=labelled, device=torch.device("cpu"),
        steps=STEPS, batch_size=B, num_classes=2, seed=0, hparams={**cls.hparams, **overrides},
        source_prior=SOURCE_PRIOR.clone(), target_prior=TARGET_PRIOR.clone(),
        augment=weak, generator=torch.Generator().manual_seed(0), log=lambda s: None)


def build_optimizer(method: AdaptationMethod) -> torch.optim.Optimizer:
    """The harness's optimiser for `method` from its recipe: one group per `param_groups()` entry."""
    hp = {**SGD_RECIPE, **method.hp}   # assumed: a method without recipe keys gets the shared recipe
    groups = [{"params": g["params"], "lr": hp["lr"] * g["lr_mult"]} for g in method.param_groups()]
    if hp["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=hp["lr"], weight_decay=hp["weight_decay"])
    assert hp["optimizer"] == "sgd", hp["optimizer"]
    return torch.optim.SGD(groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"],
                           weight_decay=hp["weight_decay"])


def start(name: str, **overrides) -> tuple[AdaptationMethod, AdaptContext]:
    """A method after `setup`, with the harness-built optimiser, in train mode."""
    cls = get_method(name)
    ctx = make_ctx(cls, **overrides)
    method = cls()
    method.setup(ctx)
    if cls.train_model:
        method.opt = build_optimizer(method)
    method.train()
    return method, ctx


def batches(method: AdaptationMethod, ctx: AdaptContext) -> tuple[Batch, Batch]:
    """A source batch and a target batch `uratio` times larger, as the harness draws them."""
    uratio = int(method.hp.get("uratio", 1))
    return ctx.source.sample(B, ctx.generator), ctx.target.sample(B * uratio, ctx.generator)


def run_method(name: str, steps: int = STEPS, **overrides) -> tuple[AdaptationMethod, list[dict]]:
    method, ctx = start(name, **overrides)
    method.on_epoch_start(0)
    logs = []
    for step in range(steps if type(method).train_model else 0):
        src, tgt = batches(method, ctx)
        assert (tgt.labels is None) is not type(method).oracle
        with ctx.autocast():
            logs.append(method.update(src, tgt, step))
    return method, logs
