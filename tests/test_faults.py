"""Faults: SIGKILL at any stage leaves the store consistent, caches are checksummed and rebuilt when
corrupt, concurrent writers and concurrent cold runs neither lose nor duplicate work."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from harness.cli import main
from harness.fs import SUMS, checksum_problem
from harness.store import Store
from tests.conftest import smoke_args


def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def assert_consistent(db: Path, resumed: bool = True) -> None:
    """The store's invariants (`Store.problems`: integrity ok, every ok row has metrics and its folder);
    and for a resumed sweep, no run twice (a plain `run` repeated records a second measurement)."""
    assert Store(db, create=False).problems() == []
    with closing(sqlite3.connect(db)) as con:
        dup = con.execute("SELECT run_key FROM runs WHERE status = 'ok' GROUP BY run_key HAVING COUNT(*) > 1")
        assert not resumed or dup.fetchall() == []


def _kill_after(p: subprocess.Popen, marker: str, delay: float) -> str:
    """Read the command's output until a line holds `marker`, let it run `delay` s more, then SIGKILL its
    process group; returns its output. (Fixed delays would land in Python's imports on a busy machine.)"""
    seen = []
    for line in p.stdout:   # text mode: tqdm's carriage returns end lines too
        seen.append(line)
        if marker in line:
            break
    time.sleep(delay)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:   # it ended before the marker: the assertion below says so
        pass
    log = "".join(seen) + p.communicate()[0]
    assert marker in log, log   # killed where this test says, not after the command ended
    return log


def test_sigkill_at_three_stages_then_resume_gives_exactly_the_planned_runs(tmp_path: Path) -> None:
    args = ["sweep", "--resume", "--method", "source_only,target_labelled", "--seeds", "0",
            "--store", "s.db", "--datasets-dir", "ds", "--preset", "smoke", "--device", "cpu"]
    logs = []
    # during data generation, during source training (the encoder is cached), between the two runs
    for marker, delay in (("data: generating easy", 1.0), ("ssl: trained encoder", 0.3),
                          ("hard-test AUROC", 0.0)):
        logs.append(_kill_after(_cli(args, tmp_path), marker, delay))
        if (tmp_path / "s.db").exists():
            assert_consistent(tmp_path / "s.db")
    p = _cli(args, tmp_path)
    out = p.communicate(timeout=600)[0]
    assert p.returncode == 0, out
    logs.append(out)
    assert_consistent(tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as con:
        rows = con.execute("SELECT method, seed FROM runs WHERE status = 'ok' "
                           "ORDER BY method, seed").fetchall()
    assert rows == [("source_only", 0), ("target_labelled", 0)]
    text = "\n".join(logs)
    # a finished stage is never computed again: the encoder and the source model once at most
    assert text.count("ssl: trained encoder") <= 1 and text.count("source: trained lens finder") <= 1
    leftovers = [p.name for d in (tmp_path, tmp_path / "ds", tmp_path / "cache") if d.is_dir()
                 for p in d.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_corrupt_caches_are_rebuilt_with_a_warning(smoke_root: Path, tmp_path: Path,
                                                   capsys) -> None:
    shutil.copytree(smoke_root / "ds", tmp_path / "ds")
    shutil.copytree(smoke_root / "cache", tmp_path / "cache")
    # Other tests share smoke_root and may have added sets and source models of other settings (another
    # precision on a CPU with native bf16, say): damage every one, so the ones this run reads are damaged.
    done = lambda d, pattern: sorted(p for p in d.glob(pattern) if ".tmp-" not in p.name)
    sets, sources = done(tmp_path / "ds", "easy-*"), done(tmp_path / "cache", "source-*")
    for data in sets:
        with open(data / "images.npy", "r+b") as f:   # one flipped byte deep in the pixels
            f.seek(4000)
            b = f.read(1)
            f.seek(4000)
            f.write(bytes([b[0] ^ 0xFF]))
    for source in sources:
        (source / "state.pt").write_bytes(b"truncated")
    assert main(["run", "--method", "source_only", *smoke_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    (data,) = [d for d in sets if f"corrupt cache {d} (" in out]         # one of each was read, and named
    (source,) = [d for d in sources if f"corrupt cache {d} (" in out]
    assert checksum_problem(data) is None and checksum_problem(source) is None
    assert (data / SUMS).is_file()


WRITER = """
import sys
from harness.store import Metric, RunRecord, Store
db, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store(db)
for i in range(n):
    rec = RunRecord("lens-finding", "m", i, "smoke", "f", {"w": worker}, "v", "cpu", f"k{worker}-{i}",
                    id=f"w{worker}-{i}")
    store.record(rec, [Metric("hard_test", "auroc", 0.5 + i / 1000)])
"""


def test_eight_writers_two_hundred_runs_each(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    Store(db)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db, str(w), "200"], env=env) for w in range(8)]
    assert [p.wait(timeout=600) for p in procs] == [0] * 8
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1600
        assert con.execute("SELECT COUNT(DISTINCT id) FROM runs").fetchone()[0] == 1600
        assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 1600
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_cold_runs_compute_each_stage_once(tmp_path: Path) -> None:
    args = ["run", "--method", "source_only", "--store", "s.db", "--datasets-dir", "ds", "--preset", "smoke",
            "--device", "cpu"]
    procs = [_cli(args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    text = "\n".join(outs)
    for stage in ("data: generating easy", "data: generating hard", "ssl: trained encoder",
                  "source: trained lens finder"):
        assert text.count(stage) == 1, stage
    assert text.count("ssl: reusing cached encoder") == 1
    assert_consistent(tmp_path / "s.db", resumed=False)


def test_orphaned_temporary_folders_of_dead_local_processes_are_removed(tmp_path: Path) -> None:
    import socket

    from harness.fs import atomic_dir

    host = socket.gethostname()
    dead, alive, remote = (tmp_path / f".x.tmp-{pid}@{h}@abc" for pid, h in
                           ((999999, host), (os.getpid(), host), (999999, "another-node")))
    for d in (dead, alive, remote):
        d.mkdir()
    with atomic_dir(tmp_path / "x") as tmp:
        (tmp / "f").write_text("1")
    assert not dead.exists() and alive.exists() and remote.exists()   # a shared disk's other hosts: untouched
    assert (tmp_path / "x" / "f").read_text() == "1"
