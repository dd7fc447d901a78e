"""What each run is for, read only from the flags stored with it, never from its method's name.

Every method class declares a `role` ("method" | "baseline" | "control" | "oracle") that the
pipeline writes to `runs.role`; `oracle` and `uses_target_labels` say which labels it saw. The
report takes its references from these: gap closed runs from the group's baseline to its oracle,
baselines and oracles get the grey colours, and "best unsupervised method" skips both.
"""

from __future__ import annotations

import pandas as pd

METHOD, BASELINE, CONTROL, ORACLE = "method", "baseline", "control", "oracle"
NOT_A_METHOD = (BASELINE, CONTROL, ORACLE)


def normalise(runs: pd.DataFrame) -> pd.DataFrame:
    """Give every run a role: a store written before `role` existed (or a run with the oracle flag
    and the default role) counts as "oracle" where `oracle` is set, else "method"."""
    runs = runs.copy()
    if "role" not in runs.columns:
        runs["role"] = METHOD
    runs["role"] = runs["role"].fillna(METHOD).astype(str)
    runs.loc[runs["oracle"].astype(bool) & (runs["role"] == METHOD), "role"] = ORACLE
    return runs


def reference(group: pd.DataFrame, role: str) -> pd.Series | None:
    """The group's row with this role, or None; should several rows have it, the first by method name,
    so every table and figure of the group picks the same one whatever the frame's order."""
    rows = group[group["role"] == role]
    return rows.sort_values("method", kind="stable").iloc[0] if len(rows) else None


def unsupervised(rows: pd.DataFrame) -> pd.Series:
    """Mask of the rows that are adaptation methods using no hard labels."""
    return ~rows["role"].isin(NOT_A_METHOD) & ~rows["oracle"] & ~rows["uses_target_labels"]


def methods_with(rows: pd.DataFrame, role: str) -> list[str]:
    """Sorted names of the methods that have this role somewhere in `rows`."""
    return sorted(set(rows.loc[rows["role"] == role, "method"]))
