"""The run pipeline: data -> ssl -> source -> adapt(method) -> evaluate, each stage cached.

Stage caches live in `<store folder>/cache/<stage>-<key>/`, keyed by a hash of the inputs'
fingerprints, the stage's config and the seed, so `run --method dann` after
`run --method source_only` reuses the SSL encoder and the source model.

Honesty rules enforced here:
- the hard `test` split is evaluated only after training and selection are finished; its labels
  are read from the image set at that moment and never enter a DomainData;
- target batches carry labels only for oracle methods; `ctx.labelled` exists only for methods
  that declare `uses_target_labels`;
- checkpoint selection uses the target pool (label-free validator) or the 20% labelled split.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness import __version__
from harness.api import AdaptationMethod, AdaptContext, DomainData
from harness.config import Preset, stable_hash
from harness.data import imageset
from harness.data.features import feature_matrix, observable_columns
from harness.data.preprocess import prepare
from harness.errors import BadInput
from harness.metrics import accuracy, binary_report, multiclass_auroc, score_auroc, validator_scores
from harness.models import LensFinder
from harness.registry import check_hparams, get_method
from harness.ssl import linear_probe_auroc, train_ssl
from harness.store import Metric, RunRecord, Store
from harness.training import (
    Augment,
    Throughput,
    autocast_factory,
    infer,
    progress,
    resolve_precision,
    train_classifier,
)

TASK = "lens-finding"


@dataclass
class Options:
    """Everything a run needs besides the method and seed."""

    preset: Preset
    store: Store
    device: torch.device
    precision: str = "auto"
    datasets_dir: Path = Path("datasets")
    quiet: bool = False
    hp_overrides: dict = field(default_factory=dict)
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.device, self.precision)
        self.autocast = autocast_factory(self.device, self.precision)


@dataclass
class Prepared:
    """The easy/hard pair on the device, split as the honesty rules require."""

    easy: imageset.ImageSet
    hard: imageset.ImageSet
    columns: list[str]
    source: DomainData          # easy train, labelled
    source_val: DomainData      # easy val, labelled
    pool: DomainData            # hard pool, no labels
    pool_labels: torch.Tensor   # hard pool truth, handed only to oracle methods
    labelled: DomainData        # hard 20% labelled split
    test: DomainData            # hard test split, NO labels

    image_size: int = 64

    @property
    def fingerprint(self) -> str:
        """Identity of everything a stage sees: both sets (content, size, seed, split indices), features."""
        def ident(s: imageset.ImageSet) -> tuple:
            splits = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]
                      for k, v in sorted(s.splits.items())}
            return s.fingerprint, len(s), s.meta.get("seed"), splits
        return stable_hash(ident(self.easy), ident(self.hard), self.columns, self.image_size)

    @property
    def num_classes(self) -> int:
        """From the sets' declared classes, never from the labels of the hard test split."""
        ce, ch = self.easy.meta.get("classes"), self.hard.meta.get("classes")
        if ce and ch:
            if list(ce) != list(ch):
                raise BadInput(f"easy classes {list(ce)} differ from hard classes {list(ch)}")
            return len(ce)
        seen = np.r_[self.easy.labels[self.easy.split("train")], self.hard.labels[self.hard.split("labelled")]]
        return int(seen.max()) + 1

    @property
    def classes(self) -> list[str]:
        return list(self.hard.meta.get("classes") or [str(k) for k in range(self.num_classes)])


# ----------------------------------------------------------------------------------------- data
def load_domain(spec: str, n: int, seed: int, opts: Options) -> imageset.ImageSet:
    """An existing image-set folder, or a card generated on the fly into the datasets folder."""
    if Path(spec).is_dir():
        return imageset.load(spec)
    from harness.data.cards import load_card
    from harness.data.simulate import generate

    card = load_card(spec)
    path = opts.datasets_dir / f"{card.name}-{card.fingerprint[:8]}-n{n}-s{seed}"
    if path.exists():
        try:
            s = imageset.load(path)
        except BadInput as e:
            raise BadInput(f"corrupt cached data set {path} ({e}); delete it to regenerate") from None
        opts.log(f"data: reusing {path}")
        return s
    opts.log(f"data: generating {card.name} (n={n}, seed={seed}) into {path}")
    generate(card, n=n, seed=seed, workers=opts.preset.data.workers, out=path, progress=not opts.quiet)
    return imageset.load(path)


