"""The CUDA code paths: bf16 autocast, fused AdamW, device-resident data, GPU neighbour search, every
method's update, scoring. They run whenever CUDA is present and are skipped with a reason otherwise.

`HARNESS_TEST_ACCEL=cpu` runs them on the CPU instead (with the CPU's autocast), to check the tests'
own logic on a machine without a GPU; CI leaves it unset, so there they are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import smoke_args

from harness.cli import main
from harness.store import Store

ACCEL = os.environ.get("HARNESS_TEST_ACCEL") or ("cuda" if torch.cuda.is_available() else "")
pytestmark = pytest.mark.skipif(not ACCEL, reason="needs CUDA (or HARNESS_TEST_ACCEL=cpu to check the "
                                                   "tests' logic on a CPU)")
DEV = torch.device(ACCEL or "cpu")


def test_auto_precision_is_bf16_and_the_optimiser_fused_on_cuda() -> None:
    from harness.api import adamw
    from harness.training import resolve_precision

    w = torch.nn.Parameter(torch.randn(64, 32, device=DEV))
    opt = adamw([w], lr=1e-3, weight_decay=1e-4, device=DEV)
    if DEV.type == "cuda":
        assert resolve_precision(DEV) == "bf16"
        assert opt.defaults["fused"] is True
    # one fused step equals the reference (for-loop) AdamW step on the same gradient
    ref_w = torch.nn.Parameter(w.detach().clone())
    ref = torch.optim.AdamW([ref_w], lr=1e-3, weight_decay=1e-4, foreach=False)
    g = torch.randn_like(w)
    w.grad, ref_w.grad = g.clone(), g.clone()
    opt.step()
    ref.step()
    torch.testing.assert_close(w.detach(), ref_w.detach(), rtol=1e-5, atol=1e-6)


def test_knn_search_on_the_device_matches_the_cpu() -> None:
    from harness.neighbours import knn_search

    g = torch.Generator().manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(20_000, 64, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(100, 64, generator=g), dim=1)
    s_cpu, i_cpu = knn_search(q, bank, 6, backend="torch")
    s_dev, i_dev = knn_search(q.to(DEV), bank.to(DEV), 6)
    assert i_dev.device.type == DEV.type
    torch.testing.assert_close(s_dev.cpu(), s_cpu, rtol=1e-4, atol=1e-4)
    assert (i_dev.cpu() == i_cpu).float().mean() > 0.99   # ties at the 4th decimal may swap


def _domain(n: int, labels: bool, shift: float, g: torch.Generator):
    from harness.api import DomainData

    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 3, 32, 32, generator=g) + shift + y[:, None, None, None].float()
    return DomainData(x.to(DEV), torch.randn(n, 4, generator=g).to(DEV), y.to(DEV) if labels else None, "d")


def test_augmentation_never_waits_for_the_device_and_equals_the_cpus() -> None:
    """Weak and strong augmentation queue their work without reading a value back to the host (a
    read would stall every training step until the GPU caught up: CUDA's sync debug mode turns any
    such read into an error here), on a batch whose quarters are uneven; weak only moves pixels."""
    from harness.training import Augment

    x = torch.randn(37, 3, 64, 64, device=DEV)
    for strength in ("weak", "strong"):
        g = torch.Generator(device=DEV).manual_seed(0)
        if DEV.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            got = Augment(generator=g)(x, strength)
        finally:
            if DEV.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        assert got.shape == x.shape and torch.isfinite(got).all()
        if strength == "weak":   # pure pixel moves: each stamp keeps its values, wherever it ran
            assert torch.equal(got.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)


def test_logged_values_read_late_are_their_own_steps() -> None:
    """`scalars` copies without waiting and the read waits for that copy: each value read must be its
    own step's even though the kernel making it is still queued behind a ~50 ms sleep when `scalars`
    returns (a read that skipped the wait would see an unfinished copy), on the default stream and on a
    side stream."""
    import contextlib

    from harness.api import scalars

    def busy() -> None:   # keeps the stream busy so that the copy is still pending when read
        if DEV.type == "cuda":
            torch.cuda._sleep(100_000_000)

    x = torch.randn(512, 512, device=DEV)
    made, logged = [], []
    for i in range(3):
        busy()
        v = (x @ x).sum() / 1e6 + i
        made.append(v)
        logged.append(scalars(v=v, i=i))
    side = torch.cuda.Stream() if DEV.type == "cuda" else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        busy()
        w = (x @ x).mean()
        late = scalars(w=w)
    got = [dict(out) for out in logged] + [dict(late)]
    if side is not None:
        side.synchronize()
    assert got == [{"v": v.item(), "i": float(i)} for i, v in enumerate(made)] + [{"w": w.item()}]


@pytest.mark.parametrize("backbone", ["small", "resnet18"])
def test_a_dann_step_never_waits_for_the_device(backbone: str) -> None:
    """The adaptation loop's body (draw, weak augmentation, autocast, DANN's update with its optimiser
    step, schedule) queues its work without reading anything back to the host: its logged terms come
    back as a `Scalars` whose copy is awaited only when read, which the loop does a step later. Any
    read would make the host wait for every step to finish, starving a fast GPU of work."""
    from harness.api import AdaptContext
    from harness.models.finder import LensFinder
    from harness.protocol import build_optimizer, build_scheduler
    from harness.registry import get_method
    from harness.training import Augment, autocast_factory, resolve_precision

    cls, g = get_method("dann"), torch.Generator().manual_seed(0)
    source, target = _domain(64, True, 0.0, g), _domain(64, False, 0.5, g)
    gen = torch.Generator(device=DEV).manual_seed(0)
    autocast = autocast_factory(DEV, resolve_precision(DEV))
    ctx = AdaptContext(
        model=LensFinder(backbone, 3, n_features=4).to(DEV), source=source, target=target, labelled=None,
        device=DEV, steps=8, batch_size=16, num_classes=2, seed=0, hparams=dict(cls.hparams),
        autocast=autocast, augment=Augment(generator=gen), generator=gen, log=lambda m: None)
    method = cls()
    method.setup(ctx)
    method.to(DEV)
    method.opt = build_optimizer(method.param_groups(), method.hp, DEV)
    sched = build_scheduler(method.opt, method.hp, ctx.steps)
    method.train()

    def body(step: int):
        src, tgt = ctx.source.sample(16, gen), ctx.target.sample(16, gen)
        src.images, tgt.images = ctx.augment(src.images, "weak"), ctx.augment(tgt.images, "weak")
        with autocast():
            logs = method.update(src, tgt, step)
        sched.step()
        return logs

    logs = [body(0)]   # the first step allocates (optimiser state, kernels): not what is checked
    if DEV.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        logs += [body(step) for step in range(1, 4)]
    finally:
        if DEV.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert all(list(out) == ["loss", "cls", "domain", "domain_acc", "grl_lambda"] for out in logs)
    assert all(torch.isfinite(torch.tensor(list(out.values()))).all() for out in logs)


@pytest.mark.parametrize("name", ["dann", "cdan", "mcc", "contrastive_knn", "pseudo_label_semi", "oracle"])
def test_the_harness_loop_trains_each_kind_of_method_on_the_device_under_autocast(name: str) -> None:
    """The harness's own loop (optimiser, schedule, on-device augmentation, bf16 autocast on CUDA,
    checkpoints) with the method's update on device-resident batches."""
    from harness.adapt import adapt
    from harness.api import AdaptContext
    from harness.config import AdaptConfig
    from harness.models.finder import LensFinder
    from harness.registry import get_method
    from harness.training import Augment, autocast_factory, resolve_precision

    cls, g = get_method(name), torch.Generator().manual_seed(0)
    source, pool, labelled = _domain(64, True, 0.0, g), _domain(64, False, 0.5, g), _domain(24, True, 0.5, g)
    target = _domain(64, True, 0.5, g) if cls.oracle else pool
    gen = torch.Generator(device=DEV).manual_seed(0)
    autocast = autocast_factory(DEV, resolve_precision(DEV))
    ctx = AdaptContext(
        model=LensFinder("small", 3, n_features=4).to(DEV), source=source, target=target,
        labelled=labelled if cls.uses_target_labels or cls.oracle else None, device=DEV, steps=4,
        batch_size=8, num_classes=2, seed=0, hparams=dict(cls.hparams),
        source_prior=torch.tensor([0.5, 0.5], device=DEV), target_prior=torch.tensor([0.7, 0.3], device=DEV),
        autocast=autocast, augment=Augment(generator=gen), generator=gen, log=lambda m: None)
    method = cls()
    method.setup(ctx)
    method.to(DEV)
    cks = adapt(method, ctx, pool, labelled, AdaptConfig(steps=4, batch_size=8, checkpoints=2), autocast,
                quiet=True)
    assert [c.step for c in cks] == [0, 2, 4]
    assert all(p.device.type == DEV.type and torch.isfinite(p).all() for p in method.parameters())


def test_smoke_run_trains_on_the_device_and_scores_agree_with_the_cpu(smoke_root: Path, tmp_path: Path
                                                                      ) -> None:
    from harness.data import imageset
    from harness.score import load_model, score_set
    from harness.training import Runtime

    args = ["run", "--method", "dann", *smoke_args(smoke_root, "--quiet")]
    args[args.index("--device") + 1] = ACCEL
    args[args.index("--store") + 1] = str(tmp_path / "s.db")
    assert main(args) == 0
    store = Store(tmp_path / "s.db")
    row = store.runs().iloc[-1]
    assert row.status == "ok"
    if DEV.type == "cuda":
        assert row.device == torch.cuda.get_device_name(DEV)
        assert '"precision": "bf16"' in row.config
    hard = imageset.load(next(p for p in (smoke_root / "ds").iterdir() if p.name.startswith("hard-")))
    scores = {}
    for dev in ("cpu", ACCEL):
        model, info = load_model(store, row.id, torch.device(dev))
        rt = Runtime(torch.device(dev), "fp32", True, lambda m: None)
        scores[dev] = score_set(model, hard, info, rt, chunk=100, batch=64)["score"].to_numpy()
    assert abs(scores["cpu"] - scores[ACCEL]).max() < 1e-3
