"""`score` throughput: `harness.score.score_set` on a synthetic image set vs a bare forward loop.

Run with `pytest tests/bench --benchmark-enable -s` for numbers (`bench/score_throughput.py` is the
command line; bench/gpu.sh runs it on a GPU against the goal of >= 1M cutouts/min). Under the default
`--benchmark-disable` this is a quick smoke run on a small set. The ratio (score_set over the bare
forward) goes to `benchmark.extra_info` and is never asserted (timings are machine noise); what is
asserted is that the scores are sane: one per cutout, in order, finite, in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.score_throughput import measure


def test_bench_score_throughput(benchmark, tmp_path: Path) -> None:
    # n is not a multiple of the chunk or the batch, so the last partial chunk and batch are scored too
    n, batch, chunk = 300 if benchmark.disabled else 4096, 64, 128
    kwargs = {"backbone": "tiny", "n": n, "batch": batch, "device": "cpu", "chunk": chunk, "tmp": tmp_path}
    r, scores = benchmark.pedantic(measure, kwargs=kwargs, rounds=1, iterations=1)
    benchmark.extra_info.update({k: r[k] for k in ("score_per_min", "baseline_per_min", "ratio", "n", "batch",
                                                   "precision", "backbone")})
    print(f"\nscore_set {r['score_per_min']:,.0f} cutouts/min vs bare forward "
          f"{r['baseline_per_min']:,.0f}/min -> ratio {r['ratio']:.2f} "
          f"({r['backbone']}, n={n}, batch {batch}, {r['precision']})")
    assert len(scores) == n
    assert scores["id"].tolist() == [f"syn{i}" for i in range(n)]
    s = scores["score"].to_numpy()
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert s.std() > 0                               # distinct stamps and catalogs get distinct scores
    assert r["score_per_min"] > 0 and r["baseline_per_min"] > 0 and r["ratio"] > 0
    assert not any(tmp_path.iterdir())               # the temporary image set is gone
