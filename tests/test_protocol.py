"""The harness-built optimiser and schedules match their published formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.api import SGD_RECIPE
from harness.errors import BadInput
from harness.protocol import build_optimizer, build_scheduler, schedule_factor


def test_ganin_schedule_values() -> None:
    f = schedule_factor("ganin", 100)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(6 ** -0.75)          # (1 + 10 * 0.5)^-0.75 = 0.2616
    assert f(100) == pytest.approx(11 ** -0.75)


def test_cosine_warms_up_then_reaches_zero() -> None:
    f = schedule_factor("cosine", 100)                  # 5 warm-up steps
    assert [f(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert f(5) == 1.0 and f(100) == pytest.approx(0.0, abs=1e-12)
    assert f(52) == pytest.approx(0.5 * (1 + math.cos(math.pi * 47 / 95)))


def test_adamatch_cos_decay_ends_at_final() -> None:
    f = schedule_factor("cos_decay", 40, final=0.25)
    assert f(0) == 1.0 and f(40) == pytest.approx(0.25)
    assert f(20) == pytest.approx(math.cos(math.acos(0.25) / 2))


def test_unknown_schedule_and_optimizer_are_bad_input() -> None:
    with pytest.raises(BadInput, match="schedule 'linear'"):
        schedule_factor("linear", 10)
    with pytest.raises(BadInput, match="optimizer 'rmsprop'"):
        build_optimizer([{"params": [nn.Parameter(torch.zeros(1))]}], {"optimizer": "rmsprop"},
                        torch.device("cpu"))


def test_groups_get_their_multiplier_and_the_schedule_applies_to_all() -> None:
    back, head = nn.Linear(2, 2), nn.Linear(2, 1)
    hp = {**SGD_RECIPE, "lr": 0.01}
    opt = build_optimizer([{"params": back.parameters(), "lr_mult": 0.1},
                           {"params": head.parameters(), "lr_mult": 1.0}], hp, torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD)
    g0, g1 = opt.param_groups
    assert g0["lr"] == pytest.approx(0.001) and g1["lr"] == pytest.approx(0.01)
    assert g0["momentum"] == 0.9 and g0["nesterov"] and g0["weight_decay"] == 1e-3
    sched = build_scheduler(opt, hp, steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert g0["lr"] == pytest.approx(0.001 * 6 ** -0.75) and g1["lr"] == pytest.approx(0.01 * 6 ** -0.75)


def test_adamw_recipe() -> None:
    opt = build_optimizer([{"params": [nn.Parameter(torch.zeros(3))]}],
                          {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4}, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 2e-3


def test_step0_scores_are_shared_only_between_identical_start_weights() -> None:
    # two methods from the same start model get the same step-0 scores without re-scoring; a changed
    # start model is scored afresh
    import torch

    from harness.adapt import checkpoint, start_checkpoint
    from harness.api import AdaptationMethod, DomainData
    from harness.models import LensFinder

    torch.manual_seed(0)
    pool = DomainData(torch.randn(40, 3, 64, 64), torch.zeros(40, 0))
    lab = DomainData(torch.randn(20, 3, 64, 64), torch.zeros(20, 0), torch.arange(20) % 2)

    def method(model: LensFinder) -> AdaptationMethod:
        m = AdaptationMethod()
        m.model = model
        return m

    finder = LensFinder("tiny", 3, 0).eval()
    seen: dict = {}
    first = start_checkpoint(method(finder), pool, lab, 16, contextlib_null, seen)
    again = start_checkpoint(method(finder), pool, lab, 16, contextlib_null, seen)
    fresh = checkpoint(method(finder), pool, lab, 0, 16, contextlib_null)
    assert len(seen) == 1 and again.validator == first.validator == fresh.validator
    assert again.labelled_auroc == fresh.labelled_auroc
    other = LensFinder("tiny", 3, 0).eval()
    start_checkpoint(method(other), pool, lab, 16, contextlib_null, seen)
    assert len(seen) == 2


def contextlib_null():
    import contextlib

    return contextlib.nullcontext()
