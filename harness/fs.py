"""One way to write a folder atomically, used by every writer (data sets, stage caches, run folders,
reports): everything goes into a hidden temporary sibling that is renamed into place only when the
block succeeds, so a crash or bad input never leaves a half-written folder behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import BadInput


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to `out` only if the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BadInput(f"{out}: already exists (remove it or choose another --out)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise BadInput(f"{out}: cannot write there ({e.strerror or e})") from None
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
