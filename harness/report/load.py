"""Read the results store and the per-run folders into pandas, and nothing else.

The report depends only on the store's schema (`harness.store`), so it can summarise a store
written by any version of the pipeline; missing per-run files are reported, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import BadInput
from harness.report import roles
from harness.store import Store

GROUP = ["task", "preset", "card", "shift"]   # a card: the target domain a run adapted to
CARRIED = ("base_method", "overrides", "source_steps", "setup", "near_leaks")   # from a row's latest run


@dataclass
class Selection:
    """The runs a report covers: `runs` (one row per run, plus a `shift` column) and their metrics."""

    store_path: Path
    root: Path
    runs: pd.DataFrame
    metrics: pd.DataFrame

    @property
    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id


def _card(config: str) -> str:
    """The target card or set a run used (its name, without folder or .yaml), "" when unknown;
    marked "(image-only)" for runs without catalog features, which form their own comparison."""
    try:
        cfg = json.loads(config)
        hard = cfg.get("data", {}).get("hard")
        image_only = cfg.get("preset", {}).get("source", {}).get("use_catalog") is False
    except (ValueError, TypeError, AttributeError):
        return ""
    if not hard:
        return ""
    return Path(str(hard)).stem + (" (image-only)" if image_only else "")


UNKNOWN_SHIFT = -1.0   # a card off the easy -> hard ladder (e.g. hard-clean, camera, an imported set)


def _shift(config: str) -> float:
    """The card's position on the easy (0) -> hard (1) ladder, UNKNOWN_SHIFT when it has none."""
    try:
        shift = json.loads(config).get("data", {}).get("shift")
        return UNKNOWN_SHIFT if shift is None else float(shift)
    except (ValueError, TypeError, AttributeError):
        return UNKNOWN_SHIFT


# Preset fields that do not change a result: the preset's name (a group key already), how a card or
# folder was spelt (the sets' fingerprints say what was used), generation workers, bootstrap draws.
NOT_SETUP = {"name", "data.easy", "data.hard", "data.workers", "n_boot"}


