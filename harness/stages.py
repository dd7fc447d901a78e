"""The SSL and source stages and their cache.

This module owns the two shared stages every run starts from: the SimCLR encoder and the easy-set
lens finder built on it (or, where the task's `source_init` is "scratch", trained from scratch; see
`stage_start`). The encoder of the baselines sees easy-train images only, so `source_only`
has seen no hard image at all; an encoder that also saw the hard pool (never the hard test split)
is self-supervised adaptation and starts the `ssl_joint` method instead.
Each is cached in `<cache>/<stage>-<key>/`, keyed by a hash of what it saw (the easy set alone for
the easy-only stages, so every target card of a suite shares them), the
stage's config, the seed and the precision, so `run --method dann` after `run --method
source_only` reuses both. Cache folders are written through `harness.fs.atomic_dir`, so a crash
never leaves a half-written one. It also builds fresh lens finders (`new_finder`, `ssl_finder`)
for methods that start from the SSL encoder, and seeds every RNG a stage draws from.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from harness.config import Preset, SourceConfig, SSLConfig, stable_hash
from harness.domains import Prepared
from harness.errors import BadInput
from harness.fs import atomic_dir, locked, verified_or_removed, write_checksums
from harness.models import LensFinder
from harness.ssl import linear_probe_auroc, train_ssl
from harness.training import Augment, Runtime, train_classifier


def cache_dir(cache: Path, stage: str, key: str) -> Path:
    """The folder of one cached stage under the store's cache folder."""
    return Path(cache) / f"{stage}-{key}"


def load_cached(path: Path, what: str) -> dict:
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable cache is the same user-facing problem
        raise BadInput(f"corrupt cache {path} ({what}: {type(e).__name__}); "
                       "delete the folder to rebuild it") from None


def save_cached(path: Path, state: dict) -> None:
    """Replace the cache folder `path` by one holding `state.pt`, atomically."""
    with atomic_dir(path, overwrite=True) as tmp:
        torch.save(state, tmp / "state.pt")
        write_checksums(tmp)


