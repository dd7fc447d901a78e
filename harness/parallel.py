"""Local parallel runs: methods x seeds over a pool of worker processes on one machine.

Small CNNs use a CPU core badly from two threads: on a 2-core EPYC two one-thread processes train
~1.6x more images/s than one two-thread process (bench/RESULTS.md). So `run --jobs N` splits the
cores among N worker processes. It works in two phases so no stage is computed twice:
1. the shared stages (SSL encoder + source model; the joint ones when a method starts from them),
   one job per seed and kind, written to the stage cache;
2. every (method, seed) run, which then only reads the cache.
Workers fork from a server that imported the harness once (`forkserver`; `spawn` where there is no
fork), so each one starts in a moment rather than paying ~10 s of imports, and a sweep's later pools
reuse the server. Workers write their own run folder and store row (SQLite in WAL mode on a local
disk takes concurrent writers); their log lines come back to the driver, which prints them above
one progress bar of done / running / failed runs (`harness.progress`).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from harness.config import Preset
from harness.domains import Prepared, prepare_data
from harness.progress import RunBar, quiet_log
from harness.registry import check_hparams, get_method


@dataclass(frozen=True)
class Spec:
    """What a worker needs to rebuild the run options (the driver's Options hold unpicklable parts)."""

    preset: Preset
    store: Path
    device: str
    precision: str
    datasets_dir: Path
    hp_overrides: dict
    task: str | None = None
    deterministic: bool = False

    @classmethod
    def of(cls, opts) -> Spec:
        """The driver's options as a worker rebuilds them (`_options`)."""
        return cls(opts.preset, opts.store.path, str(opts.device), opts.precision, opts.datasets_dir,
                   opts.hp_overrides, opts.task, opts.deterministic)


def resolve_jobs(spec: str | int, device: torch.device, n_runs: int) -> int:
    """'auto': one job per core on a CPU (at most one per run), one on CUDA; else the number given."""
    if spec == "auto":
        return 1 if device.type == "cuda" else max(1, min(os.cpu_count() or 1, n_runs))
    return max(1, int(spec))


_PREPARED: dict[tuple, Prepared] = {}


def _options(spec: Spec, lines: list[str]):
    from harness.pipeline import Options
    from harness.store import Store

    return Options(preset=spec.preset, store=Store(spec.store), device=torch.device(spec.device),
                   precision=spec.precision, datasets_dir=spec.datasets_dir, quiet=True,
                   hp_overrides=spec.hp_overrides, log=lines.append, task=spec.task,
                   deterministic=spec.deterministic)


def _prepared(spec: Spec, opts) -> Prepared:
    """The device data, read once per worker process (from the datasets the driver made)."""
    key = (spec.preset.data, spec.preset.source.use_catalog, str(spec.datasets_dir))   # what prepare reads
    if key not in _PREPARED:
        # the driver prepared (and said everything about) these data already: quiet here
        rt = dataclasses.replace(opts.runtime, log=lambda line: None)
        _PREPARED[key] = prepare_data(spec.preset, spec.datasets_dir, rt, spec.task)
    return _PREPARED[key]


def worker_context() -> multiprocessing.context.BaseContext:
    """A fork server with the heavy imports done (the server itself never computes, so no thread pool
    is running when it forks); `spawn` on platforms without fork."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["harness.preload"])
    return ctx


def _init(threads: int) -> None:
    from harness import quiet_import_warnings
    from harness.training import keep_freed_memory

    quiet_import_warnings()
    keep_freed_memory()
    torch.set_num_threads(threads)


def _stages(spec: Spec, seed: int, joint: bool) -> list[str]:
    from harness.stages import stage_start

    lines: list[str] = []
    opts = _options(spec, lines)
    p, pr, rt = _prepared(spec, opts), spec.preset, opts.runtime
    stage_start(p, seed, pr, opts.store.cache, rt, with_pool=joint)
    return lines


def _run(spec: Spec, method: str, seed: int, skip_done: bool) -> tuple[str, bool, list[str]]:
    from harness.pipeline import run_method

    lines: list[str] = []
    opts = _options(spec, lines)
    run_id = run_method(method, seed, _prepared(spec, opts), opts, skip_done=skip_done)
    runs = opts.store.runs()
    failed = bool((runs.loc[runs["id"] == run_id, "status"] == "failed").any())
    return run_id, failed, [ln for ln in lines if "reusing cached" not in ln]


def _cost(method: str, hp_overrides: dict) -> float:
    """A rough relative cost of one run, for ordering only: images per step x a source-length budget."""
    cls = get_method(method)
    if not cls.train_model:
        return 0.0
    hp = {**cls.hparams, **hp_overrides.get(method, {})}
    return (1 + int(hp.get("uratio", 1))) * (2.0 if cls.budget == "source" else 1.0)


def run_parallel(methods: list[str], seeds: list[int], opts, jobs: int, skip_done: bool = False,
                 bar: RunBar | None = None) -> list[str]:
    """Run methods x seeds in `jobs` worker processes; returns the run ids in (seed, method) order.
    `bar` counts the runs (a sweep's one bar); without it this call shows its own."""
    check_hparams(methods, opts.hp_overrides)
    prepare_data(opts.preset, opts.datasets_dir, opts.runtime, opts.task)   # generate/validate data here
    spec = Spec.of(opts)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    kinds = sorted({get_method(m).start == "source_joint" for m in methods})
    say = quiet_log if opts.quiet else tqdm.write
    pool = cf.ProcessPoolExecutor(jobs, mp_context=worker_context(),
                                  initializer=_init, initargs=(threads,))
    try:
        stages = [pool.submit(_stages, spec, s, joint) for s in seeds for joint in kinds]
        stage_bar = tqdm(total=len(stages), desc=f"shared stages ({jobs} jobs)",
                         disable=opts.quiet or bar is not None, dynamic_ncols=True)
        for f in cf.as_completed(stages):
            for line in f.result():
                say(line)
            stage_bar.update()
        stage_bar.close()
        todo = [(m, s) for s in seeds for m in methods]
        # longest first (larger target batches, then the source-length budget), so no long run is
        # left alone on one core at the end
        order = sorted(todo, key=lambda t: (-_cost(t[0], opts.hp_overrides), t[1], methods.index(t[0])))
        futures = {pool.submit(_run, spec, m, s, skip_done): (m, s) for m, s in order}
        ids: dict[tuple[str, int], str] = {}
        runs = bar or RunBar(len(todo), f"runs ({jobs} jobs)", disable=opts.quiet)
        runs.running(min(jobs, len(todo)))
        for f in cf.as_completed(futures):
            run_id, bad, lines = f.result()
            ids[futures[f]] = run_id
            for line in lines:
                say(line)
            runs.finished(bad, running=min(jobs, len(todo) - len(ids)))
        if bar is None:
            runs.close()
    except cf.process.BrokenProcessPool:
        pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError("a worker process died (killed, or out of memory); the runs that finished are "
                           "in the store: `sweep --resume` with the same arguments runs the rest") from None
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [ids[t] for t in todo]
