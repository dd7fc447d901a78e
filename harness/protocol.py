"""The fair adaptation protocol's optimiser and schedule, built by the harness from a method's recipe.

Every method declares its reference's recipe in its hyper-parameters (optimiser, LR, momentum, weight
decay, schedule, backbone LR multiplier; `harness.api.SGD_RECIPE` is the shared Ganin/TLlib one) and
its parameter groups; the harness builds the optimiser and anneals it, so no method is scored on a
constant-LR iterate while the baseline was annealed.

Schedules, as functions of training progress p in [0, 1]:
- `ganin`: (1 + 10 p)^-0.75 (Ganin et al. 2016, used by DANN, CDAN, MCC, SHOT, AaD);
- `cosine`: linear warm-up over the first 5% then cosine to 0 (the source stage's schedule);
- `cos_decay`: cos(arccos(final) p), from 1 to `final` (AdaMatch's ScheduleCos, final 0.25);
- `constant`: 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from harness.api import adamw
from harness.errors import BadInput

SCHEDULES = ("ganin", "cosine", "cos_decay", "constant")
OPTIMIZERS = ("sgd", "adamw")


def schedule_factor(name: str, steps: int, final: float = 0.25, warmup_frac: float = 0.05
                    ) -> Callable[[int], float]:
    """LR factor of step s (0-based, the step about to be taken) for a run of `steps` steps."""
    steps = max(1, int(steps))
    if name == "ganin":
        return lambda s: (1.0 + 10.0 * s / steps) ** -0.75
    if name == "cosine":
        warm = max(1, round(warmup_frac * steps))

        def cosine(s: int) -> float:
            if s < warm:
                return (s + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warm) / max(1, steps - warm))))
        return cosine
    if name == "cos_decay":
        slope = math.acos(final)
        return lambda s: math.cos(slope * s / steps)
    if name == "constant":
        return lambda s: 1.0
    raise BadInput(f"schedule '{name}': choose from {', '.join(SCHEDULES)}")


def build_optimizer(groups: list[dict[str, Any]], hp: dict[str, Any], device: torch.device
                    ) -> torch.optim.Optimizer:
    """The recipe's optimiser over `groups` (each with `params` and `lr_mult`); group LR = lr * lr_mult."""
    lr, wd = float(hp.get("lr", 1e-3)), float(hp.get("weight_decay", 0.0))
    kind = hp.get("optimizer", "adamw")
    torch_groups = [{"params": ps, "lr": lr * float(g.get("lr_mult", 1.0))}
                    for g in groups if (ps := list(g["params"]))]
    if kind == "sgd":
        return torch.optim.SGD(torch_groups, lr=lr, momentum=float(hp.get("momentum", 0.9)),
                               nesterov=bool(hp.get("nesterov", False)), weight_decay=wd)
    if kind == "adamw":
        return adamw(torch_groups, device, lr, wd)
    raise BadInput(f"optimizer '{kind}': choose from {', '.join(OPTIMIZERS)}")


def build_scheduler(opt: torch.optim.Optimizer, hp: dict[str, Any], steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's schedule, applied to every group (each keeps its own `lr_mult` base)."""
    f = schedule_factor(str(hp.get("schedule", "constant")), steps, float(hp.get("lr_decay", 0.25)))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)
