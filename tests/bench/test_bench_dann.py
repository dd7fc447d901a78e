"""Harness DANN (method + device-resident loop) vs stock pytorch-adapt DANN (adapter + DataLoader).

Same smoke data, same cached source lens finder, same batch size and steps. Reports both
images/s, their ratio and both hard-test AUROCs in extra_info; asserts only that the AUROCs are
numbers in [0, 1] (no timed asserts: the numbers are for reading).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

from bench.dann_vs_stock import compare, pack, unpack


def test_pack_round_trip() -> None:
    x, c = torch.randn(5, 3, 8, 8), torch.randn(5, 11)    # 11 features > width 8: two extra rows
    p = pack(x, c)
    assert p.shape == (5, 3, 10, 8)
    xi, ci = unpack(p, 8, 11)
    assert torch.equal(xi, x) and torch.equal(ci, c)


def test_dann_vs_stock(benchmark, smoke_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    if (smoke_root / "cache").is_dir():                   # reuse the session's SSL / source stages
        shutil.copytree(smoke_root / "cache", store / "cache")
    r = benchmark.pedantic(compare, kwargs={"preset": "smoke", "steps": 4, "seed": 0, "store": store,
                                            "datasets_dir": smoke_root / "ds", "device": "cpu", "workers": 0},
                           rounds=1, iterations=1)
    benchmark.extra_info.update({k: r[k] for k in (
        "harness_img_s", "stock_img_s", "speed_ratio", "harness_auroc", "stock_auroc",
        "harness_auroc_low", "harness_auroc_high", "stock_auroc_low", "stock_auroc_high",
        "harness_precision", "steps")})
    print(f"\nsmoke DANN: harness {r['harness_img_s']:.0f} img/s ({r['harness_precision']}) AUROC "
          f"{r['harness_auroc']:.3f} vs stock {r['stock_img_s']:.0f} img/s AUROC {r['stock_auroc']:.3f} "
          f"-> {r['speed_ratio']:.2f}x")
    for k in ("harness_auroc", "stock_auroc"):
        assert isinstance(r[k], float) and math.isfinite(r[k]) and 0.0 <= r[k] <= 1.0, (k, r[k])
