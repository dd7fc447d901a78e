"""Where the harness's DANN step loses to the bare backbone on a GPU, and what the kNN search costs:
A/B measurements in one process, each against its own baseline, printed as JSON lines.

    python -m bench.gpu_probe [--backbones small,resnet18] [--device auto] [--probes all] [--smoke]

- `cudnn`: the harness `dann` step and the bare backbone with cuDNN autotuning off (the harness's
  setting), then on, then off again (so drift shows);
- `sync`: the `dann` step as the loop runs it (its logged values read a step late, so the host never
  waits for the device) against reading them at once (one wait per step), to price that wait;
- `knn`: the torch kNN at a 1M bank for 256 queries, split into its matmul and its top-k (one
  `torch.topk` against `harness.neighbours.row_topk`'s two passes, same values), and whole at three
  query-chunk sizes (exact in every case: only the chunking changes);
- `profile`: torch.profiler's top kernels over 10 `dann` steps, with CPU and CUDA time per step;
- `compile`: the `dann` step with its forward and losses under `torch.compile` (CUDA graphs on
  CUDA) against the eager step and the bare backbone: does graph capture close the gap?

A diagnostic for bench/RESULTS.md, not a goal row of `bench/gpu.sh`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from bench.gpu_step import (
    bare_backbone_rate,
    dann_method,
    device_and_precision,
    sync,
    synthetic_domain,
    time_steps,
)


def emit(**row: object) -> None:
    print(json.dumps(row), flush=True)


def cudnn_ab(backbones: list[str], dev: torch.device, prec: str, n: int, batch: int, timing: tuple) -> None:
    src = synthetic_domain(n, 64, dev, labels=True, seed=1)
    tgt = synthetic_domain(n, 64, dev, labels=False, seed=2)
    for bb in backbones:
        for bench_on in (False, True, False):
            torch.backends.cudnn.benchmark = bench_on
            _, step = dann_method(bb, src, tgt, batch, 100_000, dev, prec)
            per_step, _ = time_steps(step, dev, *timing)
            bare = bare_backbone_rate(bb, batch, 64, dev, prec, *timing)
            emit(probe="cudnn", backbone=bb, benchmark=bench_on, harness_img_s=2 * batch / per_step,
                 bare_img_s=bare, ratio=2 * batch / per_step / bare)
        torch.backends.cudnn.benchmark = False
        for late in (False, True, False):
            _, step = dann_method(bb, src, tgt, batch, 100_000, dev, prec, read_late=late)
            per_step, _ = time_steps(step, dev, *timing)
            emit(probe="sync", backbone=bb, logs_read="a step late" if late else "at once",
                 harness_img_s=2 * batch / per_step)


def knn_ab(dev: torch.device, bank_n: int, queries: int, timing: tuple) -> None:
    import harness.neighbours as nb

    g = torch.Generator(device=dev).manual_seed(0)
    bank = F.normalize(torch.randn(bank_n, 128, device=dev, generator=g), dim=1)
    q = F.normalize(torch.randn(queries, 128, device=dev, generator=g), dim=1)
    scores = q @ bank.T
    mm, _ = time_steps(lambda: q @ bank.T, dev, *timing)
    tk, _ = time_steps(lambda: torch.topk(scores, 7, dim=1), dev, *timing)
    two, _ = time_steps(lambda: nb.row_topk(scores, 7), dev, *timing)
    same = bool(torch.equal(nb.row_topk(scores, 7)[0], torch.topk(scores, 7, dim=1).values))
    emit(probe="knn_parts", bank=bank_n, queries=queries, matmul_ms=1e3 * mm, topk_ms=1e3 * tk,
         two_pass_topk_ms=1e3 * two, same_values=same)
    ref = nb._torch_knn(q, bank, 7)[1]
    cap = "_TORCH_SCORE_ELEMS_CUDA" if dev.type == "cuda" else "_TORCH_SCORE_ELEMS"
    saved = getattr(nb, cap)
    try:
        for elems in (1 << 26, 1 << 28, 1 << 30):
            setattr(nb, cap, elems)
            s, _ = time_steps(lambda: nb._torch_knn(q, bank, 7), dev, *timing)
            same = bool(torch.equal(nb._torch_knn(q, bank, 7)[1], ref))
            emit(probe="knn_chunk", elems=elems, queries_per_chunk=max(1, elems // bank_n), ms=1e3 * s,
                 same_neighbours=same)
    finally:
        setattr(nb, cap, saved)


def profile(bb: str, dev: torch.device, prec: str, n: int, batch: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    src = synthetic_domain(n, 64, dev, labels=True, seed=1)
    tgt = synthetic_domain(n, 64, dev, labels=False, seed=2)
    _, step = dann_method(bb, src, tgt, batch, 100_000, dev, prec)
    for _ in range(5):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with prof(activities=acts) as p:
        for _ in range(10):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(f"# profile dann {bb}, 10 steps of {batch}+{batch}", flush=True)
    print(p.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60), flush=True)


def compile_ab(backbones: list[str], dev: torch.device, prec: str, n: int, batch: int, timing: tuple) -> None:
    """The `dann` step with its forward and losses (embed, head, discriminator through the gradient
    reversal, both losses) under `torch.compile` (reduce-overhead, i.e. CUDA graphs, on CUDA), the
    optimiser step, sampling and augmentation left eager, against the eager step and the bare
    backbone. A diagnostic of whether graph capture closes the gap; the harness does not compile."""
    from harness.api import scalars
    from methods._domain_loss import domain_bce, grl_lambda

    src = synthetic_domain(n, 64, dev, labels=True, seed=1)
    tgt = synthetic_domain(n, 64, dev, labels=False, seed=2)
    mode = "reduce-overhead" if dev.type == "cuda" else "default"
    for bb in backbones:
        eager_method, eager = dann_method(bb, src, tgt, batch, 100_000, dev, prec)
        method, step = dann_method(bb, src, tgt, batch, 100_000, dev, prec)

        def losses(xs: torch.Tensor, xt: torch.Tensor, cs: torch.Tensor, ct: torch.Tensor, ys: torch.Tensor,
                   m=method) -> torch.Tensor:
            z = m.model.embed(torch.cat([xs, xt]), torch.cat([cs, ct]))
            d = m.disc(m.grl(z.float())).float()
            return F.cross_entropy(m.model.head(z).float()[:len(xs)], ys) + domain_bce(d, len(xs))

        compiled = torch.compile(losses, mode=mode)

        def update(s, t, i: int, m=method, f=compiled):   # DANN's update, its losses compiled
            m.grl.update_weight(m.hp["lambda_max"] * grl_lambda(i / m.steps, m.hp["lambda_gamma"]))
            loss = f(s.images, t.images, s.catalog, t.catalog, s.labels)
            m.step(loss)
            return scalars(loss=loss)

        method.update = update
        start = [q.detach().clone() for q in method.parameters()]
        method.steps = eager_method.steps = 4   # a large reversal weight while checking, none timed
        t0 = time.perf_counter()
        for _ in range(3):   # compile (and record the graphs), the eager steps after
            step()
        sync(dev)
        first_s = time.perf_counter() - t0
        for _ in range(3):
            eager()
        # the compiled update against the eager one, both from the same start, discriminator included
        diff = sum(float((p - q).float().square().sum()) for p, q in zip(method.parameters(),
                                                                          eager_method.parameters()))
        moved = sum(float((q - s0).float().square().sum()) for q, s0 in zip(eager_method.parameters(), start))
        method.steps = eager_method.steps = 100_000
        compiled_s, _ = time_steps(step, dev, *timing)
        eager_s, _ = time_steps(eager, dev, *timing)
        bare = bare_backbone_rate(bb, batch, 64, dev, prec, *timing)
        rate = 2 * batch / compiled_s
        counters = torch._dynamo.utils.counters
        emit(probe="compile", backbone=bb, mode=mode, compile_s=first_s, eager_img_s=2 * batch / eager_s,
             compiled_img_s=rate, bare_img_s=bare, compiled_over_bare=rate / bare,
             update_rel_diff_after_3_steps=(diff / max(moved, 1e-30)) ** 0.5,
             cudagraph_skips=sum(counters["inductor"].get(k, 0) for k in counters["inductor"] if "skip" in k),
             graphs_compiled=counters["stats"]["unique_graphs"])   # so far: one a backbone, unless recompiled


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="small,resnet18")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check of the code paths)")
    ap.add_argument("--probes", default="all",
                    help="comma list of cudnn, knn, profile, compile (default: all)")
    a = ap.parse_args(argv)
    dev, prec = device_and_precision(a.device)
    backbones = a.backbones.split(",")
    if a.smoke:
        n, batch, bank, queries, timing = 32, 8, 5000, 8, (0, 0.0, 2, 2)
    else:
        n, batch, bank, queries, timing = 4096, 256, 1_000_000, 256, (5, 1.5, 10, 300)
    emit(probe="env", device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
         torch=torch.__version__, precision=prec)
    for name, fn in (("cudnn", lambda: cudnn_ab(backbones, dev, prec, n, batch, timing)),
                     ("knn", lambda: knn_ab(dev, bank, queries, timing)),
                     ("profile", lambda: profile(backbones[0], dev, prec, n, batch)),
                     ("compile", lambda: compile_ab(backbones, dev, prec, n, batch, timing))):
        if a.probes != "all" and name not in a.probes.split(","):
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one probe's failure must not cost the others
            print(f"# {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
