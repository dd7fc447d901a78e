"""Task `ssl-real` (DeepLense Specific Test VI): how much a self-supervised encoder helps on a small
labelled lens / non-lens set.

Protocol, per seed: SimCLR pretraining on every image of the set WITHOUT labels (`pretrain` never
receives them, and a test shuffles the labels and checks the weights are bitwise identical), then a
stratified 5-fold split shared by three arms: a logistic-regression probe on the frozen features,
full fine-tuning of the pretrained encoder, and the same network trained from scratch (the baseline).
Each arm is one run in the store: its headline AUROC is the mean over folds with a t-interval over
folds; its predictions are the out-of-fold scores of every image, so the report pairs each arm
with from-scratch on the same images and seeds (paired bootstrap, as for every other task).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from harness.api import DomainData
from harness.config import stable_hash
from harness.data import imageset
from harness.domains import check_task, declared_task, load_domain, model_input, set_identity
from harness.errors import BadInput
from harness.fs import atomic_dir, locked, verified_or_removed
from harness.metrics import auroc, auroc_ci
from harness.models import LensFinder, make_backbone
from harness.ssl import embed, train_ssl
from harness.stages import cache_dir, load_cached, save_cached, seed_all
from harness.store import Metric, RunRecord
from harness.training import Augment, train_classifier

ARMS = {"linear_probe": "method", "finetune": "method", "scratch": "baseline"}
FOLDS = 5


def load_set(opts) -> tuple[imageset.ImageSet, torch.Tensor, np.ndarray]:
    """The labelled set on the device as model input, and its labels; refused if 5 folds can't split it."""
    d, rt = opts.preset.data, opts.runtime
    name = (d.hard, declared_task(d.hard))
    task = check_task(name, name, "ssl-real")
    s = load_domain(d.hard, d.n_hard, d.seed + 1, opts.datasets_dir, rt, d.workers)
    y = np.asarray(s.labels)
    if (y < 0).any() or set(np.unique(y)) != {0, 1}:
        raise BadInput(f"{s.root or s.name}: ssl-real needs every image labelled lens (1) or non-lens (0)")
    if np.bincount(y).min() < FOLDS:
        raise BadInput(f"{s.root or s.name}: {np.bincount(y).min()} images in the smaller class; "
                       f"a stratified {FOLDS}-fold split needs at least {FOLDS}")
    x = model_input(s, task, d.image_size, task.fov)
    images = torch.from_numpy(x).to(rt.device).contiguous(memory_format=torch.channels_last)
    return s, images, y


def pretrain(images: torch.Tensor, opts, seed: int, key: str) -> dict:
    """SimCLR on the unlabelled images (no label is passed in); cached by what it saw."""
    rt, pr = opts.runtime, opts.preset
    path = cache_dir(opts.store.cache, "ssl", key)
    with locked(path):
        if verified_or_removed(path, "SSL encoder", rt.log):
            return load_cached(path, "SSL encoder")
        g = seed_all(seed, rt.device)
        enc = train_ssl(images, pr.ssl, pr.source.backbone, rt.device, rt.autocast, g, quiet=rt.quiet)
        state = {"backbone": {k: v.cpu() for k, v in enc.state_dict().items()}}
        save_cached(path, state)
    return state


def _finder(opts, ssl_state: dict | None, channels: int) -> LensFinder:
    src = opts.preset.source
    m = LensFinder(src.backbone, channels, 0, 2, use_catalog=False, head=src.head)
    if ssl_state is not None:
        m.backbone.load_state_dict(ssl_state["backbone"])
    return m.to(opts.runtime.device).to(memory_format=torch.channels_last)


def _scores(model: LensFinder, x: torch.Tensor, autocast) -> np.ndarray:
    model.eval()
    with torch.no_grad(), autocast():
        return model(x, x.new_zeros((x.shape[0], 0))).float().softmax(1)[:, 1].cpu().numpy()


