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
