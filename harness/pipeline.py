"""Runs: one (method, seed) through data -> ssl -> source -> adapt(method) -> evaluate, recorded in the store.

This module owns the run record, the order of the stages and what a method is handed: target
batches carry labels only for oracle methods, and `ctx.labelled` (the 20% split) exists only
for methods that declare `uses_target_labels`. The stages live in `harness.domains` (device
data, honesty splits), `harness.stages` (cached SSL and source stages), `harness.adapt` (the
loop and checkpoints) and `harness.evaluate` (metrics, predictions, the run folder). A run's
folder is in place before its store row is written and is removed if that write fails, so a row
never points at a missing folder; a crashed run is recorded as 'failed', never as a half row.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml

from harness import __version__
from harness.adapt import Checkpoint, adapt, budget
from harness.api import AdaptationMethod, AdaptContext, DomainData
from harness.config import Preset, stable_hash
from harness.data.bands import is_generic, set_bands
from harness.data.fields import crop_field
from harness.domains import Prepared, prepare_data
from harness.errors import BadInput, environment_fault
from harness.evaluate import SelectedAuroc, evaluate, write_run_folder
from harness.label_shift import PriorEstimate, assumes_balance_warning, bbse
from harness.models import LensFinder
from harness.progress import RunBar
from harness.registry import check_hparams, get_method
from harness.stages import seed_all, ssl_finder, stage_start
from harness.store import Metric, RunRecord, Store
from harness.training import Augment, Runtime, infer, make_deterministic, resolve_precision


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
    task: str | None = None          # --task: the task the data must declare (None: whatever they declare)
    deterministic: bool = False      # --deterministic: deterministic kernels in every process that runs

    def __post_init__(self) -> None:
        self.precision = resolve_precision(self.device, self.precision)
        if self.deterministic:   # here, so each worker that rebuilds its Options turns them on too
            make_deterministic()

    @property
    def runtime(self) -> Runtime:
        """Device, precision, progress and log: what every stage needs besides its config."""
        return Runtime(self.device, self.precision, self.quiet, self.log)


@functools.cache
def code_version() -> str:
    """The package version plus the git commit of the code that ran, when known (read once per
    process: the code a process runs is what it imported, even if the checkout moves on)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def run_config(name: str, seed: int, p: Prepared, opts: Options) -> tuple[dict, dict, str]:
    """A run's hyper-parameters, its recorded config and its key (what `--resume` matches on)."""
    hp = {**get_method(name).hparams, **opts.hp_overrides.get(name, {})}
    d = opts.preset.data
    shift = p.hard.meta.get("shift")  # easy (0) -> hard (1) position of the target card; None if unknown
    config = {"preset": opts.preset.to_dict(), "method": name, "hparams": hp, "precision": opts.precision,
              "data": {"easy": d.easy, "hard": d.hard, "easy_fingerprint": p.easy.fingerprint,
                       "hard_fingerprint": p.hard.fingerprint, "features": p.columns, "shift": shift}}
    if p.fov is not None:   # resampling tasks: the field both domains were mapped to (score needs it)
        config["data"]["fov"] = p.fov
    if p.padded:   # in the key: runs made when small stamps were padded before the stretch are not reused
        config["data"]["small_stamps"] = "stretch, then pad"
    key = stable_hash("run", name, seed, config)
    # Recorded for the report, outside the key (the data and the merged `hparams` already fix them):
    # model-input columns close to the leak threshold, and overrides, so that a run with overrides is
    # an ablation row of its own rather than a replacement for the default run.
    if p.near_leaks:
        config["data"]["near_leaks"] = dict(p.near_leaks)
    # what `score` checks new stamps against: the bands the model reads and the training set's scale
    named = [b for b in (set_bands(p.easy), set_bands(p.hard)) if isinstance(b, list) and not is_generic(b)]
    config["data"]["bands"] = named[0] if named else set_bands(p.easy)   # names where either set has them
    config["data"]["pixel_scale"] = p.easy.meta.get("pixel_scale")
    # the field of each easy stamp the model saw (resampled, or centre-cropped)
    if (field := p.fov or crop_field(p.easy, opts.preset.data.image_size)) is not None:
        config["data"]["field"] = field
    defaults = get_method(name).hparams
    if over := {k: v for k, v in opts.hp_overrides.get(name, {}).items() if defaults.get(k) != v}:
        config["hp_overrides"] = over
    return hp, config, key