def cross_validate(images: torch.Tensor, y: np.ndarray, ssl_state: dict, opts, seed: int
                   ) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Out-of-fold scores of every image and per-fold AUROCs for each arm, on one set of folds."""
    rt, src = opts.runtime, opts.preset.source
    enc = make_backbone(src.backbone, images.shape[1]).to(rt.device)
    enc.load_state_dict(ssl_state["backbone"])
    feats = embed(enc, images, rt.autocast)
    out = {a: (np.zeros(len(y)), []) for a in ARMS}
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    for k, (tr, te) in enumerate(folds):
        sc = StandardScaler().fit(feats[tr])
        clf = LogisticRegression(max_iter=2000).fit(sc.transform(feats[tr]), y[tr])
        got = {"linear_probe": clf.predict_proba(sc.transform(feats[te]))[:, 1]}
        for arm, init in (("finetune", ssl_state), ("scratch", None)):
            g = seed_all(int(stable_hash(seed, k, arm, n=8), 16) % 2**31, rt.device)
            m = _finder(opts, init, images.shape[1])
            ti, lab = torch.as_tensor(tr, device=rt.device), torch.as_tensor(y[tr], device=rt.device)
            data = DomainData(images[ti], images.new_zeros((len(tr), 0)), lab, "train-fold")
            train_classifier(m, data, src.steps, src.batch_size, src.lr, src.weight_decay, rt.device,
                             rt.autocast, Augment(generator=g), g, desc=f"{arm} fold {k + 1}", quiet=rt.quiet)
            got[arm] = _scores(m, images[torch.as_tensor(te, device=rt.device)], rt.autocast)
        for arm, s in got.items():
            out[arm][0][te] = s
            out[arm][1].append(auroc(y[te], s))
    return out


def fold_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean over folds and its t-interval, clipped to [0, 1] (folds share training data, so the interval
    is optimistic, as the report's legend says)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, max(0.0, m - half), min(1.0, m + half)


def encoder_key(s: imageset.ImageSet, pr, seed: int, precision: str) -> str:
    """The SSL encoder's cache key: the set's whole identity (two draws of one card share a fingerprint
    but not a seed or split indices), the input size, the SSL recipe, backbone, seed and precision."""
    return stable_hash("ssl-real", set_identity(s), pr.data.image_size, pr.ssl, pr.source.backbone, seed,
                       precision)


def run_ssl_real(seeds: list[int], opts, skip_done: bool = False) -> list[str]:
    """Every seed: pretrain, cross-validate the three arms, record one run per arm."""
    from harness.pipeline import _device_name, code_version

    s, images, y = load_set(opts)
    ids = []
    for seed in seeds:
        pr, t0 = opts.preset, time.perf_counter()
        ident = encoder_key(s, pr, seed, opts.precision)
        base = {"preset": pr.to_dict(), "folds": FOLDS, "precision": opts.precision,
                "data": {"hard": pr.data.hard, "hard_fingerprint": s.fingerprint, "features": []}}
        keys = {a: stable_hash("run", a, seed, {**base, "method": a}) for a in ARMS}
        if skip_done and all(opts.store.done(k) for k in keys.values()):
            ids += [opts.store.done(k) for k in keys.values()]
            continue
        state = pretrain(images, opts, seed, ident)
        res = cross_validate(images, y, state, opts, seed)
        secs = (time.perf_counter() - t0) / len(ARMS)
        for arm, (oof, per_fold) in res.items():
            rec = RunRecord(task="ssl-real", method=arm, seed=seed, preset=pr.name, fingerprint=s.fingerprint,
                            config={**base, "method": arm}, code_version=code_version(),
                            device=_device_name(opts.device), run_key=keys[arm],
                            start="scratch" if arm == "scratch" else "ssl", uses_target_labels=True,
                            role=ARMS[arm], seconds=secs)
            m, lo, hi = fold_interval(per_fold)
            metrics = [Metric("hard_test", "auroc", m, lo, hi),
                       Metric("hard_test", "auroc_pooled", *auroc_ci(y, oof, seed=seed, n_boot=pr.n_boot))]
            metrics += [Metric("hard_test", f"auroc_fold{k + 1}", v) for k, v in enumerate(per_fold)]
            preds = pd.DataFrame({"split": "hard_test", "index": np.arange(len(y)),
                                  "id": s.catalog["id"].astype(str).to_numpy(), "label": y, "score": oof})
            with atomic_dir(opts.store.run_dir(rec.id)) as tmp:
                preds.to_parquet(Path(tmp) / "predictions.parquet", index=False)
            try:   # the folder first, then the row: a row never points at a missing folder
                opts.store.record(rec, metrics)
            except BaseException:
                shutil.rmtree(opts.store.run_dir(rec.id), ignore_errors=True)
                raise
            opts.log(f"ssl-real {arm} seed {seed}: AUROC {m:.3f} [{lo:.3f}, {hi:.3f}] over {FOLDS} folds")
            ids.append(rec.id)
    return ids
