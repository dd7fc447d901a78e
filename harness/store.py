"""SQLite results store: one `runs` row and its `metrics` rows per finished run.

A run is written in one transaction when it finishes, so a crash never leaves a half row; a
failed run is recorded with status 'failed' and its error. Per-run files (predictions,
embeddings) live in `<store folder>/<run id>/`. The schema below is what `harness.report`
reads; keep the two in step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import BadInput
from harness.fs import atomic_dir

if TYPE_CHECKING:
    import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    seed INTEGER NOT NULL,
    preset TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    config TEXT NOT NULL,
    code_version TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    seconds REAL NOT NULL,
    run_key TEXT NOT NULL,
    start TEXT NOT NULL DEFAULT 'source',
    uses_target_labels INTEGER NOT NULL DEFAULT 0,
    oracle INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    role TEXT NOT NULL DEFAULT 'method'
);
CREATE TABLE IF NOT EXISTS metrics (
    run TEXT NOT NULL REFERENCES runs(id),
    split TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    low REAL,
    high REAL,
    PRIMARY KEY (run, split, name)
);
CREATE INDEX IF NOT EXISTS runs_key ON runs(run_key, status);
"""

# PRAGMA user_version of the schema above; a store of a newer version is refused, not guessed at
SCHEMA_VERSION = 1

RUN_COLUMNS = ("id", "time", "task", "method", "seed", "preset", "fingerprint", "config", "code_version",
               "device", "status", "seconds", "run_key", "start", "uses_target_labels", "oracle", "error",
               "role")


@dataclass
class Metric:
    split: str          # hard_test | hard_pool | easy_val | ssl
    name: str           # auroc | tpr0 | tpr10 | accuracy | im | snd | auroc_sel_validator | ...
    value: float
    low: float | None = None
    high: float | None = None


@dataclass
class RunRecord:
    task: str
    method: str
    seed: int
    preset: str
    fingerprint: str
    config: dict
    code_version: str
    device: str
    run_key: str
    start: str = "source"
    uses_target_labels: bool = False
    oracle: bool = False
    role: str = "method"            # method | baseline | control | oracle (the method's declared role)
    status: str = "ok"
    seconds: float = 0.0
    error: str | None = None
    id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8])
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))


