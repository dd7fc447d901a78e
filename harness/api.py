"""The method contract: what an adaptation method sees and must provide.

A method is one small `AdaptationMethod` subclass in `methods/`, decorated with `@register`.
The harness owns the loop, sampling, augmentation, AMP, logging, checkpoints, evaluation AND the
optimiser and its schedule, built from the method's declared recipe (the reference's: optimiser, LR,
schedule, backbone LR multiplier), so every method gets the same fair loop. A method owns only its
losses (as in DomainBed's `algorithms.py`).

    @register
    class MyMethod(AdaptationMethod):
        name = "my_method"
        hparams = {**SGD_RECIPE, "weight": 1.0}
        def update(self, src, tgt, step):
            loss = ...
            self.step(loss)                     # zero_grad, backward, optimiser step
            return scalars(loss=loss)           # {"loss": float}, one device copy

Methods import only this module (and the leaf `harness.errors`). Discovery lives in
`harness.registry`; third-party packages add methods through the `harness.methods` entry-point group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from harness.neighbours import knn_search

__all__ = [
    "SGD_RECIPE",
    "AdaptContext",
    "AdaptationMethod",
    "Batch",
    "DomainData",
    "adamw",
    "knn_search",
    "register",
    "scalars",
]


def adamw(params, device: torch.device, lr: float, weight_decay: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW, with the fused kernel on CUDA: the one optimiser rule of every stage and method."""
    fused = True if device.type == "cuda" else None
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


# The shared recipe of the Ganin / TLlib / SHOT / AaD family: momentum SGD, annealed as
# lr·(1 + 10p)^-0.75 (Ganin et al. 2016), the pretrained feature extractor at 0.1x the rate of the layers
# above it ("10x for layers trained from scratch"). Methods splat it and override what their paper says.
SGD_RECIPE: dict[str, Any] = {
    "optimizer": "sgd",      # sgd (momentum) | adamw
    "lr": 0.01,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 1e-3,
    "schedule": "ganin",     # ganin | cosine (warm-up + cosine to 0) | cos_decay | constant
    "backbone_mult": 0.1,    # LR multiplier of the start model's image backbone
    "steps": 0,              # 0: the preset's adaptation budget
}


class Scalars(Mapping[str, float]):
    """The floats one `update` logs. On CUDA the tensor terms are copied to pinned host memory without
    waiting, and the copy is awaited on first read: the loop reads step N's terms after queueing step
    N+1, so the device always has queued work while the host waits. Elsewhere the stacked terms (a
    copy) are turned into floats on first read."""

    def __init__(self, names: list[str], tensors: dict[str, Tensor], numbers: dict[str, float]) -> None:
        self._names, self._numbers, self._ready = names, numbers, None
        self._keys, self._values = list(tensors), None
        stacked = torch.stack([v.detach().float() for v in tensors.values()]) if tensors else torch.empty(0)
        if stacked.device.type == "cuda":
            self._host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            self._host.copy_(stacked, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record(torch.cuda.current_stream(stacked.device))   # the copy's stream
        else:
            self._host = stacked

    def _read(self) -> dict[str, float]:
        if self._values is None:
            if self._ready is not None:
                self._ready.synchronize()
            got = {**dict(zip(self._keys, self._host.tolist())), **self._numbers}
            self._values = {k: got[k] for k in self._names}
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(self._read())


def scalars(**values: Tensor | float) -> Mapping[str, float]:
    """The floats `update` returns, read back with one device copy instead of one `.item()` per term
    (and on CUDA, without waiting for it: see `Scalars`).

    Tensors (0-dim) are detached; Python numbers are rounded to float32 on the host (so every value
    has one precision, and a number never costs a copy to the device).
    """
    tensors = {k: v for k, v in values.items() if isinstance(v, Tensor)}
    numbers = {k: float(np.float32(v)) for k, v in values.items() if not isinstance(v, Tensor)}
    return Scalars(list(values), tensors, numbers)


@dataclass
class Batch:
    """One batch on the training device. `labels` is None for unlabelled target data."""

    images: Tensor            # (B, C, H, W) float
    catalog: Tensor           # (B, F) observable features (may have F = 0)
    index: Tensor             # (B,) row indices into the domain's tensors
    labels: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class DomainData:
    """A device-resident slice of an image set (one split). Labels only where visible."""

    images: Tensor
    catalog: Tensor
    labels: Tensor | None = None
    name: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: Tensor) -> Batch:
        return Batch(self.images[idx], self.catalog[idx], idx,
                     None if self.labels is None else self.labels[idx])

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """A random batch drawn by index on the device (with replacement across calls)."""
        idx = torch.randint(0, len(self), (batch_size,), device=self.images.device, generator=generator)
        return self.batch(idx)

    def iterate(self, batch_size: int) -> Iterator[Batch]:
        """Every row once, in order (for evaluation and memory-bank refreshes)."""
        for s in range(0, len(self), batch_size):
            yield self.batch(torch.arange(s, min(s + batch_size, len(self)), device=self.images.device))