def _device_data(s: imageset.ImageSet, idx: np.ndarray, x: np.ndarray, feats: np.ndarray, device: torch.device,
                 with_labels: bool, name: str) -> DomainData:
    images = torch.from_numpy(np.ascontiguousarray(x[idx])).to(device).contiguous(memory_format=torch.channels_last)
    cat = torch.from_numpy(feats[idx]).to(device)
    labels = torch.from_numpy(s.labels[idx]).to(device) if with_labels else None
    return DomainData(images, cat, labels, name)


def prepare_data(opts: Options) -> Prepared:
    """Load/generate both domains, check splits and features, and move them to the device."""
    d = opts.preset.data
    easy = load_domain(d.easy, d.n_easy, d.seed, opts)
    hard = load_domain(d.hard, d.n_hard, d.seed + 1, opts)
    for s, need in ((easy, ("train", "val")), (hard, ("pool", "labelled", "test"))):
        for k in need:
            s.split(k)
    tr, va = easy.split("train"), easy.split("val")
    pool, lab, test = hard.split("pool"), hard.split("labelled"), hard.split("test")
    if easy.images.shape[1] != hard.images.shape[1]:
        raise BadInput(f"easy has {easy.images.shape[1]} bands but hard has {hard.images.shape[1]}")
    for name, s, idx in (("easy train", easy, tr), ("hard labelled", hard, lab)):
        if (s.labels[idx] < 0).any() or np.unique(s.labels[idx]).size < 2:
            raise BadInput(f"{s.root}: the {name} split needs labels of at least two classes")
    # features: observable columns both domains share, leak-checked on labels the harness may see;
    # none at all for an image-only model (--no-catalog), so a leaky catalog cannot block it
    cols = [c for c in observable_columns(easy.catalog) if c in set(observable_columns(hard.catalog))]
    if not opts.preset.source.use_catalog:
        cols = []
    _, cols = feature_matrix(easy.catalog.iloc[tr], easy.labels[tr], cols)
    feature_matrix(hard.catalog.iloc[lab], hard.labels[lab], cols)
    fe_all, _ = feature_matrix(easy.catalog, easy.labels, cols, check=False)
    fh_all, _ = feature_matrix(hard.catalog, hard.labels, cols, check=False)
    size = d.image_size
    xe, xh = prepare(np.asarray(easy.images), size), prepare(np.asarray(hard.images), size)
    dev = opts.device
    return Prepared(
        easy=easy, hard=hard, columns=cols,
        source=_device_data(easy, tr, xe, fe_all, dev, True, "easy/train"),
        source_val=_device_data(easy, va, xe, fe_all, dev, True, "easy/val"),
        pool=_device_data(hard, pool, xh, fh_all, dev, False, "hard/pool"),
        pool_labels=torch.from_numpy(hard.labels[pool]).to(dev),
        labelled=_device_data(hard, lab, xh, fh_all, dev, True, "hard/labelled"),
        test=_device_data(hard, test, xh, fh_all, dev, False, "hard/test"),
        image_size=size,
    )


# ----------------------------------------------------------------------------------------- stages
def _cache_dir(opts: Options, stage: str, key: str) -> Path:
    return opts.store.root / "cache" / f"{stage}-{key}"


def _load_cached(path: Path, what: str) -> dict:
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable cache is the same user-facing problem
        raise BadInput(f"corrupt cache {path} ({what}: {type(e).__name__}); delete the folder to rebuild it") from None


