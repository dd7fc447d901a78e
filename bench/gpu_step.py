"""The measurements behind `bench/gpu.sh`: the DANN training step three ways, and kNN at a large bank.

DANN step at B images per domain (2B images through the backbone per step), same model and data:
(a) the harness's `dann`: its method class (`methods/dann.py`), the optimiser and schedule that
    `harness.protocol` builds from its recipe, and the `harness.adapt` loop body (device-resident
    batches drawn by index, weak augmentation on the device, autocast: bf16 on CUDA);
(b) pytorch-adapt's stock DANN loop fed by a shuffling DataLoader, fp32: `bench.dann_vs_stock.stock_dann`
    (the same mapping of the lens finder onto G/C/D; its time includes the loader's start and first step);
(c) the bare backbone: forward + backward of 2B images, same precision, no optimiser, no data movement.
(a)/(c) is the share of the backbone's own speed that the harness's step keeps (goal >= 0.9).

kNN: `harness.neighbours.knn_search` (faiss GPU when importable, else torch matmul + topk) for one
contrastive_knn batch of queries over a bank of N entries, against one contrastive_knn step at that
bank size (its own search included): the goal of bench/RESULTS.md is search < 5% of the step.

Data are synthetic (standard normal stamps and catalog features): speed does not depend on content.
Functions only; `bench/gpu_bench.py` is the command line.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.adapt import DivergenceCheck
from harness.api import AdaptContext, DomainData
from harness.models import LensFinder
from harness.models.backbones import make_backbone
from harness.protocol import build_optimizer, build_scheduler
from harness.registry import get_method
from harness.training import Augment, autocast_factory

N_FEATURES = 7        # the simulator's observable catalog columns (mag_g/r/i, two colours, r_half, e)


def device_and_precision(spec: str) -> tuple[torch.device, str]:
    """The device and precision a run would get, with the cuDNN setting a harness `Runtime` makes
    there, so the harness step, the stock loop and the bare backbone are timed under the same one."""
    from harness.training import configure_cuda, resolve_device, resolve_precision

    dev = resolve_device(spec)
    prec = resolve_precision(dev)
    if dev.type == "cuda":
        configure_cuda(prec)
    return dev, prec


def sync(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_domain(n: int, size: int, device: torch.device, labels: bool, seed: int,
                     n_features: int = N_FEATURES) -> DomainData:
    """A device-resident domain laid out as `harness.domains` lays real ones (channels_last images)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    catalog = torch.randn(n, n_features, generator=g).to(device)
    y = torch.randint(0, 2, (n,), generator=g).to(device) if labels else None
    return DomainData(images, catalog, y, "synthetic")


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, target_s: float,
               min_steps: int, max_steps: int) -> tuple[float, int]:
    """Seconds per step after `warmup` steps, over enough steps to fill about `target_s` (so a fast
    step is not timed on a few milliseconds) within [min_steps, max_steps]; also the count timed."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    probe = max(time.perf_counter() - t0, 1e-6)
    n = int(min(max_steps, max(min_steps, target_s / probe)))
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n, n


def dann_method(backbone: str, src: DomainData, tgt: DomainData, batch: int, steps: int,
                device: torch.device, precision: str, read_late: bool = True
                ) -> tuple[torch.nn.Module, Callable[[], None]]:
    """The harness's `dann` set up as `harness.pipeline` sets it up, and one step of `harness.adapt`'s
    loop body on it (sample, weak augmentation, autocast, `update`, the divergence check on the
    previous step's logs, schedule). `read_late=False` reads each step's logs at once instead."""
    cls = get_method("dann")
    hp = dict(cls.hparams)
    torch.manual_seed(0)
    g = torch.Generator(device=device).manual_seed(0)
    model = LensFinder(backbone, 3, src.catalog.shape[1]).to(device)
    model.fit_catalog_scaler(src.catalog)
    autocast = autocast_factory(device, precision)
    ctx = AdaptContext(model=model, source=src, target=tgt, labelled=None, device=device, steps=steps,
                       batch_size=batch, num_classes=2, seed=0, hparams=hp, autocast=autocast,
                       augment=Augment(generator=g), generator=g, log=lambda m: None)
    method = cls()
    method.setup(ctx)
    method.to(device)
    method.opt = build_optimizer(method.param_groups(), hp, device)
    sched = build_scheduler(method.opt, hp, steps)
    method.train()
    state = {"step": 0}
    diverged = DivergenceCheck("dann")

    def step() -> None:
        s, t = ctx.source.sample(batch, g), ctx.target.sample(batch, g)
        s.images, t.images = ctx.augment(s.images, "weak"), ctx.augment(t.images, "weak")
        with autocast():
            logs = method.update(s, t, state["step"] % steps)
        if read_late:
            diverged.after(state["step"], logs)   # the loop's check: the previous step's logs
        else:
            dict(logs)                             # read at once: the host waits for this step
        sched.step()
        state["step"] += 1

    return method, step


def harness_dann_rate(backbone: str, src: DomainData, tgt: DomainData, batch: int, device: torch.device,
                      precision: str, warmup: int, target_s: float, min_steps: int, max_steps: int) -> float:
    """(a) images/s of the harness's device-resident `dann` step (2 x batch images a step)."""
    # the schedule spans far more steps than are timed, so the LR stays near its start as in a real run
    _, step = dann_method(backbone, src, tgt, batch, 100_000, device, precision)
    per_step, _ = time_steps(step, device, warmup, target_s, min_steps, max_steps)
    return 2 * batch / per_step


def bare_backbone_rate(backbone: str, batch: int, size: int, device: torch.device, precision: str,
                       warmup: int, target_s: float, min_steps: int, max_steps: int) -> float:
    """(c) images/s of the backbone alone, forward + backward of 2 x batch pre-made device images."""
    torch.manual_seed(0)
    net = make_backbone(backbone, 3).to(device).train()
    x = torch.randn(2 * batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    autocast = autocast_factory(device, precision)

    def step() -> None:
        with autocast():
            out = net(x)
        out.float().square().mean().backward()
        for p in net.parameters():
            p.grad = None

    per_step, _ = time_steps(step, device, warmup, target_s, min_steps, max_steps)
    return 2 * batch / per_step


def stock_dann_rate(backbone: str, src: DomainData, tgt: DomainData, batch: int, steps: int,
                    device: torch.device, workers: int, warm: bool) -> float:
    """(b) images/s of pytorch-adapt's stock DANN loop (bench.dann_vs_stock.stock_dann), fp32."""
    from bench.dann_vs_stock import stock_dann

    torch.manual_seed(0)
    source = LensFinder(backbone, 3, src.catalog.shape[1]).to(device)
    source.fit_catalog_scaler(src.catalog)
    test = DomainData(tgt.images[:2 * batch], tgt.catalog[:2 * batch], None, "test")
    prepared = types.SimpleNamespace(source=src, pool=tgt, test=test)   # what stock_dann reads
    hp = dict(get_method("dann").hparams)
    if warm:   # CUDA context, cuBLAS/cuDNN handles and fp32 kernels loaded outside the timed call
        stock_dann(prepared, source, hp, 1, batch, 0, device, 0)
    _, img_s, _ = stock_dann(prepared, source, hp, steps, batch, 0, device, workers)
    return float(img_s)


def dann_row(backbone: str, batch: int, size: int, n: int, device: torch.device, precision: str,
             warmup: int, target_s: float, min_steps: int, max_steps: int, stock_steps: int,
             workers: int) -> dict:
    """One table row: (a), (b), (c) for one backbone, and the ratios the goal is about."""
    src = synthetic_domain(n, size, device, labels=True, seed=1)
    tgt = synthetic_domain(n, size, device, labels=False, seed=2)
    timing = (warmup, target_s, min_steps, max_steps)
    a = harness_dann_rate(backbone, src, tgt, batch, device, precision, *timing)
    c = bare_backbone_rate(backbone, batch, size, device, precision, *timing)
    b = stock_dann_rate(backbone, src, tgt, batch, stock_steps, device, workers, warm=device.type == "cuda")
    return {"backbone": backbone, "batch_per_domain": batch, "image_size": size, "precision": precision,
            "stock_precision": "fp32", "harness_img_s": a, "stock_img_s": b, "bare_img_s": c,
            "harness_over_bare": a / c, "harness_over_stock": a / b, "stock_steps": stock_steps,
            "stock_workers": workers}


def knn_row(bank_size: int, queries: int, backbone: str, size: int, device: torch.device, precision: str,
            warmup: int, target_s: float, min_steps: int, max_steps: int) -> dict:
    """One contrastive_knn batch's search over a `bank_size` bank vs one contrastive_knn step with
    that bank (the step's own search included), as `tests/bench/test_bench_knn.py` measures on a CPU."""
    from harness.neighbours import faiss_gpu_available, knn_search

    cls = get_method("contrastive_knn")
    n = 4 * queries
    src = synthetic_domain(n, size, device, labels=True, seed=1)
    tgt = synthetic_domain(n, size, device, labels=False, seed=2)
    g = torch.Generator(device=device).manual_seed(0)
    autocast = autocast_factory(device, precision)
    model = LensFinder(backbone, 3, N_FEATURES).to(device)
    ctx = AdaptContext(model=model, source=src, target=tgt, labelled=None, device=device, steps=100_000,
                       batch_size=queries, num_classes=2, seed=0, hparams=dict(cls.hparams),
                       autocast=autocast, augment=Augment(generator=g), generator=g, log=lambda m: None)
    method = cls()
    method.setup(ctx)
    method.to(device)
    method.opt = build_optimizer(method.param_groups(), method.hp, device)
    method.on_epoch_start(0)
    gb = torch.Generator(device=device).manual_seed(1)
    dim = int(method.bank_feat.shape[1])
    # a full-size target bank (rows beyond the small pool are never the current batch)
    method.bank_feat = F.normalize(torch.randn(bank_size, dim, device=device, generator=gb), dim=1)
    method.bank_prob = torch.full((bank_size, 2), 0.5, device=device)
    method.train()

    def step() -> None:
        s, t = src.sample(queries, g), tgt.sample(queries, g)
        t.images = ctx.augment(t.images, "weak")
        with autocast():
            method.update(s, t, 1)

    q = F.normalize(torch.randn(queries, dim, device=device, generator=gb), dim=1)
    k = int(method.hp["k"]) + 1
    bank: Tensor = method.bank_feat

    def search() -> None:
        knn_search(q, bank, k, method.hp["knn_backend"])

    step_s, _ = time_steps(step, device, warmup, target_s, min_steps, max_steps)
    search_s, reps = time_steps(search, device, warmup, target_s, min_steps, 10 * max_steps)
    backend = "faiss GPU" if device.type == "cuda" and faiss_gpu_available() else (
        "torch matmul+topk" if device.type == "cuda" else "auto (CPU)")
    return {"bank": bank_size, "dim": dim, "queries": queries, "k": k, "backbone": backbone,
            "precision": precision, "backend": backend, "search_ms": 1e3 * search_s,
            "step_ms": 1e3 * step_s, "search_over_step": search_s / step_s, "search_reps": reps}
