"""`run` and `sweep` on the command line: options from flags, the targets of a suite, the backend,
and the one table printed after the runs. Bad input writes nothing: a store this command created is
removed again if no run was recorded in it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import BadInput
from harness.progress import quiet_log

DEFAULT_STORE = Path("runs/harness.db")


def _hp(items: list[str]) -> dict[str, dict]:
    """--hp dann.lr=0.001 -> {"dann": {"lr": 0.001}} (values parsed as Python literals where possible)."""
    import ast

    out: dict[str, dict] = {}
    for it in items or []:
        try:
            lhs, val = it.split("=", 1)
            method, key = lhs.split(".", 1)
        except ValueError:
            raise BadInput(f"--hp {it}: expected METHOD.KEY=VALUE") from None
        try:
            v = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            v = val
        out.setdefault(method, {})[key] = v
    return out


def _options(a: argparse.Namespace):
    from tqdm.auto import tqdm

    from harness.config import get_preset
    from harness.pipeline import Options
    from harness.store import Store
    from harness.training import resolve_device

    preset = get_preset(a.preset)
    if a.task:   # the task's default cards and data sizes; --easy/--hard still override them
        from harness.tasks import get_task

        preset = get_task(a.task).apply(preset)
    changes = {k: v for k, v in (("easy", a.easy), ("hard", a.hard)) if v}
    if changes:
        preset = preset.replace("data", **changes)
    if a.backbone:   # a comma list is a sweep axis (`_targets`); the first one is the default
        preset = preset.replace("source", backbone=_backbones(a.backbone)[0])
    if a.source_steps:
        preset = preset.replace("source", steps=a.source_steps)
    if a.no_catalog:
        preset = preset.replace("source", use_catalog=False)
    if a.allow_column:
        preset = preset.replace("data", allow_columns=tuple(a.allow_column))
    device = resolve_device(a.device)
    if a.store == DEFAULT_STORE:
        a.store.parent.mkdir(parents=True, exist_ok=True)
    store = Store(a.store)
    return Options(preset=preset, store=store, device=device, precision=a.precision,
                   datasets_dir=a.datasets_dir, quiet=a.quiet, hp_overrides=_hp(a.hp), task=a.task,
                   deterministic=a.deterministic,
                   log=quiet_log if a.quiet else tqdm.write)   # lines above the progress bars


def _backbones(spec: str) -> list[str]:
    from harness.models import BACKBONES

    names = [b.strip() for b in spec.split(",") if b.strip()]
    for b in names or [spec]:
        if b not in BACKBONES:
            raise BadInput(f"--backbone {b}: choose from {', '.join(BACKBONES)}")
    return names


def _methods_arg(spec: str) -> list[str]:
    from harness.registry import all_methods, get_method

    if spec == "all":
        return list(all_methods())
    names = [m.strip() for m in spec.split(",") if m.strip()]
    for n in names:
        get_method(n)
    if not names:
        raise BadInput("--method is empty")
    return names


def cmd_run(a: argparse.Namespace) -> int:
    if a.task == "ssl-real":   # its three arms are the protocol, not adaptation methods
        if a.method not in ("all", None) or a.suite:
            raise BadInput("--task ssl-real runs its own three arms (linear_probe, finetune, scratch): "
                           "drop --method and --suite")
        methods = []
    else:
        methods = _methods_arg(a.method)
    from harness.pipeline import run  # after the names are checked: a typo is refused ~3 s sooner
    from harness.progress import RunBar

    created = [p for p in (a.store.parent, a.store) if not p.exists()]
    bar = None
    try:
        opts = _options(a)
        skip = getattr(a, "resume", False)
        ids = []
        if a.task == "ssl-real":
            from harness.ssl_real import run_ssl_real

            ids += run_ssl_real(a.seeds, opts, skip_done=skip)
        targets = [] if a.task == "ssl-real" else _targets(a, opts)
        bar = RunBar(len(targets) * len(methods) * len(a.seeds), a.cmd, disable=a.quiet) if targets else None
        for label, target_opts in targets:
            if label:
                opts.log(f"{a.cmd}: target {label}")
            if getattr(a, "backend", "local") == "ray":
                from harness.ray_backend import RaySettings, run_ray

                ray_settings = RaySettings(a.address, a.cpus_per_job, a.gpus_per_job, a.stage_dir)
                ids += run_ray(methods, a.seeds, target_opts, skip_done=skip, settings=ray_settings, bar=bar)
                continue
            from harness.parallel import resolve_jobs, run_parallel

            jobs = resolve_jobs(a.jobs, opts.device, len(methods) * len(a.seeds))
            if jobs > 1:
                ids += run_parallel(methods, a.seeds, target_opts, jobs, skip_done=skip, bar=bar)
            else:
                ids += run(methods, a.seeds, target_opts, skip_done=skip, bar=bar)
        if bar is not None:
            bar.close()
    except BadInput:
        if bar is not None:
            bar.close()
        _remove_created(created)
        raise
    runs = opts.store.runs()
    failed = runs[runs["id"].isin(ids) & (runs["status"] == "failed")]
    try:
        from harness.report import terminal_table

        print(terminal_table(opts.store.path, preset=opts.preset.name))
    except (ImportError, BadInput):
        pass
    if len(failed):
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{r.method} seed {r.seed}: {r.error}"
                                                         for r in failed.itertuples()), file=sys.stderr)
        return 1
    return 0


def _targets(a: argparse.Namespace, opts) -> list[tuple[str, object]]:
    """(label, run options) of each target of the sweep's axes: the `--hard` card or every card of
    `--suite` (with its image-only variants), times every backbone of `--backbone A,B`."""
    import dataclasses

    backbones = _backbones(a.backbone) if a.backbone else [opts.preset.source.backbone]
    each = [(b if len(backbones) > 1 else "", {"backbone": b}) for b in backbones]
    if not a.suite:
        cards = [("", opts.preset.data.hard, opts.preset.source.use_catalog)]
    elif a.hard:
        raise BadInput("give --suite or --hard, not both (a suite names its target cards)")
    else:
        from harness.suites import resolve

        cards = [(f"{a.suite} {t.card}" + ("" if t.use_catalog else " (image-only)"), t.card, t.use_catalog)
                 for t in resolve(a.suite, use_catalog=opts.preset.source.use_catalog)]
    out = []
    for card_label, card, use_catalog in cards:
        for b_label, b in each:
            preset = opts.preset.replace("data", hard=card).replace("source", use_catalog=use_catalog, **b)
            label = ", ".join(x for x in (card_label, b_label and f"backbone {b_label}") if x)
            out.append((label, dataclasses.replace(opts, preset=preset)))
    return out


def _remove_created(paths: list[Path]) -> None:
    """Bad input writes nothing: drop a store (and its folder) that this command created, if still empty."""
    import sqlite3

    for p in reversed(paths):
        if p.is_file():
            try:
                with sqlite3.connect(p) as con:
                    if con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]:
                        return  # results were recorded before the bad input surfaced: keep them
            except sqlite3.DatabaseError:
                pass
        if p.is_dir():
            if not any(p.iterdir()):
                p.rmdir()
        else:
            for q in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
                q.unlink(missing_ok=True)