def _save_cached(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _seed_all(seed: int, device: torch.device) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def stage_ssl(p: Prepared, seed: int, opts: Options) -> tuple[str, dict]:
    """SimCLR encoder on easy train + hard pool; cached. Returns (key, state with probe AUROC)."""
    cfg, src = opts.preset.ssl, opts.preset.source
    key = stable_hash("ssl", p.fingerprint, cfg, src.backbone, seed, opts.precision)
    path = _cache_dir(opts, "ssl", key)
    if (path / "state.pt").is_file():
        opts.log(f"ssl: reusing cached encoder {path.name}")
        return key, _load_cached(path, "SSL encoder")
    if not cfg.enabled:
        return key, {"backbone": None, "probe_auroc": float("nan")}
    g = _seed_all(seed, opts.device)
    unlabelled = torch.cat([p.source.images, p.pool.images])  # never the hard test split
    t0 = time.perf_counter()
    backbone = train_ssl(unlabelled, cfg, src.backbone, opts.device, opts.autocast, g, quiet=opts.quiet)
    probe = linear_probe_auroc(backbone, p.source.images, p.source.labels.cpu().numpy(),
                               p.source_val.images, p.source_val.labels.cpu().numpy(), opts.autocast)
    state = {"backbone": {k: v.cpu() for k, v in backbone.state_dict().items()}, "probe_auroc": probe,
             "seconds": time.perf_counter() - t0}
    _save_cached(path, state)
    opts.log(f"ssl: trained encoder {path.name} in {state['seconds']:.0f}s; linear probe AUROC (easy val) {probe:.3f}")
    return key, state


def new_finder(p: Prepared, opts: Options, num_classes: int) -> LensFinder:
    src = opts.preset.source
    m = LensFinder(src.backbone, p.source.images.shape[1], len(p.columns), num_classes, use_catalog=src.use_catalog)
    m.fit_catalog_scaler(p.source.catalog.cpu())
    return m.to(opts.device).to(memory_format=torch.channels_last)


def ssl_finder(p: Prepared, ssl_state: dict, opts: Options, num_classes: int) -> LensFinder:
    m = new_finder(p, opts, num_classes)
    if ssl_state.get("backbone") is not None:
        m.backbone.load_state_dict(ssl_state["backbone"])
    return m


def stage_source(p: Prepared, seed: int, ssl_key: str, ssl_state: dict, opts: Options) -> tuple[str, LensFinder]:
    """The easy-set lens finder (image branch from the SSL encoder); cached."""
    cfg = opts.preset.source
    key = stable_hash("source", p.fingerprint, ssl_key if cfg.init == "ssl" else "scratch", cfg, seed, opts.precision)
    path = _cache_dir(opts, "source", key)
    num_classes = p.num_classes
    if (path / "state.pt").is_file():
        opts.log(f"source: reusing cached lens finder {path.name}")
        m = new_finder(p, opts, num_classes)
        try:
            m.load_state_dict(_load_cached(path, "source model")["model"])
        except RuntimeError:
            raise BadInput(f"corrupt cache {path} (source model does not match the config); delete it") from None
        return key, m.eval()
    g = _seed_all(seed, opts.device)
    m = ssl_finder(p, ssl_state, opts, num_classes) if cfg.init == "ssl" else new_finder(p, opts, num_classes)
    t0 = time.perf_counter()
    train_classifier(m, p.source, cfg.steps, cfg.batch_size, cfg.lr, cfg.weight_decay, opts.device,
                     opts.autocast, Augment(generator=g), g, desc="source", quiet=opts.quiet)
    _save_cached(path, {"model": {k: v.cpu() for k, v in m.state_dict().items()}})
    opts.log(f"source: trained lens finder {path.name} in {time.perf_counter() - t0:.0f}s")
    return key, m


# ----------------------------------------------------------------------------------------- adapt
@dataclass
class Checkpoint:
    step: int
    state: dict
    validator: dict[str, float]
    labelled_auroc: float


def _scores(logits: torch.Tensor) -> np.ndarray:
    probs = logits.float().softmax(1).cpu().numpy()
    return probs[:, 1] if probs.shape[1] == 2 else probs


def _checkpoint(method: AdaptationMethod, p: Prepared, step: int, opts: Options) -> Checkpoint:
    """Scores used for selection: label-free validators on the pool, AUROC on the 20% labelled split."""
    method.eval()
    bs = opts.preset.adapt.batch_size * 2
    pool_logits = infer(method.predict, p.pool, bs, opts.autocast)
    lab_scores = _scores(infer(method.predict, p.labelled, bs, opts.autocast))
    y = p.labelled.labels.cpu().numpy()
    lab_auc = score_auroc(y, lab_scores)
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    method.train()
    return Checkpoint(step, state, validator_scores(pool_logits), lab_auc)


def adapt(method: AdaptationMethod, ctx: AdaptContext, p: Prepared, opts: Options) -> list[Checkpoint]:
    """The harness-owned loop: sampling, weak augmentation, AMP, progress, checkpoints."""
    cfg = opts.preset.adapt
    if not type(method).train_model:
        return [_checkpoint(method, p, 0, opts)]
    bs, steps = cfg.batch_size, cfg.steps
    at = {max(1, round(steps * (i + 1) / cfg.checkpoints)) for i in range(cfg.checkpoints)}
    epoch_len = max(1, len(p.pool) // bs)
    target = ctx.target
    bar, tp = progress(steps, type(method).name, opts.quiet), Throughput()
    cks = []
    method.train()
    for step in range(steps):
        if step % epoch_len == 0:
            method.on_epoch_start(step // epoch_len)
        src, tgt = ctx.source.sample(bs, ctx.generator), target.sample(bs, ctx.generator)
        src.images, tgt.images = ctx.augment(src.images, "weak"), ctx.augment(tgt.images, "weak")
        with opts.autocast():
            logs = method.update(src, tgt, step)
        bar.update()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(logs.items())[:3]} |
                            {"img_s": f"{tp.add(2 * bs * min(10, step + 1)):.0f}"})
        if step + 1 in at:
            cks.append(_checkpoint(method, p, step + 1, opts))
    bar.close()
    for v in logs.values():
        if not np.isfinite(v):
            raise FloatingPointError(f"{type(method).name}: training diverged (a loss is {v})")
    return cks


def _evaluate(method: AdaptationMethod, p: Prepared, opts: Options, seed: int, classes: list[str]
              ) -> tuple[list[Metric], pd.DataFrame, dict[str, np.ndarray]]:
    """All test/val metrics of the method's current weights, plus predictions and embeddings."""
    method.eval()
    bs = opts.preset.adapt.batch_size * 2
    out: list[Metric] = []
    preds = []
    for split, data, s_idx in (("hard_test", p.test, p.hard.split("test")), ("easy_val", p.source_val, p.easy.split("val"))):
        s = p.hard if split == "hard_test" else p.easy
        y = s.labels[s_idx]                       # read here, after training and selection
        sc = _scores(infer(method.predict, data, bs, opts.autocast))
        if np.ndim(sc) == 1:
            for name, (v, lo, hi) in binary_report(y, sc, seed=seed, n_boot=opts.preset.n_boot).items():
                out.append(Metric(split, name, v, lo, hi))
            preds.append(pd.DataFrame({"split": split, "index": s_idx, "id": s.catalog["id"].to_numpy()[s_idx],
                                       "label": y, "score": sc}))
        else:
            for name, v in multiclass_auroc(y, sc, classes).items():
                out.append(Metric(split, name, v))
            out.append(Metric(split, "accuracy", accuracy(y, sc)))
            df = pd.DataFrame({"split": split, "index": s_idx, "id": s.catalog["id"].to_numpy()[s_idx], "label": y})
            for k in range(sc.shape[1]):
                df[f"score_{k}"] = sc[:, k]
            preds.append(df)
    pool_logits = infer(method.predict, p.pool, bs, opts.autocast)
    for name, v in validator_scores(pool_logits).items():
        out.append(Metric("hard_pool", name, v))
    k = min(1000, len(p.source_val), len(p.test))
    fe = infer(method.features, DomainData(p.source_val.images[:k], p.source_val.catalog[:k]), bs, opts.autocast)
    ft = infer(method.features, DomainData(p.test.images[:k], p.test.catalog[:k]), bs, opts.autocast)
    emb = {"features": torch.cat([fe, ft]).cpu().numpy().astype(np.float32),
           "domain": np.r_[np.zeros(k, int), np.ones(k, int)],
           "label": np.r_[p.easy.labels[p.easy.split("val")][:k], p.hard.labels[p.hard.split("test")][:k]]}
    return out, pd.concat(preds, ignore_index=True), emb


def _test_auroc(method: AdaptationMethod, state: dict, p: Prepared, opts: Options) -> float:
    method.load_state_dict(state)
    method.eval()
    sc = _scores(infer(method.predict, p.test, opts.preset.adapt.batch_size * 2, opts.autocast))
    y = p.hard.labels[p.hard.split("test")]
    return score_auroc(y, sc)


def _extremes(preds: pd.DataFrame, hard: imageset.ImageSet, k: int = 8) -> dict:
    t = preds[preds["split"] == "hard_test"]
    if "score" not in t:
        return {}
    t = t.sort_values("score", ascending=False)
    pick = pd.concat([t.head(k), t.tail(k)])
    return {"images": np.asarray(hard.images[pick["index"].to_numpy()], dtype=np.float32),
            "score": pick["score"].to_numpy(), "label": pick["label"].to_numpy(),
            "rank": np.array(["top"] * min(k, len(t)) + ["bottom"] * min(k, len(t)))}


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def run_method(name: str, seed: int, p: Prepared, opts: Options, skip_done: bool = False) -> str:
    """One (method, seed) run through every stage; recorded in the store (ok or failed)."""
    cls = get_method(name)
    hp = {**cls.hparams, **opts.hp_overrides.get(name, {})}
    t0 = time.perf_counter()
    d = opts.preset.data
    shift = p.hard.meta.get("shift")  # easy (0) -> hard (1) position of the target card; None if unknown
    config = {"preset": opts.preset.to_dict(), "method": name, "hparams": hp, "precision": opts.precision,
              "data": {"easy": d.easy, "hard": d.hard, "easy_fingerprint": p.easy.fingerprint,
                       "hard_fingerprint": p.hard.fingerprint, "features": p.columns, "shift": shift}}
    key = stable_hash("run", name, seed, config)
    rec = RunRecord(task=TASK, method=name, seed=seed, preset=opts.preset.name, fingerprint=p.fingerprint,
                    config=config, code_version=code_version(), device=_device_name(opts.device), run_key=key,
                    start=cls.start, uses_target_labels=cls.uses_target_labels, oracle=cls.oracle,
                    role=cls.role)
    if skip_done and (done := opts.store.done(key)):
        opts.log(f"{name} seed {seed}: already finished as run {done}; skipping")
        return done
    tmp = opts.store.root / f".{rec.id}.tmp"
    try:
        ssl_key, ssl_state = stage_ssl(p, seed, opts)
        _, source = stage_source(p, seed, ssl_key, ssl_state, opts)
        t0 = time.perf_counter()  # a run's seconds: adaptation + evaluation; shared stages are logged apart
        num_classes, classes = p.num_classes, p.classes
        g = _seed_all(seed, opts.device)
        start = copy.deepcopy(source) if cls.start == "source" else ssl_finder(p, ssl_state, opts, num_classes)
        ctx = AdaptContext(
            model=start, source=p.source,
            target=DomainData(p.pool.images, p.pool.catalog, p.pool_labels if cls.oracle else None, "hard/pool"),
            labelled=p.labelled if (cls.uses_target_labels or cls.oracle) else None,
            device=opts.device, steps=opts.preset.adapt.steps, batch_size=opts.preset.adapt.batch_size,
            num_classes=num_classes, seed=seed, hparams=hp, start=cls.start, autocast=opts.autocast,
            augment=Augment(generator=g), generator=g, log=opts.log)
        method = cls()
        method.setup(ctx)
        method.to(opts.device)
        cks = adapt(method, ctx, p, opts)
        metrics, preds, emb = _evaluate(method, p, opts, seed, classes)  # final weights
        final = {k: v.clone() for k, v in method.state_dict().items()}
        sel = opts.preset.adapt.selector
        best_v = max(cks, key=lambda c: c.validator[sel])
        best_l = max(cks, key=lambda c: c.labelled_auroc)
        metrics += [Metric("hard_test", "auroc_sel_validator", _test_auroc(method, best_v.state, p, opts)),
                    Metric("hard_test", "auroc_sel_labelled", _test_auroc(method, best_l.state, p, opts)),
                    Metric("hard_test", "sel_validator_step", best_v.step),
                    Metric("hard_test", "sel_labelled_step", best_l.step),
                    Metric("ssl", "linear_probe_auroc", ssl_state.get("probe_auroc", float("nan")))]
        tmp.mkdir(parents=True)
        preds.to_parquet(tmp / "predictions.parquet", index=False)
        np.savez_compressed(tmp / "embeddings.npz", **emb)
        ex = _extremes(preds, p.hard)
        if ex:
            np.savez_compressed(tmp / "extremes.npz", **ex)
        torch.save(final, tmp / "model.pt")
        (tmp / "checkpoints.json").write_text(json.dumps(
            [{"step": c.step, **c.validator, "labelled_auroc": c.labelled_auroc} for c in cks], indent=1))
        rec.seconds = time.perf_counter() - t0
        final_dir = opts.store.run_dir(rec.id)
        os.replace(tmp, final_dir)  # the folder first: a row never points at a missing folder
        try:
            opts.store.record(rec, metrics)
        except BaseException:
            shutil.rmtree(final_dir, ignore_errors=True)
            raise
        a = next(m for m in metrics if m.split == "hard_test" and m.name in ("auroc", "auroc_macro"))
        opts.log(f"{name} seed {seed}: hard-test AUROC {a.value:.3f}"
                 + (f" [{a.low:.3f}, {a.high:.3f}]" if a.low is not None else "") + f" ({rec.seconds:.0f}s)")
        return rec.id
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, BadInput):
            raise
        rec.status, rec.seconds = "failed", time.perf_counter() - t0
        rec.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        try:
            opts.store.record(rec, [])
        except Exception as store_error:  # noqa: BLE001 - never mask the original error
            opts.log(f"{name} seed {seed}: could not record the failure ({store_error})")
        if not isinstance(e, Exception):
            raise
        opts.log(f"{name} seed {seed}: FAILED ({rec.error})")
        if os.environ.get("HARNESS_DEBUG"):
            traceback.print_exc()
        return rec.id


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def run(methods: list[str], seeds: list[int], opts: Options, skip_done: bool = False) -> list[str]:
    """Run methods x seeds. Returns run ids (failed runs included)."""
    check_hparams(methods, opts.hp_overrides)
    p = prepare_data(opts)
    ids = []
    for seed in seeds:
        for m in methods:
            ids.append(run_method(m, seed, p, opts, skip_done=skip_done))
    return ids
