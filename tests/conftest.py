"""Shared fixtures: one smoke-preset store per test session (data, SSL and source cached once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with smoke datasets and a store holding one finished source_only run."""
    root = tmp_path_factory.mktemp("smoke")
    rc = main(["run", "--method", "source_only", "--preset", "smoke", "--store", str(root / "s.db"),
               "--datasets-dir", str(root / "ds"), "--quiet", "--device", "cpu"])
    assert rc == 0
    return root


def smoke_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments for another smoke run on the same store and datasets."""
    return ["--preset", "smoke", "--store", str(root / "s.db"), "--datasets-dir", str(root / "ds"),
            "--device", "cpu", *extra]
