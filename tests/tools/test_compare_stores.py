"""`bench.compare_stores`: identical metrics exit 0; one bit, one metric or one run more exits 1."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from bench.compare_stores import main
from harness.store import Metric, RunRecord, Store


def _store(path: Path, runs: dict[tuple[str, int], list[Metric]]) -> Path:
    s = Store(path)
    for (method, seed), metrics in runs.items():
        s.record(RunRecord(task="t", method=method, seed=seed, preset="smoke", fingerprint="f", config={},
                           code_version="v", device="cpu", run_key=f"{method}-{seed}"), metrics)
    return path


RUNS = {("dann", 0): [Metric("hard_test", "auroc", 0.75, 0.6, 0.9), Metric("hard_pool", "im", -0.25)],
        ("source_only", 0): [Metric("hard_test", "auroc", 0.7, 0.55, 0.85)]}


def test_identical_stores_report_no_difference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = _store(tmp_path / "a.db", RUNS), _store(tmp_path / "b.db", RUNS)
    assert main([str(a), str(b)]) == 0
    assert "compared 2 (method, seed) runs, 3 metrics: no difference" in capsys.readouterr().out


def test_one_bit_is_a_difference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _store(tmp_path / "a.db", RUNS)
    changed = dict(RUNS)
    changed[("dann", 0)] = [Metric("hard_test", "auroc", 0.75, 0.6, math.nextafter(0.9, 1.0)),
                            Metric("hard_pool", "im", -0.25)]
    b = _store(tmp_path / "b.db", changed)
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "dann seed 0 hard_test/auroc:" in out and "1 difference(s)" in out


def test_missing_runs_and_metrics_are_differences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _store(tmp_path / "a.db", RUNS)
    b = _store(tmp_path / "b.db", {("dann", 0): RUNS[("dann", 0)][:1]})
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "source_only seed 0: only in A" in out and "dann seed 0 hard_pool/im: only in A" in out


def test_the_latest_ok_run_is_compared(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", RUNS)
    b = tmp_path / "b.db"
    shutil.copy(a, b)
    s = Store(b)
    s.record(RunRecord(task="t", method="dann", seed=0, preset="smoke", fingerprint="f", config={},
                       code_version="v", device="cpu", run_key="x", time="9999-01-01T00:00:00"),
             [Metric("hard_test", "auroc", 0.1)])
    assert main([str(a), str(b)]) == 1
    with sqlite3.connect(b) as con:                        # a later *failed* run does not count
        con.execute("UPDATE runs SET status = 'failed' WHERE run_key = 'x'")
    assert main([str(a), str(b)]) == 0


def test_a_missing_store_is_exit_2(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", RUNS)
    assert main([str(a), str(tmp_path / "nope.db")]) == 2