def run_method(name: str, seed: int, p: Prepared, opts: Options, skip_done: bool = False) -> str:
    """One (method, seed) run through every stage; recorded in the store (ok or failed)."""
    cls = get_method(name)
    hp, config, key = run_config(name, seed, p, opts)
    t0 = time.perf_counter()
    rec = RunRecord(task=p.task, method=name, seed=seed, preset=opts.preset.name, fingerprint=p.fingerprint,
                    config=config, code_version=code_version(), device=_device_name(opts.device), run_key=key,
                    start=cls.start, uses_target_labels=cls.uses_target_labels, oracle=cls.oracle,
                    role=cls.role)
    if skip_done and (done := opts.store.done(key)):
        opts.log(f"{name} seed {seed}: already finished as run {done}; skipping")
        return done
    try:
        pr, cache, rt = opts.preset, opts.store.cache, opts.runtime
        _, ssl_state, source_key, source = stage_start(p, seed, pr, cache, rt)
        start_ssl, start_source = ssl_state, source
        if cls.start == "source_joint":  # self-supervised adaptation: the encoder also saw the hard pool
            _, start_ssl, _, start_source = stage_start(p, seed, pr, cache, rt, with_pool=True)
        t0 = time.perf_counter()  # a run's seconds: adaptation + evaluation; shared stages are logged apart
        if source_key not in p.priors:  # once per source model, not once per method
            p.priors[source_key] = _estimate_prior(source, p, pr.adapt.eval_batch_size, rt.autocast)
        prior = p.priors[source_key]
        metrics, preds, emb, final, cks = _adapt_and_evaluate(cls, hp, seed, p, opts, start_source, start_ssl,
                                                              prior)
        folder = write_run_folder(opts.store.run_dir(rec.id), preds, emb, p.hard, final,
                                  [c.summary() for c in cks])
        rec.seconds = time.perf_counter() - t0
        try:  # the folder first, then the row: a row never points at a missing folder
            opts.store.record(rec, metrics)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        a = next(m for m in metrics if m.split == "hard_test" and m.name in ("auroc", "auroc_macro"))
        opts.log(f"{name} seed {seed}: hard-test AUROC {a.value:.3f}"
                 + (f" [{a.low:.3f}, {a.high:.3f}]" if a.low is not None else "") + f" ({rec.seconds:.0f}s)")
        return rec.id
    except BaseException as e:
        if isinstance(e, BadInput) or environment_fault(e):
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


def _estimate_prior(source: LensFinder, p: Prepared, batch_size: int, autocast) -> PriorEstimate:
    """BBSE from the source model: its confusion on easy val and its predictions on the hard pool."""
    k = p.num_classes
    source.eval()
    logits = lambda b: source(b.images, b.catalog)
    val = infer(logits, p.source_val, batch_size, autocast).argmax(1).cpu().numpy()
    pool = infer(logits, p.pool, batch_size, autocast).argmax(1).cpu().numpy()
    return bbse(val, p.source_val.labels.cpu().numpy(), pool, k)


