"""DANN two ways on the same data and start model: the harness's method and loop vs stock pytorch-adapt.

(a) harness: `harness.pipeline.run_method("dann", ...)`: our `methods/dann.py` driven by the
    harness-owned loop (device-resident data, on-device augmentation, bf16 autocast where the
    hardware has it, GRL ramp). Its hard-test AUROC is read back from the store.
(b) stock: `pytorch_adapt.adapters.DANN` with `Models`/`Optimizers` containers, fed by a shuffling
    torch DataLoader over `CombinedSourceAndTargetDataset(SourceDataset, TargetDataset)` of CPU
    tensors, fp32, stepped the way pytorch-adapt's README does it without a framework:
    `batch_to_device(batch)` then `adapter.training_step(batch)`.

Both start from the preset's cached source lens finder (`stage_start`), use the
easy train split as source and the hard pool (no labels) as target, the same batch size per
domain, the same number of steps, the same optimiser settings (momentum SGD with the `dann` recipe's
lr, momentum, Nesterov flag and weight decay, and its discriminator width) and pytorch-adapt's
`Discriminator`. The hard test split is touched only once training is over, by
`harness.metrics.auroc_ci` on both models (the harness's own evaluation does the same for (a),
with the same n_boot and seed).

How the lens finder maps onto stock G/C/D
- G is the lens finder's fused image+catalog embedding (`LensFinder.embed`), C its linear head,
  D `pytorch_adapt.models.Discriminator(dim, h=disc_hidden)`. G and C share no parameters.
- The stock hooks call `G(src_imgs)` with ONE tensor, and `batch_to_device` accepts only
  tensors per key, so the catalog rides along inside the image tensor: each sample becomes
  `(C, H + r, W)`, whose extra r = ceil(F / W) rows (channel 0, zero-padded) hold the F raw
  catalog features; G slices them back off. Overhead is r/H of the pixels (1/64 on the presets).

Where the stock recipe differs from ours (deliberately: that is what "stock" means)
- GRL weight is constant (`gradient_reversal_weight` = the method's `lambda_max`, pytorch-adapt's
  default 1.0) instead of Ganin's 0 -> lambda_max ramp.
- Loss = MeanWeighter mean of (src CE, src domain BCE, target domain BCE), i.e. (CE + 2 x domain)/3,
  where ours is CE + domain; G runs separately on the source and target batches (two
  BatchNorm batches) where ours runs once on the concatenation.
- Augmentation is per-sample rot90 + horizontal flip in `__getitem__` (host, torch RNG so
  DataLoader workers differ); ours adds small shifts on the device.
- fp32, contiguous (not channels_last) model, one SGD per container key at a constant LR (ours
  anneals with Ganin's schedule and gives the pretrained backbone 0.1x the rate).

Throughput counts training steps only (2 x batch images per step, the loader included, the first
step included, checkpoints and evaluation excluded). For (a) it is the `adapt()` loop's time
minus the time spent in its label-free checkpoints.

    python -m bench.dann_vs_stock [--preset smoke|demo] [--steps N] [--seed S] [--store DIR]
        [--datasets-dir DIR] [--device auto|cpu|cuda] [--workers W] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from harness import adapt as adapt_loop
from harness import pipeline
from harness.config import get_preset
from harness.domains import Prepared, prepare_data
from harness.metrics import auroc_ci
from harness.pipeline import Options, run_method
from harness.registry import get_method
from harness.stages import stage_start
from harness.store import Store
from harness.training import resolve_device


# ----------------------------------------------------------------------------- catalog packing
def pack(images: Tensor, catalog: Tensor) -> Tensor:
    """(B,C,H,W) + (B,F) -> (B,C,H+r,W): catalog in r = ceil(F/W) extra rows of channel 0."""
    b, c, h, w = images.shape
    f = catalog.shape[1]
    r = max(1, math.ceil(f / w))
    out = images.new_zeros(b, c, h + r, w)
    out[:, :, :h] = images
    out[:, 0, h:].view(b, r * w)[:, :f] = catalog.to(images.dtype)
    return out


def unpack(x: Tensor, h: int, f: int) -> tuple[Tensor, Tensor]:
    b, _, hr, w = x.shape
    cat = x[:, 0, h:].reshape(b, (hr - h) * w)[:, :f]
    return x[:, :, :h], cat


class PackedEmbedding(nn.Module):
    """Stock G: one packed tensor in, the lens finder's fused embedding out (head excluded)."""

    def __init__(self, finder: nn.Module, image_size: int, n_features: int) -> None:
        super().__init__()
        self.finder, self.h, self.f = finder, image_size, n_features

    def forward(self, x: Tensor) -> Tensor:
        images, catalog = unpack(x, self.h, self.f)
        return self.finder.embed(images, catalog)


