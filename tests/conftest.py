"""Shared fixtures: one smoke-preset store per test session (data, SSL and source cached once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.fs import locked

# Under pytest-xdist (`make test` runs one worker per core) each worker takes its share of the
# cores: small CNNs train faster as single-thread processes side by side than as one two-thread
# process, and oversubscribed threads would stall. Child processes inherit the setting.
if (_workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))) > 1:
    _threads = max(1, (os.cpu_count() or 1) // _workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
    torch.set_num_threads(_threads)


# The files that train, longest first (`pytest --durations=0`, summed per file), so that the two
# workers of `make test` (whole files each) finish together rather than one waiting on the last one.
LONGEST_FIRST = ("test_faults.py", "test_pipeline.py", "test_methods_smoke.py", "test_ray.py",
                 "test_tasks.py", "test_sweep.py", "test_poisoning.py", "test_report.py",
                 "test_methods_units.py", "test_suite_run.py", "test_determinism.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: file order kept within


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with smoke datasets and a store holding one finished source_only run. Under xdist
    every worker shares one (the first builds it under a lock; the harness's stores and caches
    take concurrent writers, which the reliability tests check)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "smoke"
    with locked(root):
        if not (root / ".built").is_file():
            root.mkdir(exist_ok=True)
            rc = main(["run", "--method", "source_only", "--preset", "smoke", "--store", str(root / "s.db"),
                       "--datasets-dir", str(root / "ds"), "--quiet", "--device", "cpu"])
            assert rc == 0
            (root / ".built").touch()
    return root


def smoke_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments for another smoke run on the same store and datasets."""
    return ["--preset", "smoke", "--store", str(root / "s.db"), "--datasets-dir", str(root / "ds"),
            "--device", "cpu", *extra]