def _adapt_and_evaluate(cls: type[AdaptationMethod], hp: dict, seed: int, p: Prepared, opts: Options,
                        start_source: LensFinder, ssl_state: dict, prior: PriorEstimate
                        ) -> tuple[list[Metric], pd.DataFrame, dict, dict, list[Checkpoint]]:
    """Adapt a fresh method from its start model under the harness's protocol and evaluate it.

    Returns its metrics, predictions, embeddings, final weights and checkpoints (step 0 included)."""
    pr, rt = opts.preset, opts.runtime
    num_classes, classes = p.num_classes, p.classes
    g = seed_all(seed, rt.device)
    if cls.start in ("source", "source_joint"):
        start = copy.deepcopy(start_source)
    else:
        start = ssl_finder(p, ssl_state, pr.source, num_classes, rt.device)
    steps, bs = budget(cls, hp, pr.adapt, pr.source.steps, pr.source.batch_size)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32, device=rt.device)
    ctx = AdaptContext(
        model=start, source=p.source,
        target=DomainData(p.pool.images, p.pool.catalog, p.pool_labels if cls.oracle else None, "hard/pool"),
        labelled=p.labelled if (cls.uses_target_labels or cls.oracle) else None,
        device=rt.device, steps=steps, batch_size=bs, num_classes=num_classes, seed=seed, hparams=hp,
        start=cls.start, source_prior=as_tensor(prior.source), target_prior=as_tensor(prior.target),
        autocast=rt.autocast, augment=Augment(generator=g), generator=g, log=rt.log)
    method = cls()
    method.setup(ctx)
    method.to(rt.device)
    cks = adapt(method, ctx, p.pool, p.labelled, pr.adapt, rt.autocast, rt.quiet, p.start_scores)
    ebs = pr.adapt.eval_batch_size
    ev = evaluate(method, p, ebs, rt.autocast, seed, pr.n_boot, classes, cks[-1].validator)  # final weights
    metrics, preds, emb = ev.metrics, ev.preds, ev.emb
    final = {k: v.clone() for k, v in method.state_dict().items()}
    sel = pr.adapt.selector
    best_v = max(cks, key=lambda c: c.validator[sel])
    best_l = max(cks, key=lambda c: c.labelled_auroc)
    test_auroc = SelectedAuroc(method, cks, ev, p, ebs, rt.autocast, p.start_scores, rt.precision)
    metrics += [Metric("hard_test", "auroc_sel_validator", test_auroc(best_v)),
                Metric("hard_test", "auroc_sel_labelled", test_auroc(best_l)),
                Metric("hard_test", "sel_validator_step", best_v.step),
                Metric("hard_test", "sel_labelled_step", best_l.step),
                Metric("ssl", "linear_probe_auroc", ssl_state.get("probe_auroc", float("nan")))]
    warning = assumes_balance_warning(sel, prior.target)
    if warning and cls.train_model:
        rt.log(f"{cls.name} seed {seed}: {warning}")
    metrics.append(Metric("hard_pool", "selector_assumes_balance", float(warning is not None)))
    for k, c in enumerate(classes):
        metrics.append(Metric("hard_pool", f"prior_bbse_{c}", float(prior.target[k])))
    declared = _declared_prior(p, classes)
    metrics += [Metric("hard_pool", f"prior_declared_{c}", v) for c, v in declared.items()]
    if cls.oracle:  # the ceiling's learning curve: test AUROC of its last checkpoints (a flag, no choice)
        for c in cks[-2:]:
            c.test_auroc = test_auroc(c)
        metrics.append(Metric("hard_test", "curve_last_delta", abs(cks[-1].test_auroc - cks[-2].test_auroc)))
    return metrics, preds, emb, final, cks


def _declared_prior(p: Prepared, classes: list[str]) -> dict[str, float]:
    """The target card's declared lens fraction, as a class prior (binary generated sets only)."""
    card = Path(p.hard.root) / "card.yaml"
    if len(classes) != 2 or not card.is_file():
        return {}
    try:
        frac = float(yaml.safe_load(card.read_text())["population"]["lens_fraction"])
    except (KeyError, TypeError, ValueError, yaml.YAMLError):
        return {}
    return {classes[0]: 1.0 - frac, classes[1]: frac}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def run(methods: list[str], seeds: list[int], opts: Options, skip_done: bool = False,
        bar: RunBar | None = None) -> list[str]:
    """Run methods x seeds in this process. Returns run ids (failed runs included); `bar` counts them."""
    check_hparams(methods, opts.hp_overrides)
    p = prepare_data(opts.preset, opts.datasets_dir, opts.runtime, opts.task)
    ids = []
    for seed in seeds:
        for m in methods:
            if bar is not None:
                bar.running(1)
            ids.append(run_method(m, seed, p, opts, skip_done=skip_done))
            if bar is not None:
                bar.finished(opts.store.failed(ids[-1]))
    return ids
