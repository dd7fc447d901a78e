"""Where the demo's CPU time went, and what each fix buys: every line is a ratio measured in one run.

1. backbone: a training step (weak augmentation + forward + backward + AdamW) of the seed's `small`
   CNN against the demo's `tiny` one, both channels-last, and `small` in the default NCHW layout;
2. workers: images/s of one process with all cores against one single-thread process per core
   (what `run --jobs auto` does), same step, same total work;
3. blur: the strong augmentation's separable Gaussian as a banded matmul against the depthwise
   conv2d it replaced;
4. allocator: the tiny step in a fresh single-thread process with glibc's defaults against one that
   keeps freed memory (`harness.training.keep_freed_memory`);
5. bootstrap: a 1,000-resample AUROC interval from one sort (`harness.metrics.auroc_ci`) against a
   loop of scikit-learn `roc_auc_score` calls;
6. worker start: a pool of one worker per core until each has done a worker's first imports (the
   pipeline, an optimiser, the validators), spawned against forked from `harness.parallel`'s
   preloaded fork server: the first pool (the server starts too), then a second pool in the same
   driver (a sweep's next card); wall seconds and the machine's busy CPU seconds (/proc/stat, so
   run it on an idle machine);
7. weak augmentation: the quarter batches' shifts folded into the flip/rot90 gather (no value read back
   to the host) against the gather followed by a `torch.roll` per quarter (the same output);
8. ReLU order: the tiny step in one thread with the backbone as built (max-pool, then ReLU) against
   the textbook conv-BN-ReLU-pool order, the same numbers bit for bit (fresh single-thread processes
   that keep freed memory, as `run --jobs` workers do; ten alternations, medians);
9. top-k: the k = 7 best of 64 rows of 100k and 1M scores (a contrastive_knn batch's chunk against
   its bank) with `harness.neighbours.row_topk`'s two passes against one `torch.topk` (same values).

    python -m bench.cpu_speed [--steps 30] [--batch 96]

Prints a Markdown table for bench/RESULTS.md, with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import numpy as np
import torch
import torch.nn.functional as F


def _textbook_order(net: torch.nn.Module) -> torch.nn.Module:
    """`net` with each (max-pool, ReLU) pair of its trunk swapped back to (ReLU, max-pool)."""
    layers = list(net.net)
    for i in [i for i, m in enumerate(layers[:-1]) if isinstance(m, torch.nn.MaxPool2d)]:
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    net.net = torch.nn.Sequential(*layers)
    return net


def _step_rate(backbone: str, batch: int, steps: int, threads: int, channels_last: bool = True,
               keep_memory: bool = False, textbook: bool = False) -> float:
    """Training images/s of a backbone + linear head on random stamps (weak augmentation included)."""
    from harness.api import adamw
    from harness.models import make_backbone
    from harness.training import Augment, keep_freed_memory

    if keep_memory:
        keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = make_backbone(backbone, 3)
    net = _textbook_order(net) if textbook else net
    head = torch.nn.Linear(net.out_dim, 2)
    if channels_last:
        fwd = net
    else:   # the same layers in the default NCHW layout, bypassing forward's channels-last conversion
        net = net.to(memory_format=torch.contiguous_format)
        fwd = lambda x: net.proj(net.net(x))
    opt = adamw([*net.parameters(), *head.parameters()], torch.device("cpu"), 1e-3)
    aug = Augment(generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 2, (batch,))

    def step() -> None:
        loss = F.cross_entropy(head(fwd(aug(x, "weak"))), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def _worker(args: tuple) -> float:
    return _step_rate(*args)


def _first_imports(_: int) -> int:
    """What a pool worker does before its first run: import the pipeline, build an optimiser (torch
    imports `torch._dynamo` then), import the validators."""
    from harness.api import adamw
    from harness.pipeline import run_method  # noqa: F401
    from harness.registry import all_methods

    adamw([torch.zeros(1, requires_grad=True)], torch.device("cpu"), 1e-3)
    all_methods()
    import pytorch_adapt.validators  # noqa: F401

    return os.getpid()


def _busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes: the fork server too)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # minus idle and iowait


def _pool_start(ctx, cores: int) -> tuple[float, float]:
    """(wall s, busy CPU s) for a fresh pool of `cores` workers to finish their first imports."""
    import concurrent.futures as cf

    t, c = time.perf_counter(), _busy_cpu()
    with cf.ProcessPoolExecutor(cores, mp_context=ctx) as pool:
        list(pool.map(_first_imports, range(cores)))
    return time.perf_counter() - t, _busy_cpu() - c


def _timed(fn, n: int = 5) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=96)
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    rows = []

    small_nchw = _step_rate("small", a.batch, a.steps, cores, channels_last=False)
    small = _step_rate("small", a.batch, a.steps, cores)
    tiny = _step_rate("tiny", a.batch, a.steps, cores)
    rows += [("small: channels-last vs NCHW (img/s)", small_nchw, small),
             ("backbone: tiny vs small, channels-last (img/s)", small, tiny)]

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(cores) as pool:
        split = sum(pool.map(_worker, [("tiny", a.batch, a.steps, 1)] * cores))
    rows.append((f"workers: {cores} x 1 thread vs 1 x {cores} threads, tiny (img/s)", tiny, split))
    alloc = []
    for keep in (False, True, False, True):   # alternated, fresh processes: glibc reads its settings once
        with ctx.Pool(1) as pool:
            alloc.append(pool.apply(_worker, (("tiny", a.batch, a.steps, 1, True, keep),)))
    rows.append(("allocator: keep freed memory vs glibc default, tiny, 1 thread (img/s)",
                 (alloc[0] + alloc[2]) / 2, (alloc[1] + alloc[3]) / 2))

    order: dict[bool, list[float]] = {True: [], False: []}
    with ctx.Pool(1) as pool:   # alternated in one worker that keeps freed memory, as run --jobs ones do
        for textbook in (True, False) * 10:
            args = ("tiny", a.batch, a.steps, 1, True, True, textbook)
            order[textbook].append(pool.apply(_worker, (args,)))
    rows.append(("ReLU order: pool-then-ReLU vs ReLU-then-pool, tiny, 1 thread (img/s)",
                 float(np.median(order[True])), float(np.median(order[False]))))

    from harness.training import Augment

    x = torch.randn(192, 3, 64, 64)
    k = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=torch.float32) / 0.8) ** 2)
    k = k / k.sum()
    kx, ky = k.view(1, 1, 1, 5).repeat(3, 1, 1, 1), k.view(1, 1, 5, 1).repeat(3, 1, 1, 1)
    conv = _timed(lambda: F.conv2d(F.pad(F.conv2d(F.pad(x, (2, 2, 0, 0), mode="reflect"), kx, groups=3),
                                         (0, 0, 2, 2), mode="reflect"), ky, groups=3))
    mat = _timed(lambda: Augment(generator=torch.Generator().manual_seed(0))._blur(x))
    rows.append(("blur of 192 stamps: banded matmul vs depthwise conv2d (ms)", conv * 1e3, mat * 1e3))

    from harness.training import _dihedral, _permute_pixels

    def rolled(a: Augment, x: torch.Tensor) -> torch.Tensor:
        """Weak augmentation as it was: the flip/rot90 gather, then a roll per quarter batch by shifts
        read back to the host (the same draws as `Augment`)."""
        b = x.shape[0]
        flip = a._rand(b, 1, 1, 1, device=x.device) < 0.5
        k = (a._rand(b, device=x.device) * 4).long()
        x = _permute_pixels(x, _dihedral(x.shape[-1], x.device)[flip.view(b).long() * 4 + k])
        chunks = x.chunk(4)
        shifts = (a._rand(len(chunks), 2, device=x.device) * 5).long() - 2
        return torch.cat([torch.roll(c, (int(s[0]), int(s[1])), dims=(-2, -1))
                          for c, s in zip(chunks, shifts)])

    x96 = torch.randn(96, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    old = _timed(lambda: rolled(Augment(generator=torch.Generator().manual_seed(0)), x96), 20)
    new = _timed(lambda: Augment(generator=torch.Generator().manual_seed(0))(x96, "weak"), 20)
    rows.append(("weak augmentation of 96 stamps: shifts in the gather vs rolled per quarter (ms)",
                 old * 1e3, new * 1e3))

    from harness.neighbours import row_topk

    for n in (100_000, 1_000_000):
        scores = torch.randn(64, n, generator=torch.Generator().manual_seed(n))
        whole = _timed(lambda s=scores: torch.topk(s, 7, dim=1)) * 1e3
        rows.append((f"top-7 of 64 rows x {n:,} scores: two passes vs torch.topk (ms)", whole,
                     _timed(lambda s=scores: row_topk(s, 7)) * 1e3))

    from sklearn.metrics import roc_auc_score

    from harness.metrics import auroc_ci

    rng = np.random.default_rng(0)
    yb = rng.integers(0, 2, 1000)
    sb = rng.normal(size=1000) + yb

    def loop() -> None:
        r = np.random.default_rng(0)
        for _ in range(1000):
            i = r.integers(0, 1000, 1000)
            roc_auc_score(yb[i], sb[i])

    rows.append(("AUROC interval, 1,000 resamples of 1,000 images: one sort vs sklearn loop (s)",
                 _timed(loop, 1), _timed(lambda: auroc_ci(yb, sb), 3)))

    from harness.parallel import worker_context

    spawn = [_pool_start(ctx, cores) for _ in range(2)]
    fork = [_pool_start(worker_context(), cores) for _ in range(2)]   # the server starts with the first pool
    for k, which in enumerate(("first", "second")):
        rows.append((f"worker start, {which} pool of {cores}: fork server vs spawn (wall s)", spawn[k][0],
                     fork[k][0]))
        rows.append((f"worker start, {which} pool of {cores}: fork server vs spawn (busy CPU s)",
                     spawn[k][1], fork[k][1]))

    from harness.training import cpu_has_bf16

    bf16 = "with" if cpu_has_bf16() else "without"
    print(f"CPU: {cores} cores {bf16} AVX512-BF16, torch {torch.__version__}, fp32\n")
    print("| what | before | after | ratio |\n|---|---|---|---|")
    for what, before, after in rows:
        faster = after / before if "img/s" in what else before / after
        print(f"| {what} | {before:.4g} | {after:.4g} | **{faster:.2f}x** |")


if __name__ == "__main__":
    main()
