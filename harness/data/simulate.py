"""Simulated sets: a card + seed -> a deterministic ImageSet of lenses and non-lenses, on disk.

This module owns the orchestration around the per-stamp renderer (`scene.Renderer`): one warmed-up
renderer per process, fixed-size chunks of images farmed out to a fork pool and placed back by
index, the measured observables joined to the truth columns into the catalog, the labels and the
card's splits, and the atomic, refuse-to-clobber write of the set. Every image draws from
`SeedSequence([seed, i])` and chunks are fixed, so the bytes depend only on (card, seed, n) and
never on `workers`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.data import imageset, splits
from harness.data.cards import Card
from harness.data.measure import measure
from harness.data.scene import Renderer
from harness.errors import BadInput

CHUNK = 16  # images per task; fixed so results do not depend on the number of workers

_WORKER: dict[str, Any] = {}


def renderer_for(data: dict):
    """The card's task decides the scene: lens/non-lens stamps, or substructure classes."""
    if data.get("task", "lens-finding") == "substructure":
        from harness.data.substructure import SubstructureRenderer

        return SubstructureRenderer(data)
    return Renderer(data)


def _init(data: dict) -> None:
    """Build (and warm up) the renderer once per process; reused for every chunk it renders."""
    r = _WORKER.get("r")
    if r is None or r.d != data:
        r = renderer_for(data)
        # done in the parent before forking, the workers inherit the warmed-up models instead of
        # each paying ~0.4 s
        r.warm_up()
        if getattr(r, "measures", True):
            measure(np.stack([r.render(0, i)[0] for i in range(2)]), r.bands, r.ps, r.zp)
        _WORKER["r"] = r


def _chunk(args: tuple[int, int, int]) -> tuple[int, np.ndarray, pd.DataFrame]:
    """Render images [start, stop) and measure their observables (fixed chunking => deterministic)."""
    seed, start, stop = args
    r = _WORKER["r"]
    imgs, rows = [], []
    for i in range(start, stop):
        im, t = r.render(seed, i)
        imgs.append(im)
        rows.append(t)
    arr = np.stack(imgs)
    cat = pd.DataFrame(rows)
    if getattr(r, "measures", True):   # substructure sets are image-only: no measured observables
        cat = pd.concat([measure(arr, r.bands, r.ps, r.zp), cat], axis=1)
    return start, arr, cat


def simulate_arrays(card: Card, n: int, seed: int, workers: int = 1,
                    progress: bool = True) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Images (n, C, H, W) float32 in calibrated sky-subtracted flux, catalog, int64 labels."""
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise BadInput(f"--n must be a positive integer, got {n}")
    if workers < 1:
        raise BadInput(f"--workers must be >= 1, got {workers}")
    data = card.data
    nb, npix = len(card.bands), int(data["instrument"]["npix"])
    tasks = [(int(seed), s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    images = np.empty((n, nb, npix, npix), dtype=np.float32)
    cats: list[pd.DataFrame] = [pd.DataFrame()] * len(tasks)
    bar = tqdm(total=n, unit="img", desc=f"simulate {card.name}", disable=not progress)
    workers = min(int(workers), len(tasks))
    try:
        _init(data)
        if workers == 1:
            results = map(_chunk, tasks)
            pool = None
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            pool = ctx.Pool(workers, initializer=_init, initargs=(data,))
            results = pool.imap_unordered(_chunk, tasks)  # placed by `start`: order is irrelevant
        for start, arr, cat in results:
            images[start:start + len(arr)] = arr
            cats[start // CHUNK] = cat
            bar.update(len(arr))
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        bar.close()
        if workers > 1 and pool is not None:
            pool.terminate()
    catalog = pd.concat(cats, ignore_index=True)
    catalog.insert(0, "id", [f"{card.name}-{seed}-{i:06d}" for i in range(n)])
    column = "truth_class" if card.task == "substructure" else "truth_is_lens"
    labels = catalog[column].to_numpy().astype(np.int64)
    return images, catalog, labels


def _same_set(out: Path, card: Card, n: int, seed: int) -> bool:
    """True when `out` already holds the set this (card, n, seed) generates."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("fingerprint") == card.fingerprint and meta.get("n") == n and meta.get("seed") == seed


def _check_writable(out: Path, overwrite: bool) -> None:
    """Fail before simulating (which may take minutes) if `out` cannot be written."""
    if out.exists() and not overwrite:
        raise BadInput(f"{out}: already exists and holds a different set (remove it, choose another --out, "
                       "or pass --overwrite)")
    p = out.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise BadInput(f"{out}: cannot write there (no write permission in {p})")


def generate(card: Card, n: int, seed: int, workers: int = 1, out: Path | None = None, progress: bool = True,
             datasets_dir: Path = Path("datasets"), overwrite: bool = False) -> Path:
    """Simulate and write an ImageSet with splits and meta; returns the set folder."""
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise BadInput(f"--n must be a positive integer, got {n}")
    out = Path(out) if out is not None else Path(datasets_dir) / f"{card.name}-{seed}"
    # Generation is deterministic per (card, n, seed): re-generating the same set over itself loses
    # nothing (and re-proves determinism); a different set is never silently replaced.
    overwrite = overwrite or _same_set(out, card, int(n), int(seed))
    _check_writable(out, overwrite)
    images, catalog, labels = simulate_arrays(card, n, seed, workers=workers, progress=progress)
    sp = card.data["splits"]
    if "labelled_frac" in sp:
        idx = splits.hard_splits(labels, float(sp["labelled_frac"]), float(sp["test_frac"]), seed)
    else:
        idx = splits.train_val(labels, float(sp["val_frac"]), seed)
    ins = card.data["instrument"]
    meta = {"name": out.name, "kind": card.task, "domain": card.name, "bands": card.bands,
            "pixel_scale": float(ins["pixel_scale"]), "fingerprint": card.fingerprint, "seed": int(seed),
            "n": int(n), "classes": card.classes, "shift": card.shift}
    if "zeropoint" in ins:
        meta["zeropoint"] = float(ins["zeropoint"])
    iset = imageset.ImageSet(images=images, catalog=catalog, labels=labels, splits=idx, meta=meta)
    return imageset.save(iset, out, card_text=card.text, overwrite=overwrite)