class LensArrays(Dataset):
    """Host tensors; per-sample rot90/flip. Returns (packed, label) or packed (unlabelled)."""

    def __init__(self, images: Tensor, catalog: Tensor, labels: Tensor | None = None) -> None:
        self.x, self.c, self.y = images, catalog, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = torch.rot90(self.x[i], int(torch.randint(4, ())), dims=(-2, -1))
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        x = pack(img[None], self.c[i][None])[0]
        return x if self.y is None else (x, int(self.y[i]))


# ----------------------------------------------------------------------------- (b) stock DANN
def _host(t: Tensor) -> Tensor:
    return t.detach().cpu().float().contiguous()


def stock_dann(p: Prepared, source: nn.Module, hp: dict, steps: int, batch: int, seed: int,
               device: torch.device, workers: int = 2) -> tuple[float, float, np.ndarray]:
    """Train the stock adapter; returns (seconds of training steps, images/s, hard-test scores)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_adapt.adapters import DANN
        from pytorch_adapt.containers import Models, Optimizers
        from pytorch_adapt.datasets import CombinedSourceAndTargetDataset, SourceDataset, TargetDataset
        from pytorch_adapt.models import Discriminator
        from pytorch_adapt.utils.common_functions import batch_to_device

    torch.manual_seed(seed)
    np.random.seed(seed)
    h, f = int(p.source.images.shape[-2]), int(p.source.catalog.shape[1])
    finder = copy.deepcopy(source).to(device).to(memory_format=torch.contiguous_format).float()
    C = finder.head
    finder.head = nn.Identity()
    G = PackedEmbedding(finder, h, f)
    D = Discriminator(in_size=int(finder.dim), h=int(hp["disc_hidden"])).to(device)
    models = Models({"G": G, "C": C, "D": D})
    sgd = {"lr": hp["lr"], "momentum": hp["momentum"], "nesterov": hp["nesterov"],
           "weight_decay": hp["weight_decay"]}
    optimizers = Optimizers((torch.optim.SGD, sgd))
    adapter = DANN(models=models, optimizers=optimizers,
                   hook_kwargs={"gradient_reversal_weight": hp["lambda_max"]})

    data = CombinedSourceAndTargetDataset(
        SourceDataset(LensArrays(_host(p.source.images), _host(p.source.catalog), p.source.labels.cpu())),
        TargetDataset(LensArrays(_host(p.pool.images), _host(p.pool.catalog))))
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(seed))

    it = _forever(loader)
    adapter.models.train()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        losses = adapter.training_step(batch_to_device(next(it), device))
    _sync(device)
    seconds = time.perf_counter() - t0
    it.close()
    del it, loader
    total = losses["total_loss"]
    if not all(np.isfinite(float(v)) for v in total.values()):
        raise FloatingPointError(f"stock DANN diverged: {total}")

    # evaluation: hard test split, only now, fp32 through the adapter's own inference
    adapter.models.eval()
    scores = []
    with torch.no_grad():
        for b in p.test.iterate(2 * batch):
            x = pack(b.images.float().contiguous(), b.catalog)
            scores.append(adapter.inference(x)["logits"].float().softmax(1)[:, 1].cpu())
    return seconds, steps * 2 * batch / seconds, torch.cat(scores).numpy()


def _forever(loader: DataLoader) -> Iterator[dict]:
    """Reshuffled epochs back to back (steps may exceed one pass over the target pool)."""
    while True:
        yield from loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- (a) harness DANN
@contextlib.contextmanager
def _timed_adapt(record: dict) -> Iterator[None]:
    """Time the adapt loop and the checkpoints inside it (patched for the duration only)."""
    orig_adapt, orig_ck = pipeline.adapt, adapt_loop.checkpoint
    record.update(adapt_s=0.0, checkpoint_s=0.0)

    def ck(*a, **k):
        t = time.perf_counter()
        try:
            return orig_ck(*a, **k)
        finally:
            record["checkpoint_s"] += time.perf_counter() - t

    def adapt(method, ctx, *a, **k):
        _sync(ctx.device)
        t = time.perf_counter()
        try:
            return orig_adapt(method, ctx, *a, **k)
        finally:
            _sync(ctx.device)
            record["adapt_s"] += time.perf_counter() - t

    pipeline.adapt, adapt_loop.checkpoint = adapt, ck
    try:
        yield
    finally:
        pipeline.adapt, adapt_loop.checkpoint = orig_adapt, orig_ck


def _metric(store: Store, run_id: str, split: str, name: str) -> tuple[float, float, float]:
    with closing(sqlite3.connect(store.path)) as con:
        status, err = con.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)).fetchone()
        if status != "ok":
            raise RuntimeError(f"harness dann run {run_id} failed: {err}")
        row = con.execute("SELECT value, low, high FROM metrics WHERE run = ? AND split = ? AND name = ?",
                          (run_id, split, name)).fetchone()
    return tuple(float("nan") if v is None else float(v) for v in row)


# ----------------------------------------------------------------------------- comparison
def compare(preset: str = "smoke", steps: int | None = None, seed: int = 0,
            store: Path | str = "runs/dann_vs_stock", datasets_dir: Path | str = "datasets",
            device: str = "auto", workers: int = 2,
            quiet: bool = True) -> dict:
    """Run (a) and (b) on the same data, start model, batch size and steps; return the numbers."""
    pr = get_preset(preset)
    if steps is not None:
        pr = pr.replace("adapt", steps=int(steps))
    root = Path(store)
    root.mkdir(parents=True, exist_ok=True)
    st = Store(root / "harness.db")
    log = (lambda m: None) if quiet else (lambda m: print(m, flush=True))
    opts = Options(preset=pr, store=st, device=resolve_device(device), datasets_dir=Path(datasets_dir),
                   quiet=quiet, log=log)
    p = prepare_data(pr, opts.datasets_dir, opts.runtime)
    *_, source = stage_start(p, seed, pr, st.cache, opts.runtime)
    if source.num_classes != 2:
        raise SystemExit("dann_vs_stock: needs a binary (lens / non-lens) task")
    hp = {**get_method("dann").hparams, **opts.hp_overrides.get("dann", {})}
    bs, n = pr.adapt.batch_size, pr.adapt.steps

    # (a) harness method + loop
    rec: dict = {}
    with _timed_adapt(rec):
        run_id = run_method("dann", seed, p, opts)
    h_auc = _metric(st, run_id, "hard_test", "auroc")
    h_train_s = rec["adapt_s"] - rec["checkpoint_s"]

    # (b) stock pytorch-adapt adapter + DataLoader
    s_train_s, s_img_s, scores = stock_dann(p, source, hp, n, bs, seed, opts.device, workers)
    y = p.hard.labels[p.hard.split("test")]          # test labels read only here, after training
    s_auc = auroc_ci(y, scores, n_boot=pr.n_boot, seed=seed)

    h_img_s = n * 2 * bs / h_train_s
    return {
        "preset": pr.name, "seed": seed, "steps": n, "batch_per_domain": bs, "device": str(opts.device),
        "harness_precision": opts.precision, "stock_precision": "fp32", "workers": workers,
        "backbone": pr.source.backbone, "n_source": len(p.source), "n_pool": len(p.pool),
        "n_test": len(p.test),
        "harness_run": run_id,
        "harness_auroc": h_auc[0], "harness_auroc_low": h_auc[1], "harness_auroc_high": h_auc[2],
        "stock_auroc": s_auc[0], "stock_auroc_low": s_auc[1], "stock_auroc_high": s_auc[2],
        "harness_train_s": h_train_s, "stock_train_s": s_train_s,
        "harness_img_s": h_img_s, "stock_img_s": s_img_s, "speed_ratio": h_img_s / s_img_s,
    }


def table(r: dict) -> str:
    rows = [("harness dann (device loop)", r["harness_precision"], "harness"),
            ("stock pytorch-adapt DANN", r["stock_precision"], "stock")]
    title = (f"DANN vs stock · preset {r['preset']} · seed {r['seed']} · {r['steps']} steps x "
             f"{r['batch_per_domain']}+{r['batch_per_domain']} · {r['backbone']} · {r['device']} · "
             f"test n={r['n_test']}")
    lines = [title,
             f"{'loop':<28} {'precision':<9} {'hard-test AUROC [95% CI]':<26} {'train s':>8} {'images/s':>9}"]
    for label, prec, k in rows:
        auc = f"{r[k + '_auroc']:.3f} [{r[k + '_auroc_low']:.3f}, {r[k + '_auroc_high']:.3f}]"
        lines.append(f"{label:<28} {prec:<9} {auc:<26} {r[k + '_train_s']:>8.1f} {r[k + '_img_s']:>9.0f}")
    lines.append(f"speed ratio (harness / stock): {r['speed_ratio']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke", choices=["smoke", "demo", "full"])
    ap.add_argument("--steps", type=int, default=None, help="adapt steps (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, default=Path("runs/dann_vs_stock"),
                    help="store folder (harness.db and the stage cache live here)")
    ap.add_argument("--datasets-dir", type=Path, default=Path("datasets"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the stock loop")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--verbose", action="store_true", help="stage logs and progress bars")
    a = ap.parse_args(argv)
    r = compare(a.preset, a.steps, a.seed, a.store, a.datasets_dir, a.device, a.workers, quiet=not a.verbose)
    print(table(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
