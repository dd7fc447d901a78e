"""kNN search cost: faiss vs torch on a 100k x 128 bank, and as a share of a contrastive_knn step.

Run with `pytest tests/bench --benchmark-enable -s` (the default `--benchmark-disable` makes these
a quick smoke run). The goal is search < 5% of the step time; the
ratio is printed and stored in `benchmark.extra_info`, never asserted (timings are machine noise).
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from harness.api import AdaptContext, DomainData
from harness.models.finder import LensFinder
from harness.neighbours import faiss_available, knn_search
from harness.protocol import build_optimizer
from harness.registry import get_method

BANK, DIM, K = 100_000, 128, 6     # contrastive_knn searches k + 1 = 6 (self excluded)
BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])


@functools.cache
def bank() -> torch.Tensor:
    return F.normalize(torch.randn(BANK, DIM, generator=torch.Generator().manual_seed(0)), dim=1)


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("queries", [64, 256])
def test_bench_knn_search(benchmark, backend: str, queries: int) -> None:
    q = F.normalize(torch.randn(queries, DIM), dim=1)
    _, idx = benchmark(knn_search, q, bank(), K, backend)
    assert idx.shape == (queries, K)
    benchmark.extra_info.update(bank=BANK, dim=DIM, k=K, backend=backend, queries=queries)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bench_search_vs_contrastive_step(benchmark, precision: str) -> None:
    """One contrastive_knn update (small backbone, batch 64 per domain, 64x64x3) vs its searches."""
    torch.manual_seed(0)
    b, n = 64, 128
    g = torch.Generator().manual_seed(0)

    def dom(labels: bool) -> DomainData:
        return DomainData(torch.randn(n, 3, 64, 64, generator=g), torch.randn(n, 4, generator=g),
                          torch.randint(0, 2, (n,), generator=g) if labels else None)

    autocast = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext)
    cls = get_method("contrastive_knn")
    ctx = AdaptContext(model=LensFinder("small", 3, n_features=4), source=dom(True), target=dom(False),
                       labelled=None, device=torch.device("cpu"), steps=100, batch_size=b, num_classes=2,
                       seed=0, hparams={**cls.hparams, "nce_weight": 0.5}, autocast=autocast, generator=g)
    method = cls()
    method.setup(ctx)   # the cross-domain InfoNCE ablation on, so the source-bank search is timed too
    method.opt = build_optimizer(method.param_groups(), method.hp, torch.device("cpu"))
    method.on_epoch_start(0)
    # a full-size target bank (rows beyond the small pool are never the current batch)
    method.bank_feat = bank().clone()
    method.bank_prob = torch.full((BANK, 2), 0.5)
    src, tgt = ctx.source.sample(b, g), ctx.target.sample(b, g)

    def step() -> None:
        with autocast():
            method.update(src, tgt, 1)

    q = F.normalize(torch.randn(b, DIM), dim=1)
    src_bank = method.src_feat

    def searches(backend: str = "auto") -> None:
        knn_search(q, method.bank_feat, method.hp["k"] + 1, backend)
        knn_search(q, src_bank, method.hp["k_src"], backend)

    # with --benchmark-disable (the default addopts) this is a cheap smoke run, not a measurement
    reps = 1 if benchmark.disabled else 5
    step_s = median_seconds(step, reps=1 if benchmark.disabled else 3)
    search_s = median_seconds(searches, reps=reps)            # what contrastive_knn uses ("auto")
    torch_s = median_seconds(functools.partial(searches, "torch"), reps=reps)
    ratio = search_s / step_s
    benchmark.extra_info.update(precision=precision, step_ms=1e3 * step_s, search_ms=1e3 * search_s,
                                search_over_step=ratio, torch_search_over_step=torch_s / step_s,
                                bank=BANK, batch=b)
    print(f"\n[{precision}] contrastive_knn step {1e3 * step_s:.1f} ms, kNN searches {1e3 * search_s:.1f} ms "
          f"(target bank {BANK} + source bank {len(src_bank)}), ratio {100 * ratio:.1f}% (goal < 5%); "
          f"torch backend {1e3 * torch_s:.1f} ms = {100 * torch_s / step_s:.1f}%")
    if not benchmark.disabled:
        benchmark.pedantic(step, rounds=3, iterations=1)
