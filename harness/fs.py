"""One way to write a folder atomically, used by every writer (data sets, stage caches, run folders,
reports): everything goes into a hidden temporary sibling that is renamed into place only when the
block succeeds, so a crash or bad input never leaves a half-written folder behind."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import BadInput, environment_fault


@contextmanager
def atomic_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to `out` only if the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BadInput(f"{out}: already exists (remove it or choose another --out)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}@{socket.gethostname()}@",
                                    dir=out.parent))
    except OSError as e:
        raise BadInput(f"{out}: cannot write there ({e.strerror or e})") from None
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (why := environment_fault(e)) is not None:
            raise BadInput(f"{out}: {why}; nothing was written") from None
        raise


def _remove_orphans(out: Path) -> None:
    """Temporary siblings of `out` left by a killed process (SIGKILL runs no cleanup): written on this
    host by a pid that is gone. Another host's (a shared disk) are never touched."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*@*@*"):
        pid, host, _ = tmp.name[len(f".{out.name}.tmp-"):].split("@", 2)
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


SUMS = "SHA256SUMS"


def _sha256(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the sha256 of every file under `folder` in `folder/SHA256SUMS` (sha256sum's format)."""
    folder = Path(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.name != SUMS)
    lines = [f"{_sha256(f)}  {f.relative_to(folder).as_posix()}\n" for f in files]
    (folder / SUMS).write_text("".join(lines))


def checksum_problem(folder: Path) -> str | None:
    """What is wrong with a cached folder's files against its SHA256SUMS; None when all match."""
    folder = Path(folder)
    try:
        lines = (folder / SUMS).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return f"no readable {SUMS}"
    for line in lines:
        digest, _, rel = line.partition("  ")
        f = folder / rel
        if not f.is_file():
            return f"{rel} is missing"
        if _sha256(f) != digest:
            return f"{rel} does not match its checksum"
    return None


def verified_or_removed(folder: Path, what: str, log: Callable[[str], None]) -> bool:
    """True if the cached `folder` exists and matches its checksums; a corrupt one is removed with a
    warning through `log` (so the caller rebuilds it) and False is returned."""
    folder = Path(folder)
    if not folder.exists():
        return False
    problem = checksum_problem(folder)
    if problem is None:
        return True
    log(f"warning: corrupt cache {folder} ({what}: {problem}); rebuilding it")
    shutil.rmtree(folder, ignore_errors=True)
    return False


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock named after `path` (a hidden `.<name>.lock` beside it), so two processes that
    would build the same cache build it once: the second waits, then finds it built."""
    path = Path(path)
    lock = path.parent / f".{path.name}.lock"
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fh = open(lock, "a")  # noqa: SIM115 - held open for the whole block below
    except OSError as e:
        raise BadInput(f"{lock}: cannot write there ({e.strerror or e})") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
