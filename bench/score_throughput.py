"""`score` throughput: cutouts/min of `harness.score.score_set` vs a bare forward loop, same model, same run.

`score_set` is what `python -m harness score` does per image set: it reads the memory-mapped stamps a
chunk at a time, prepares them as in training (centre crop, per-stamp noise-scaled asinh, on the CPU),
builds the catalog features, moves each batch to the device and runs the model under the run's
autocast. The baseline is the model alone: `model(x, c)` over batches already on the device, the same
batch size, precision and eval mode. Their ratio says how much of the model's own speed the scoring
path keeps; the goal of the scale issue is >= 1M cutouts/min on one H200.

The image set is synthetic (noise stamps with a catalog of the run's feature columns), written with
`imageset.save` into a temporary folder and opened with `imageset.load` (memory-mapped), as `score`
opens a set. The model is a stored run's final weights (`--store DB --run ID`, or `--run auto`: the
first finished run in the store) or, without a store, a fresh lens finder of `--backbone` with the
simulator's seven catalog columns: speed does not depend on the weights.

    python -m bench.score_throughput [--backbone resnet18] [--n 32768] [--batch 512] [--device auto]
        [--chunk 4096] [--store DB --run ID|auto] [--tmp DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.data import imageset
from harness.models import LensFinder
from harness.score import load_model, score_set
from harness.store import Store
from harness.training import Runtime, resolve_device, resolve_precision

FEATURES = ["mag_g", "mag_r", "mag_i", "colour_gr", "colour_ri", "r_half_arcsec", "ellipticity"]


def synthetic_set(root: Path, n: int, bands: int, size: int, features: list[str], seed: int = 0,
                  block: int = 4096) -> imageset.ImageSet:
    """A valid lens-finding image set of `n` noise stamps, saved under `root` and reopened memory-mapped.

    Stamps repeat a block of `block` distinct ones (drawing n fresh stamps would cost more than scoring
    them); the per-stamp preparation does the same work either way."""
    rng = np.random.default_rng(seed)
    first = rng.standard_normal((min(n, block), bands, size, size), dtype=np.float32)
    images = np.resize(first, (n, bands, size, size)) if n > len(first) else first
    catalog = pd.DataFrame({"id": [f"syn{i}" for i in range(n)],
                            **{c: rng.standard_normal(n).astype(np.float32) for c in features}})
    s = imageset.ImageSet(images=images, catalog=catalog, labels=np.full(n, -1, dtype=np.int64),
                          meta={"name": "synthetic-score", "kind": "lens-finding", "pixel_scale": 0.168,
                                "bands": ["g", "r", "i"] if bands == 3 else [f"b{i}" for i in range(bands)]})
    return imageset.load(imageset.save(s, root / "set"))


def fresh_model(backbone: str, device: torch.device, features: list[str] = FEATURES,
                size: int = 64) -> tuple[LensFinder, dict]:
    """A lens finder as a catalog run of `backbone` builds it (random weights), and its `score` info."""
    torch.manual_seed(0)
    model = LensFinder(backbone, 3, len(features)).to(device).eval()
    info = {"features": list(features), "bands": 3, "size": size, "run": "fresh", "method": "none", "seed": 0,
            "code_version": "", "weights": "fresh weights", "task": "lens-finding", "fov": None}
    return model, info


def first_run(store: Path) -> str | None:
    """The first finished run of the store that `score` can use (None when there is none yet)."""
    if not Path(store).is_file():
        return None
    try:   # a store left by a killed run may lack the table or be mid-schema: then there is no run
        with closing(sqlite3.connect(store)) as con:
            row = con.execute("SELECT id FROM runs WHERE status = 'ok' AND task != 'ssl-real' "
                              "ORDER BY time LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


@torch.no_grad()
def baseline_seconds(model: LensFinder, info: dict, n: int, batch: int, rt: Runtime,
                     distinct: int = 8) -> float:
    """Seconds of `model(x, c)` for n images in `batch`-sized calls over pre-made device tensors (cycling
    through `distinct` batches), synchronised once at the end."""
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(batch, info["bands"], info["size"], info["size"], generator=g).to(rt.device)
          .contiguous(memory_format=torch.channels_last) for _ in range(distinct)]
    cs = [torch.randn(batch, len(info["features"]), generator=g).to(rt.device) for _ in range(distinct)]
    calls = -(-n // batch)
    with rt.autocast():
        model(xs[0], cs[0])     # warm-up (kernel selection, lazy module loading)
    _sync(rt.device)
    t0 = time.perf_counter()
    for i in range(calls):
        with rt.autocast():
            model(xs[i % distinct], cs[i % distinct])
    _sync(rt.device)
    return (time.perf_counter() - t0) * n / (calls * batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone: str = "resnet18", n: int = 32768, batch: int = 512, device: str = "auto",
            chunk: int = 4096, store: Path | None = None, run: str | None = None,
            tmp: Path | None = None) -> tuple[dict, pd.DataFrame]:
    """Score a synthetic set of n cutouts and time it against the bare forward loop; returns the
    numbers and the scores (one row per cutout) so a caller can check them."""
    dev = resolve_device(device)
    rt = Runtime(dev, resolve_precision(dev), quiet=True, log=lambda m: None)
    run_id = first_run(store) if store is not None and run == "auto" else run
    if store is not None and run_id:
        model, info = load_model(Store(store, create=False), run_id, dev)
        backbone = json.loads(_config(store, run_id))["preset"]["source"]["backbone"]
        info = {**info, "weights": f"run {run_id} ({info['method']}), final weights"}
    else:
        model, info = fresh_model(backbone, dev)
        if store is not None:
            info["weights"] = "fresh weights: no finished run in the store"
    with tempfile.TemporaryDirectory(prefix="score-bench-", dir=tmp) as d:
        s = synthetic_set(Path(d), n, info["bands"], info["size"], info["features"])
        warm = imageset.ImageSet(images=s.images[:batch], catalog=s.catalog.iloc[:batch],
                                 labels=s.labels[:batch], meta=s.meta, root=s.root)
        score_set(model, warm, info, rt, chunk, batch)      # warm-up: kernels, page cache of the first block
        _sync(dev)
        t0 = time.perf_counter()
        scores = score_set(model, s, info, rt, chunk, batch)
        _sync(dev)
        score_s = time.perf_counter() - t0
    base_s = baseline_seconds(model, info, n, batch, rt)
    env = {"torch": torch.__version__, "cuda": dev.type == "cuda",
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none (CPU)"}
    r = {"stage": "score", **env, "device": str(dev), "backbone": backbone, "weights": info["weights"],
         "n": n, "batch": batch, "chunk": chunk, "size": info["size"], "precision": rt.precision,
         "score_s": score_s, "baseline_s": base_s, "score_per_min": 60 * n / score_s,
         "baseline_per_min": 60 * n / base_s, "ratio": base_s / score_s}
    return r, scores


def _config(store: Path, run_id: str) -> str:
    with closing(sqlite3.connect(store)) as con:
        return con.execute("SELECT config FROM runs WHERE id = ?", (run_id,)).fetchone()[0]


def main(argv: list[str] | None = None) -> None:
    """Print the two rates and their ratio (and write them as JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="resnet18", help="for fresh weights (without --store)")
    ap.add_argument("--n", type=int, default=32768, help="cutouts to score")
    ap.add_argument("--batch", type=int, default=512, help="model batch of score_set and of the baseline")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--chunk", type=int, default=4096, help="images score_set reads and prepares at a time")
    ap.add_argument("--store", type=Path, default=None, help="a results store holding the run to score with")
    ap.add_argument("--run", default=None, help="run id in --store, or 'auto' (the first finished run)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary image set")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    a = ap.parse_args(argv)
    r, scores = measure(a.backbone, a.n, a.batch, a.device, a.chunk, a.store, a.run, a.tmp)
    ok = len(scores) == a.n and bool(np.isfinite(scores["score"]).all())
    print(f"score_set: {r['score_per_min']:,.0f} cutouts/min ({r['n']:,} in {r['score_s']:.2f} s) vs bare "
          f"forward {r['baseline_per_min']:,.0f}/min -> ratio {r['ratio']:.3f} · {r['backbone']} "
          f"({r['weights']}), batch {r['batch']}, {r['precision']}, {r['device']}; "
          f"scores finite and one per cutout: {ok}")
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
