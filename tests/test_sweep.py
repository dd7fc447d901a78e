"""`sweep --resume`: finished (method, seed) runs are skipped by their run key, the rest run once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.store import Metric, RunRecord, Store


def _sweep(root: Path, db: Path, methods: str, *extra: str) -> int:
    return main(["sweep", "--method", methods, "--seeds", "0", "--preset", "smoke", "--store", str(db),
                 "--datasets-dir", str(root / "ds"), "--device", "cpu", *extra])


def _ok(db: Path) -> pd.DataFrame:
    runs = Store(db).runs()
    return runs[runs.status == "ok"]


@pytest.fixture
def store(smoke_root: Path, tmp_path: Path) -> Path:
    """A fresh store that reuses the session's cached SSL and source stages."""
    shutil.copytree(smoke_root / "cache", tmp_path / "cache")
    return tmp_path / "s.db"


def test_resume_skips_finished_runs_and_runs_the_rest(smoke_root: Path, store: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert _sweep(smoke_root, store, "source_only", "--quiet") == 0
    first = _ok(store)
    assert list(first.method) == ["source_only"]
    capsys.readouterr()

    assert _sweep(smoke_root, store, "source_only,target_labelled", "--resume") == 0
    out = capsys.readouterr().out
    assert f"source_only seed 0: already finished as run {first.id.iloc[0]}; skipping" in out
    assert "target_labelled seed 0: hard-test AUROC" in out
    ok = _ok(store)
    assert sorted(zip(ok.method, ok.seed)) == [("source_only", 0), ("target_labelled", 0)]
    assert first.id.iloc[0] in set(ok.id)                  # the finished run is the one kept
    assert len(Store(store).runs()) == 2

    # everything is finished now: a resumed sweep adds nothing, and writes no new run folder
    ids, folders = list(Store(store).runs().id), sorted(p.name for p in store.parent.iterdir() if p.is_dir())
    assert _sweep(smoke_root, store, "source_only,target_labelled", "--resume", "--quiet") == 0
    assert list(Store(store).runs().id) == ids
    assert sorted(p.name for p in store.parent.iterdir() if p.is_dir()) == folders

    # without --resume the same sweep runs again: the skip is the flag's doing
    assert _sweep(smoke_root, store, "source_only", "--quiet") == 0
    assert len(_ok(store)) == 3


def test_resume_reruns_a_failed_run(smoke_root: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import evaluate

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(evaluate, "_extremes", boom)
        assert _sweep(smoke_root, store, "source_only", "--quiet") == 1
    assert list(Store(store).runs().status) == ["failed"]
    assert _sweep(smoke_root, store, "source_only", "--resume", "--quiet") == 0
    runs = Store(store).runs()
    assert sorted(runs.status) == ["failed", "ok"]
    assert runs.run_key.nunique() == 1                     # same run, so same key: only 'ok' counts as done


def _record(s: Store, key: str, status: str) -> str:
    rec = RunRecord(task="t", method="m", seed=0, preset="p", fingerprint="f", config={}, code_version="v",
                    device="cpu", run_key=key, status=status)
    return s.record(rec, [Metric("hard_test", "auroc", 0.5)] if status == "ok" else [])


def test_done_is_the_latest_ok_run_of_that_key_only(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.db")
    assert s.done("k1") is None
    _record(s, "k1", "failed")
    assert s.done("k1") is None
    ok = _record(s, "k1", "ok")
    _record(s, "k2", "ok")
    assert s.done("k1") == ok
    assert s.done("k3") is None


def test_parallel_jobs_give_the_same_runs_as_one_process(smoke_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # two pool workers (one thread each, one run each) vs in-process on one thread: same run keys and
    # the same hard-test AUROCs, exactly. (A different thread count alone reorders float reductions in
    # training and can move a smoke AUROC by a few test-image pairs, so the in-process run uses one thread
    # too.) Both read seed 0's cached stages: concurrent stage training is `test_faults`'s.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    stores = {}
    try:
        for jobs in ("2", "1"):
            folder = tmp_path / f"jobs{jobs}"
            folder.mkdir()
            shutil.copytree(smoke_root / "cache", folder / "cache")
            assert main(["run", "--method", "source_only,source_finetune", "--seeds", "0", "--preset",
                         "smoke", "--store", str(folder / "s.db"), "--datasets-dir", str(smoke_root / "ds"),
                         "--device", "cpu", "--quiet", "--jobs", jobs]) == 0
            # the data's warnings (the smoke sets' colour_gr near-leak) once, not again from each worker
            assert capsys.readouterr().err.count("warning: leak guard: catalog column 'colour_gr'") == 1
            st = Store(folder / "s.db")
            m = st.metrics()
            auc = m[(m.split == "hard_test") & (m.name == "auroc")].merge(st.runs(), left_on="run",
                                                                             right_on="id")
            stores[jobs] = auc.set_index("run_key")["value"].sort_index()
    finally:
        torch.set_num_threads(threads)
    assert list(stores["1"].index) == list(stores["2"].index) and len(stores["1"]) == 2
    assert np.array_equal(stores["1"].values, stores["2"].values)


def test_run_bar_counts_done_running_and_failed_and_stays_hidden_until_a_run_starts() -> None:
    from harness.progress import RunBar

    bar = RunBar(3, "sweep")
    assert bar.bar is None                      # nothing drawn while the input is still being checked
    bar.running(2)
    bar.finished(running=1)
    bar.finished(failed=True, running=1)
    bar.finished()
    assert (bar.bar.n, bar.done, bar.failed) == (3, 3, 1)
    assert bar.bar.postfix == "done=3, failed=1, running=0"
    bar.close()
