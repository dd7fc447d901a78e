"""Determinism: the same seed gives bitwise-identical metrics on CPU, and within 1e-6 AUROC on CUDA with
`--deterministic`. Each run uses a fresh store, so SSL, source training and adaptation all re-run."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import torch

from harness.cli import main


def _two_runs(smoke_root: Path, tmp_path: Path, device: str, *extra: str) -> list[list[tuple]]:
    out = []
    for k in range(2):
        (tmp_path / str(k)).mkdir()
        db = tmp_path / str(k) / "s.db"
        assert main(["run", "--method", "dann", "--preset", "smoke", "--store", str(db), "--datasets-dir",
                     str(smoke_root / "ds"), "--device", device, "--quiet", *extra]) == 0
        with closing(sqlite3.connect(db)) as con:
            out.append(con.execute("SELECT split, name, value, low, high FROM metrics "
                                   "ORDER BY split, name").fetchall())
    return out


def test_same_seed_on_cpu_gives_bitwise_identical_metrics(smoke_root: Path, tmp_path: Path) -> None:
    a, b = _two_runs(smoke_root, tmp_path, "cpu")
    assert len(a) > 10 and a == b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_seed_on_cuda_with_deterministic_kernels_agrees_within_1e6(smoke_root: Path,
                                                                         tmp_path: Path) -> None:
    a, b = _two_runs(smoke_root, tmp_path, "cuda", "--deterministic")
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for ra, rb in zip(a, b):
        if ra[1].startswith("auroc") and ra[2] is not None:
            assert abs(ra[2] - rb[2]) <= 1e-6, ra


def test_deterministic_kernels_reach_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--deterministic` lives in the run options, so a `--jobs` worker (which rebuilds its options from
    a `parallel.Spec`) and a Ray job (whose unpickled options `ray_backend._in_worker` rebuilds) turn the
    deterministic kernels on in their own process."""
    import dataclasses
    import pickle

    from harness.config import get_preset
    from harness.parallel import Spec, _options
    from harness.pipeline import Options
    from harness.ray_backend import _in_worker
    from harness.store import Store

    # make_deterministic sets process-wide state: restore all of it for the tests that follow
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", torch.backends.cudnn.deterministic)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # undone after the test, unlike setdefault
    on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        opts = Options(preset=get_preset("smoke"), store=Store(tmp_path / "s.db"), device=torch.device("cpu"),
                       precision="fp32", datasets_dir=tmp_path, hp_overrides={"dann": {"lr": 0.1}},
                       task="lens-finding", deterministic=True)
        torch.use_deterministic_algorithms(False)
        worker = _options(Spec.of(opts), [])
        assert torch.are_deterministic_algorithms_enabled()
        for f in dataclasses.fields(Options):   # a worker rebuilds every option that shapes a run
            if f.name not in ("store", "log", "quiet"):
                assert getattr(worker, f.name) == getattr(opts, f.name), f.name
        assert worker.store.path == opts.store.path
        payload = pickle.dumps(dataclasses.replace(opts, log=print))   # as Ray ships them to a worker
        torch.use_deterministic_algorithms(False)
        shipped = pickle.loads(payload)
        assert not torch.are_deterministic_algorithms_enabled()   # unpickling alone turns nothing on
        _in_worker(shipped, Store(tmp_path / "scratch.db"), print)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
