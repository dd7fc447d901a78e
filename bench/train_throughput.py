"""Training-step throughput: the harness's device-resident loop vs a DataLoader-fed loop.

Same model, same data, same batch size, measured in the same process so the ratio is fair on a
shared machine. The baseline is the stock PyTorch recipe: a TensorDataset of host arrays with
per-sample augmentation in `__getitem__`, a shuffling DataLoader, fp32. The harness loop keeps
the data on the device, draws batches by index, augments on the device, uses channels_last and
bf16 autocast where the hardware has it.

    python -m bench.train_throughput [--backbone small|resnet18] [--batch 128] [--steps 30] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from harness.api import DomainData, adamw
from harness.models import LensFinder
from harness.training import Augment, autocast_factory, resolve_device, resolve_precision


class _AugmentedArrays(Dataset):
    """Per-sample flips/rot90 on host arrays: what a DataLoader pipeline typically does."""

    def __init__(self, x: np.ndarray, c: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
        self.x, self.c, self.y = x, c, y
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = np.rot90(self.x[i], int(self.rng.integers(4)), axes=(-2, -1))
        if self.rng.random() < 0.5:
            img = img[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(self.c[i]), int(self.y[i])


def synthetic(n: int = 4096, size: int = 64, f: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3, size, size)).astype(np.float32),
            rng.normal(size=(n, f)).astype(np.float32), rng.integers(0, 2, n))


def harness_steps(backbone: str, batch: int, steps: int, device: torch.device, precision: str, data) -> float:
    """Images/s of the harness's device-resident supervised step."""
    x, c, y = data
    torch.manual_seed(0)
    model = LensFinder(backbone, 3, c.shape[1]).to(device).to(memory_format=torch.channels_last)
    opt = adamw(model.parameters(), device, 1e-3)
    dd = DomainData(torch.from_numpy(x).to(device).contiguous(memory_format=torch.channels_last),
                    torch.from_numpy(c).to(device), torch.from_numpy(y).to(device))
    g = torch.Generator(device=device).manual_seed(0)
    aug, autocast = Augment(generator=g), autocast_factory(device, precision)

    def step() -> None:
        b = dd.sample(batch, g)
        with autocast():
            loss = F.cross_entropy(model(aug(b.images), b.catalog), b.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _time(step, steps, batch, device)


def dataloader_steps(backbone: str, batch: int, steps: int, device: torch.device, workers: int,
                     data) -> float:
    """Images/s of the stock DataLoader-fed fp32 step on the same model and data."""
    x, c, y = data
    torch.manual_seed(0)
    model = LensFinder(backbone, 3, c.shape[1]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(_AugmentedArrays(x, c, y), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    it = iter(loader)

    def step() -> None:
        nonlocal it
        try:
            xb, cb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, cb, yb = next(it)
        xb, cb, yb = xb.to(device, non_blocking=True), cb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb, cb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _time(step, steps, batch, device)


def _time(step, steps: int, batch: int, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def compare(backbone: str = "small", batch: int = 128, steps: int = 20, device: str = "auto",
            workers: int = 2, n: int = 4096) -> dict[str, float]:
    dev = resolve_device(device)
    precision = resolve_precision(dev)
    data = synthetic(n)
    base = dataloader_steps(backbone, batch, steps, dev, workers, data)
    ours = harness_steps(backbone, batch, steps, dev, precision, data)
    return {"backbone": backbone, "device": str(dev), "precision": precision, "dataloader_img_s": base,
            "harness_img_s": ours, "ratio": ours / base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="small")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    r = compare(a.backbone, a.batch, a.steps, a.device, a.workers)
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