@dataclass
class AdaptContext:
    """Everything a method may use. Built by the harness for one (method, seed) run."""

    model: nn.Module                      # a fresh copy of the start model (LensFinder)
    source: DomainData                    # easy train split, with labels
    target: DomainData                    # hard pool, no labels (labels only for oracle methods)
    labelled: DomainData | None           # hard 20% labelled split; None unless uses_target_labels
    device: torch.device
    steps: int                            # total update() calls that will be made
    batch_size: int
    num_classes: int
    seed: int
    hparams: dict[str, Any]
    start: str = "source"                 # which start model `model` is (see AdaptationMethod.start)
    source_prior: Tensor | None = None    # (K,) class prior of the labelled source
    target_prior: Tensor | None = None    # (K,) label-free BBSE estimate of the target pool's prior
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    augment: Callable[[Tensor, str], Tensor] = lambda x, strength="weak": x
    generator: torch.Generator | None = None
    log: Callable[[str], None] = print


class AdaptationMethod(nn.Module):
    """Base class. Subclasses set `name`, optionally `hparams`, and implement setup/update.

    `setup` here stores `self.model`, `self.hp` (the merged hparams) and `self.ctx`; `predict` and
    `features` default to the lens finder held in `self.model`.
    """

    name: ClassVar[str] = ""
    uses_target_labels: ClassVar[bool] = False   # may read ctx.labelled (the 20% split)
    oracle: ClassVar[bool] = False               # target batches carry pool labels (upper bound only)
    # start model: "source" (the easy-set finder, SSL on easy data only), "source_joint" (the easy-set
    # finder whose SSL encoder also saw the hard pool), "ssl" (SSL encoder, untrained head)
    start: ClassVar[str] = "source"
    budget: ClassVar[str] = "adapt"              # "adapt": the preset's adaptation steps; "source": the
                                                 # source stage's steps and batch size (the oracle)
    hparams: ClassVar[dict[str, Any]] = {}
    train_model: ClassVar[bool] = True           # False: the harness skips update() (e.g. source_only)
    role: ClassVar[str] = "method"               # method | baseline | control | oracle: how tables mark it

    model: nn.Module
    hp: dict[str, Any]
    ctx: AdaptContext
    opt: torch.optim.Optimizer                   # built by the harness from `param_groups()` and the recipe

    def setup(self, ctx: AdaptContext) -> None:
        """Keep the start model, this run's hyper-parameters and the context; subclasses call it first.

        `self.model` is registered as a submodule (its weights are the method's state); `self.hp` and
        `self.ctx` are plain attributes, never part of `state_dict()` (checkpoints are state_dicts).
        """
        self.model = ctx.model
        self.hp = dict(ctx.hparams)
        self.ctx = ctx

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameters to optimise, each group with an `lr_mult`: the start model's image backbone at
        `backbone_mult` (pretrained), the rest of the model at 1. Override to add new modules (a
        discriminator, say) at 1, as the references give layers trained from scratch the full rate."""
        backbone = getattr(self.model, "backbone", None)
        if backbone is None:
            return [{"params": list(self.model.parameters()), "lr_mult": 1.0}]
        inner = {id(q) for q in backbone.parameters()}
        rest = [q for q in self.model.parameters() if id(q) not in inner]
        return [{"params": list(backbone.parameters()), "lr_mult": float(self.hp.get("backbone_mult", 1.0))},
                {"params": rest, "lr_mult": 1.0}]

    def step(self, loss: Tensor) -> None:
        """One optimiser step on `loss` with the harness-built optimiser (its schedule is the harness's)."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def update(self, src: Batch, tgt: Batch, step: int) -> Mapping[str, float]:
        """One optimisation step (call `self.step(loss)`); returns `scalars(...)` to log."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called each time the loop starts a new pass over the target pool."""

    def predict(self, batch: Batch) -> Tensor:
        """Logits (B, num_classes)."""
        return self.model(batch.images, batch.catalog)

    def features(self, batch: Batch) -> Tensor:
        """The embedding used for neighbour search, validators and plots."""
        return self.model.embed(batch.images, batch.catalog)

    @classmethod
    def doc(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


REGISTERED: dict[str, type[AdaptationMethod]] = {}


def register(cls: type[AdaptationMethod]) -> type[AdaptationMethod]:
    """Class decorator: make a method available by its `name` (discovery is `harness.registry`'s)."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no `name`")
    other = REGISTERED.get(cls.name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"method name '{cls.name}' registered twice ({other.__module__}, {cls.__module__})")
    REGISTERED[cls.name] = cls
    return cls
