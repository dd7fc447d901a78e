"""Training-step throughput vs a DataLoader-fed fp32 loop, same model and data, same run.

Run with `make bench`. Reports images/s of both and their ratio in extra_info (no timed asserts:
the numbers are for reading, and bench/RESULTS.md records them).
"""

from __future__ import annotations

import pytest
import torch

from bench.train_throughput import dataloader_steps, harness_steps, synthetic
from harness.training import resolve_precision


@pytest.mark.parametrize("backbone", ["small", "resnet18"])
def test_train_step_throughput(benchmark, backbone: str) -> None:
    dev = torch.device("cpu")
    data = synthetic(2048)
    steps = 10 if backbone == "small" else 3
    batch = 128 if backbone == "small" else 64
    precision = resolve_precision(dev)
    base = dataloader_steps(backbone, batch, steps, dev, 2, data)
    ours = benchmark.pedantic(harness_steps, args=(backbone, batch, steps, dev, precision, data), rounds=1,
                              iterations=1)
    ratio = ours / base
    benchmark.extra_info.update(dataloader_img_s=base, harness_img_s=ours, ratio=ratio, precision=precision)
    print(f"\n{backbone}: harness {ours:.0f} img/s ({precision}) vs DataLoader fp32 {base:.0f} img/s "
          f"-> {ratio:.2f}x")
    assert ours > 0 and base > 0