def _setup(config: str) -> dict[str, str]:
    """What makes two runs comparable besides the card and the method, flattened: the preset's sections
    (backbone, budgets, sizes, selector) but `NOT_SETUP`, the precision and the two sets' contents."""
    try:
        cfg = json.loads(config)
        data = cfg.get("data", {})
        parts = {"preset": cfg.get("preset", {}), "precision": cfg.get("precision"),
                 "easy set": str(data.get("easy_fingerprint"))[:8],
                 "hard set": str(data.get("hard_fingerprint"))[:8],
                 "features": data.get("features"), "fov": data.get("fov")}
    except (ValueError, TypeError, AttributeError):
        return {}
    flat: dict[str, str] = {}

    def walk(prefix: str, v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            flat[prefix.removeprefix("preset.")] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    walk("", parts)
    return {k: v for k, v in flat.items() if k not in NOT_SETUP}


def _split_setups(runs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Card labels that keep different setups apart: where one card's runs differ in backbone, budget,
    precision, a set's contents or a card path of the same name, every setup is named by what differs
    (e.g. "hard [source.backbone=resnet18]"), so a re-run with another setup never replaces, or is
    paired with, the runs of another. Returns the labels and each run's setup tag alone ("" if none)."""
    setups = [_setup(c) for c in runs["config"]]
    cards, tags = runs["card"].copy(), pd.Series("", index=runs.index)
    for idx in runs.groupby(["task", "preset", "card", "shift"], sort=False).groups.values():
        mine = [setups[runs.index.get_loc(i)] for i in idx]
        done = [m for i, m in zip(idx, mine) if runs.at[i, "status"] == "ok"]   # failed ones rename nothing
        keys = sorted(k for k in set().union(*done) if len({m.get(k) for m in done}) > 1) if done else []
        if not keys:
            continue
        for i, m in zip(idx, mine):
            shown = [f"{k}={m.get(k, 'null')}" for k in keys[:3]]
            if len(keys) > 3:   # the rest as a digest, so two setups never share a label
                shown.append("#" + hashlib.sha1(json.dumps(m, sort_keys=True).encode()).hexdigest()[:6])
            tags[i] = f"[{', '.join(shown)}]"
            cards[i] = f"{cards[i]} {tags[i]}".lstrip()
    return cards, tags


def _overrides(config: str) -> str:
    """A run's `--hp` overrides that differ from its method's defaults, as sorted JSON ("{}": none)."""
    try:
        over = json.loads(config).get("hp_overrides") or {}
    except (ValueError, TypeError, AttributeError):
        return "{}"
    return json.dumps(over if isinstance(over, dict) else {}, sort_keys=True)


def _near_leaks(config: str) -> str:
    """The model-input columns a run recorded as close to the leak threshold, as sorted JSON."""
    try:
        near = json.loads(config)["data"].get("near_leaks") or {}
    except (ValueError, TypeError, KeyError, AttributeError):
        return "{}"
    return json.dumps(near if isinstance(near, dict) else {}, sort_keys=True)


def _source_steps(config: str) -> float:
    """The source stage's step budget (the oracle's own), NaN when not recorded."""
    try:
        return float(json.loads(config)["preset"]["source"]["steps"])
    except (ValueError, TypeError, KeyError):
        return math.nan


def _ablation(overrides: str) -> str:
    """" [key=value, …]" for a run with overrides (its method's row is then an ablation of its own,
    never a replacement of the default run), "" otherwise."""
    over = json.loads(overrides)
    return f" [{', '.join(f'{k}={over[k]}' for k in sorted(over))}]" if over else ""


def load(store_path: Path | str, task: str | None = None, preset: str | None = None) -> Selection:
    """Open the store read-only in spirit and select runs; bad input raises BadInput with one line."""
    store_path = Path(store_path)
    if not store_path.is_file():
        raise BadInput(f"--store {store_path}: no such results store")
    store = Store(store_path, create=False)
    runs, metrics = store.runs(), store.metrics()
    if not (runs["status"] == "ok").any():
        raise BadInput(f"store {store_path} holds no finished runs")
    for col, default in (("start", "source"), ("uses_target_labels", 0), ("oracle", 0), ("error", None)):
        if col not in runs.columns:  # a store written before the column existed
            runs[col] = default
    runs["shift"] = [_shift(c) for c in runs["config"]]
    runs["card"] = [_card(c) for c in runs["config"]]
    runs["card"], runs["setup"] = _split_setups(runs)
    runs["overrides"] = [_overrides(c) for c in runs["config"]]
    runs["source_steps"] = [_source_steps(c) for c in runs["config"]]
    runs["near_leaks"] = [_near_leaks(c) for c in runs["config"]]
    runs["base_method"] = runs["method"]
    runs["method"] = runs["method"] + [_ablation(o) for o in runs["overrides"]]
    for col in ("oracle", "uses_target_labels"):
        runs[col] = runs[col].fillna(0).astype(int).astype(bool)
    runs = roles.normalise(runs)
    runs["seconds"] = pd.to_numeric(runs["seconds"], errors="coerce")
    if task is not None:
        if task not in set(runs["task"]):
            have = ", ".join(sorted(set(runs["task"])))
            raise BadInput(f"no runs for task '{task}' (store has: {have})")
        runs = runs[runs["task"] == task]
    if preset is not None:
        if preset not in set(runs["preset"]):
            have = ", ".join(sorted(set(runs["preset"])))
            raise BadInput(f"no runs for preset '{preset}' (store has: {have})")
        runs = runs[runs["preset"] == preset]
    if not (runs["status"] == "ok").any():
        what = " and ".join(f"{k} '{v}'" for k, v in (("task", task), ("preset", preset)) if v is not None)
        raise BadInput(f"store {store_path} holds no finished runs for {what}")
    runs = runs.reset_index(drop=True)
    metrics = metrics[metrics["run"].isin(set(runs["id"]))].reset_index(drop=True)
    return Selection(store_path=store_path, root=store.root, runs=runs, metrics=metrics)


def latest_ok(sel: Selection) -> pd.DataFrame:
    """One finished run per (group, method, seed): the latest, so a re-run replaces an older result."""
    ok = sel.ok.sort_values("time")
    return ok.drop_duplicates(GROUP + ["method", "seed"], keep="last").reset_index(drop=True)


def predictions(sel: Selection, run_id: str) -> pd.DataFrame | None:
    """A run's predictions, or None when the file is missing or unreadable."""
    path = sel.run_dir(run_id) / "predictions.parquet"
    if not path.is_file():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - any unreadable file is simply "missing" for the report
        return None
    if not {"split", "label"} <= set(df.columns) or not any(c.startswith("score") for c in df.columns):
        return None
    return df


def arrays(sel: Selection, run_id: str, name: str, needed: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Arrays of a run's `.npz` file, or None when missing, unreadable or lacking `needed` keys."""
    path = sel.run_dir(run_id) / name
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception:  # noqa: BLE001
        return None
    return out if all(k in out for k in needed) else None
