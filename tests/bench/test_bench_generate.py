"""Simulator throughput (images/s) with 1 and 2 workers, and their ratio. No timed asserts.

Wall-clock images/s is what users feel, but on a shared 2-core box other load distorts it, so
CPU seconds per image (parent + workers) are recorded too: equal CPU cost per image means the
parallel path adds no overhead and the wall ratio is limited only by free cores.
"""

from __future__ import annotations

import resource
import time

import pytest

from harness.data.cards import load_card
from harness.data.simulate import simulate_arrays

N = 800  # images per round: large enough that pool start-up is a small share, as in real use
_RATE: dict[int, float] = {}


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@pytest.mark.parametrize("workers", [1, 2])
def test_bench_generate(benchmark, workers):
    card = load_card("hard")
    simulate_arrays(card, 16, seed=0, workers=1, progress=False)  # warm the in-process renderer
    rates, cpus = [], []

    def run():
        t, c = time.perf_counter(), _cpu()
        simulate_arrays(card, N, seed=0, workers=workers, progress=False)
        rates.append(N / (time.perf_counter() - t))
        cpus.append(1e3 * (_cpu() - c) / N)

    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    _RATE[workers] = max(rates)
    benchmark.extra_info["images_per_s"] = round(_RATE[workers], 1)
    benchmark.extra_info["cpu_ms_per_image"] = round(min(cpus), 3)
    print(f"\nworkers={workers}: {_RATE[workers]:.0f} images/s, {min(cpus):.2f} CPU ms/image")
    if workers == 2 and 1 in _RATE:
        ratio = _RATE[2] / _RATE[1]
        benchmark.extra_info["speedup_2_vs_1"] = round(ratio, 2)
        print(f"speed-up 2 workers vs 1: {ratio:.2f}x")