class Store:
    """The SQLite results store (WAL mode)."""

    def __init__(self, path: Path | str, create: bool = True) -> None:
        """Open (or, with `create`, make) the store; `create=False` also means read-only use."""
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise BadInput(f"--store {self.path}: folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise BadInput(f"--store {self.path}: is a folder, not a results store file")
        if not create and not self.path.is_file():
            raise BadInput(f"--store {self.path}: no such results store")
        if create and not (os.access(self.path.parent, os.W_OK)
                           and (not self.path.exists() or os.access(self.path, os.W_OK))):
            raise BadInput(f"--store {self.path}: read-only (runs cannot be recorded there)")
        try:
            with closing(self._connect()) as con, con:
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise BadInput(f"--store {self.path}: written by a newer harness (schema version "
                                   f"{version}; this one reads up to {SCHEMA_VERSION}); upgrade the harness")
                if version < SCHEMA_VERSION:
                    self._migrate(con)
        except sqlite3.OperationalError as e:
            raise BadInput(f"--store {self.path}: {_sqlite_problem(e)}") from None
        except sqlite3.DatabaseError as e:
            raise BadInput(f"--store {self.path}: not a readable results store ({e})") from None

    @staticmethod
    def _migrate(con: sqlite3.Connection) -> None:
        con.executescript(SCHEMA)
        have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        if "role" not in have:  # a store written before roles existed
            con.execute("ALTER TABLE runs ADD COLUMN role TEXT NOT NULL DEFAULT 'method'")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    @property
    def root(self) -> Path:
        """Folder beside the database that holds per-run folders and the stage cache."""
        return self.path.parent

    @property
    def cache(self) -> Path:
        """Folder of the cached SSL and source stages (shared by every run of this store)."""
        return self.root / "cache"

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def record(self, run: RunRecord, metrics: list[Metric]) -> str:
        """Write a run and all its metrics in one transaction; return the run id."""
        row = {k: getattr(run, k) for k in RUN_COLUMNS}
        row["config"] = json.dumps(run.config, sort_keys=True, default=str)
        row["uses_target_labels"] = int(run.uses_target_labels)
        row["oracle"] = int(run.oracle)
        try:
            with closing(self._connect()) as con, con:
                marks = ", ".join("?" * len(RUN_COLUMNS))
                con.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({marks})",
                            [row[k] for k in RUN_COLUMNS])
                con.executemany("INSERT INTO metrics (run, split, name, value, low, high) "
                                "VALUES (?, ?, ?, ?, ?, ?)",
                                [(run.id, m.split, m.name, _f(m.value), _f(m.low), _f(m.high))
                                 for m in metrics])
        except sqlite3.OperationalError as e:
            raise BadInput(f"--store {self.path}: run {run.id} not recorded: {_sqlite_problem(e)}") from None
        return run.id

    def export(self, run_id: str) -> tuple[dict, list[dict]]:
        """A run's row and metrics rows as plain dicts (what `adopt` takes in another store)."""
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            row = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            metrics = con.execute("SELECT * FROM metrics WHERE run = ?", (run_id,)).fetchall()
        if row is None:
            raise KeyError(run_id)
        return dict(row), [dict(m) for m in metrics]

    def adopt(self, row: dict, metrics: list[dict], files: dict[str, bytes]) -> str:
        """Record a run computed elsewhere (a Ray worker's scratch store) under its own id: its folder
        first, then its row, as `pipeline.run_method` does, so a row never points at a missing folder."""
        fields = {k: row[k] for k in RUN_COLUMNS}
        fields.update(config=json.loads(row["config"]), uses_target_labels=bool(row["uses_target_labels"]),
                      oracle=bool(row["oracle"]), seed=int(row["seed"]), seconds=float(row["seconds"]))
        rec = RunRecord(**fields)
        folder = self.run_dir(rec.id)
        if files:
            with atomic_dir(folder) as tmp:
                for name, data in files.items():
                    (tmp / name).write_bytes(data)
        try:
            return self.record(rec, [Metric(m["split"], m["name"], _nan(m["value"]), _nan(m["low"]),
                                            _nan(m["high"])) for m in metrics])
        except BaseException:
            if files:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def failed(self, run_id: str) -> bool:
        """Whether the run was recorded as failed."""
        with closing(self._connect()) as con:
            r = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(r and r[0] == "failed")

    def done(self, run_key: str) -> str | None:
        """Id of a finished ('ok') run with this key, for resuming sweeps."""
        with closing(self._connect()) as con:
            r = con.execute("SELECT id FROM runs WHERE run_key = ? AND status = 'ok' "
                            "ORDER BY time DESC LIMIT 1", (run_key,)).fetchone()
        return r[0] if r else None

    def problems(self) -> list[str]:
        """What is inconsistent in the store (empty when sound): SQLite's integrity and foreign-key
        checks, finished runs without metrics or without their folder."""
        with closing(self._connect()) as con:
            out = [r[0] for r in con.execute("PRAGMA integrity_check") if r[0] != "ok"]
            out += [f"metrics row of unknown run {r[0]}" for r in con.execute("PRAGMA foreign_key_check")]
            for (run,) in con.execute("SELECT id FROM runs WHERE status = 'ok' AND NOT EXISTS "
                                      "(SELECT 1 FROM metrics WHERE metrics.run = runs.id)"):
                out.append(f"run {run} has no metrics")
            ok = [r[0] for r in con.execute("SELECT id FROM runs WHERE status = 'ok'")]
        return out + [f"run {r} has no folder" for r in ok if not self.run_dir(r).is_dir()]

    def runs(self) -> pd.DataFrame:
        import pandas as pd  # on use: a process that only records runs need not import pandas

        with closing(self._connect()) as con:
            return pd.read_sql_query("SELECT * FROM runs ORDER BY time", con)

    def metrics(self) -> pd.DataFrame:
        import pandas as pd

        with closing(self._connect()) as con:
            return pd.read_sql_query("SELECT * FROM metrics", con)


def _sqlite_problem(e: sqlite3.OperationalError) -> str:
    """SQLite's own words for the environment faults a user can fix (read-only, full disk, locked)."""
    text = str(e)
    if "readonly" in text:
        return "read-only (runs cannot be recorded there)"
    if "full" in text:
        return "the disk is full"
    return text


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)


def _nan(x: float | None) -> float | None:
    """A metric read back from SQLite: NULL (None or pandas' NaN) stays None."""
    return None if x is None or math.isnan(x) else float(x)