def seed_all(seed: int, device: torch.device) -> torch.Generator:
    """Seed torch's and numpy's global RNGs; return a device generator seeded the same way."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def stage_ssl(p: Prepared, seed: int, cfg: SSLConfig, backbone: str, cache: Path, rt: Runtime,
              with_pool: bool = False) -> tuple[str, dict]:
    """SimCLR encoder on easy train (+ the hard pool when `with_pool`); cached.

    Returns (key, state with the linear-probe AUROC on easy val)."""
    seen = "easy+pool" if with_pool else "easy"
    data = p.fingerprint if with_pool else p.easy_images_fingerprint   # easy-only: shared across targets
    key = stable_hash("ssl", data, cfg, backbone, seed, rt.precision, seen)
    path = cache_dir(cache, "ssl", key)
    with locked(path):   # a second process building the same encoder waits, then reuses it
        return key, _ssl_state(p, seed, cfg, backbone, path, rt, with_pool)


def _ssl_state(p: Prepared, seed: int, cfg: SSLConfig, backbone: str, path: Path, rt: Runtime,
               with_pool: bool) -> dict:
    if verified_or_removed(path, "SSL encoder", rt.log):
        rt.log(f"ssl: reusing cached encoder {path.name}")
        return load_cached(path, "SSL encoder")
    if not cfg.enabled:
        return {"backbone": None, "probe_auroc": float("nan")}
    g = seed_all(seed, rt.device)
    # never the hard test split; the hard pool only for the self-supervised adaptation method
    unlabelled = torch.cat([p.source.images, p.pool.images]) if with_pool else p.source.images
    t0 = time.perf_counter()
    enc = train_ssl(unlabelled, cfg, backbone, rt.device, rt.autocast, g, quiet=rt.quiet)
    probe = linear_probe_auroc(enc, p.source.images, p.source.labels.cpu().numpy(),
                               p.source_val.images, p.source_val.labels.cpu().numpy(), rt.autocast)
    state = {"backbone": {k: v.cpu() for k, v in enc.state_dict().items()}, "probe_auroc": probe,
             "seconds": time.perf_counter() - t0}
    save_cached(path, state)
    rt.log(f"ssl: trained encoder {path.name} in {state['seconds']:.0f}s; "
           f"linear probe AUROC (easy val) {probe:.3f}")
    return state


def new_finder(p: Prepared, cfg: SourceConfig, num_classes: int, device: torch.device) -> LensFinder:
    """A fresh lens finder for these domains, its catalog scaler fitted on the easy train split."""
    m = LensFinder(cfg.backbone, p.source.images.shape[1], len(p.columns), num_classes,
                   use_catalog=cfg.use_catalog, head=cfg.head)
    m.fit_catalog_scaler(p.source.catalog.cpu())
    return m.to(device).to(memory_format=torch.channels_last)


def ssl_finder(p: Prepared, ssl_state: dict, cfg: SourceConfig, num_classes: int, device: torch.device
               ) -> LensFinder:
    """A fresh lens finder whose image branch starts from the SSL encoder (when one was trained)."""
    m = new_finder(p, cfg, num_classes, device)
    if ssl_state.get("backbone") is not None:
        m.backbone.load_state_dict(ssl_state["backbone"])
    return m


def stage_source(p: Prepared, seed: int, ssl_key: str, ssl_state: dict, cfg: SourceConfig, cache: Path,
                 rt: Runtime) -> tuple[str, LensFinder]:
    """The easy-set lens finder (image branch from the SSL encoder); cached."""
    init_key = ssl_key if cfg.init == "ssl" else "scratch"
    # the source sees easy data only (a joint SSL key already names the pool it saw)
    key = stable_hash("source", p.source_fingerprint, init_key, cfg, seed, rt.precision)
    path = cache_dir(cache, "source", key)
    with locked(path):   # a second process training the same source model waits, then reuses it
        return key, _source_model(p, seed, ssl_state, cfg, path, rt)


def stage_start(p: Prepared, seed: int, pr: Preset, cache: Path, rt: Runtime, with_pool: bool = False
                ) -> tuple[str, dict, str, LensFinder]:
    """The SSL stage and the easy-set finder on it: (ssl key, ssl state, source key, finder).

    The joint finder (`with_pool`) always starts from its encoder, whatever `pr.source.init` says: that
    encoder, which saw the hard pool, is the whole of `ssl_joint`. A task whose source trains from
    scratch (substructure) still gets an `ssl_joint` distinct from its baseline."""
    ssl_key, ssl_state = stage_ssl(p, seed, pr.ssl, pr.source.backbone, cache, rt, with_pool=with_pool)
    cfg = dataclasses.replace(pr.source, init="ssl") if with_pool else pr.source
    source_key, model = stage_source(p, seed, ssl_key, ssl_state, cfg, cache, rt)
    return ssl_key, ssl_state, source_key, model


def _source_model(p: Prepared, seed: int, ssl_state: dict, cfg: SourceConfig, path: Path, rt: Runtime
                  ) -> LensFinder:
    num_classes = p.num_classes
    if verified_or_removed(path, "source model", rt.log):
        rt.log(f"source: reusing cached lens finder {path.name}")
        m = new_finder(p, cfg, num_classes, rt.device)
        try:
            m.load_state_dict(load_cached(path, "source model")["model"])
        except RuntimeError:
            raise BadInput(f"corrupt cache {path} (source model does not match the config); "
                           "delete it") from None
        return m.eval()
    g = seed_all(seed, rt.device)
    if cfg.init == "ssl":
        m = ssl_finder(p, ssl_state, cfg, num_classes, rt.device)
    else:
        m = new_finder(p, cfg, num_classes, rt.device)
    t0 = time.perf_counter()
    train_classifier(m, p.source, cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay, rt.device,
                     rt.autocast, Augment(generator=g), g, desc="source", quiet=rt.quiet)
    save_cached(path, {"model": {k: v.cpu() for k, v in m.state_dict().items()}})
    rt.log(f"source: trained lens finder {path.name} in {time.perf_counter() - t0:.0f}s")
    return m
