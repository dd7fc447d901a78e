"""SIGKILL a sweep at random points N times, then resume it; check the store after every kill.

    python -m bench.kill_resume [--kills 10] [--seed 0] [--out /tmp/kill-resume] [--ray]

Runs `sweep --resume` of 2 methods x 3 seeds x 2 cards (smoke preset) in a fresh folder, killing the
whole process group after a random delay each time, checks `Store.problems()` and that no finished run
is duplicated, then lets the last attempt finish and prints one table: kills, the stages they hit
(from the attempt's log), problems found, finished runs (expected 12) and duplicates. With `--ray`
the same sweep then runs on `--backend ray` (a local Ray, the same stage cache) into a second store,
and its finished run keys must equal the resumed sweep's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from harness.store import Store

METHODS, SEEDS, CARDS = "source_only,target_labelled", "0,1,2", ("hard", "hard-balanced")


def _attempt(folder: Path, card: str, delay: float | None, *extra: str, db: str = "s.db") -> tuple[int, str]:
    args = [sys.executable, "-m", "harness", "sweep", "--resume", "--method", METHODS, "--seeds", SEEDS,
            "--hard", card, "--preset", "smoke", "--store", db, "--datasets-dir", "ds", "--device", "cpu",
            *extra]
    p = subprocess.Popen(args, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    if delay is None:
        return p.wait(), p.communicate()[0]
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGKILL)
    return -9, p.communicate()[0]


def _stage(log: str) -> str:
    """The last stage an attempt's log shows it in."""
    marks = [("data: generating", "data"), ("ssl", "ssl"), ("source", "source"), ("AUROC", "runs")]
    last, where = -1, "start-up"
    for mark, name in marks:
        i = log.rfind(mark)
        if i > last:
            last, where = i, name
    return where


def _check(db: Path) -> tuple[int, int, int]:
    if not db.exists():
        return 0, 0, 0
    problems = len(Store(db, create=False).problems())
    with closing(sqlite3.connect(db)) as con:
        ok = con.execute("SELECT COUNT(*) FROM runs WHERE status = 'ok'").fetchone()[0]
        dup = con.execute("SELECT COUNT(*) FROM (SELECT run_key FROM runs WHERE status = 'ok' "
                          "GROUP BY run_key HAVING COUNT(*) > 1)").fetchone()[0]
    return problems, ok, dup


def _keys(db: Path) -> set[str]:
    with closing(sqlite3.connect(db)) as con:
        return {k for (k,) in con.execute("SELECT run_key FROM runs WHERE status = 'ok'")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/kill-resume"))
    ap.add_argument("--ray", action="store_true", help="then the same sweep on --backend ray: same run keys?")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    a.out.mkdir(parents=True)
    rng = random.Random(a.seed)
    rows, worst = [], 0
    for k in range(a.kills):
        card = CARDS[k % 2]
        delay = rng.uniform(2.0, 20.0)
        _, log = _attempt(a.out, card, delay)
        problems, ok, dup = _check(a.out / "s.db")
        worst = max(worst, problems + dup)
        rows.append((k + 1, card, f"{delay:.1f}", _stage(log), problems, ok, dup))
    for card in CARDS:
        rc, log = _attempt(a.out, card, None)
        if rc != 0:
            raise SystemExit(f"resume of {card} failed (rc {rc}):\n{log[-2000:]}")
    problems, ok, dup = _check(a.out / "s.db")
    leftovers = [p.name for d in (a.out, a.out / "ds", a.out / "cache") if d.is_dir()
                 for p in d.iterdir() if ".tmp-" in p.name]
    print("| kill | card | after (s) | stage hit | problems | finished runs | duplicates |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")
    print(f"| resumed | both | — | done | {problems} | {ok} (expected 12) | {dup} |")
    print(f"temporary folders left: {len(leftovers)}; worst problems+duplicates after a kill: {worst}")
    same = True
    if a.ray:
        t0 = time.perf_counter()
        for card in CARDS:
            rc, log = _attempt(a.out, card, None, "--backend", "ray", db="ray.db")
            if rc != 0:
                raise SystemExit(f"ray sweep of {card} failed (rc {rc}):\n{log[-2000:]}")
        local, ray = _keys(a.out / "s.db"), _keys(a.out / "ray.db")
        same = local == ray
        print(f"--backend ray: {len(ray)} finished runs in {time.perf_counter() - t0:.0f} s; run keys "
              f"{'identical to' if same else 'DIFFERENT from'} the resumed local sweep's {len(local)}")
    if problems or dup or ok != 12 or worst or leftovers or not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
