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


def _config(text: str) -> dict:
    """A run's stored config, parsed once ({} when unreadable: the report takes any store)."""
    try:
        cfg = json.loads(text)
    except (ValueError, TypeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _get(cfg: dict, *path: str) -> object:
    """cfg[path[0]][path[1]]…, None where a level is missing or not a mapping."""
    for key in path:
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg


def _card(cfg: dict, task: str) -> str:
    """The target card or set a run used (its name, without folder or .yaml), "" when unknown; with
    "from <source>" where the source is not the task's own, and "(image-only)" for runs without catalog
    features: each is a comparison of its own."""
    from harness.tasks import TASKS

    hard = _get(cfg, "data", "hard")
    if not hard:
        return ""
    easy = _set_name(_get(cfg, "data", "easy") or "")
    other = f" from {easy}" if easy and task in TASKS and easy != TASKS[task].easy else ""
    image_only = _get(cfg, "preset", "source", "use_catalog") is False
    return _set_name(hard) + other + (" (image-only)" if image_only else "")


def _set_name(spec: object) -> str:
    """A card by its name (`hard`, `cards/hard.yaml` -> hard); an image-set folder by its last two parts
    (`datasets/bologna/hard` -> bologna/hard), so an imported `hard` is not taken for the card."""
    p = Path(str(spec))
    if p.suffix in (".yaml", ".yml"):
        return p.stem
    named = [x for x in p.parts if x not in (p.anchor, "")]   # no root part ("/x" is x)
    return "/".join(named[-2:])


UNKNOWN_SHIFT = -1.0   # a card off the easy -> hard ladder (e.g. hard-clean, camera, an imported set)


def _shift(cfg: dict) -> float:
    """The card's position on the easy (0) -> hard (1) ladder, UNKNOWN_SHIFT when it has none."""
    try:
        shift = _get(cfg, "data", "shift")
        return UNKNOWN_SHIFT if shift is None else float(shift)
    except (ValueError, TypeError):
        return UNKNOWN_SHIFT


# Preset fields that do not change a result: the preset's name (a group key already), how a card or
# folder was spelt (the sets' fingerprints say what was used), generation workers, bootstrap draws.
NOT_SETUP = {"name", "data.easy", "data.hard", "data.workers", "n_boot"}


def _setup(cfg: dict) -> dict[str, str]:
    """What makes two runs comparable besides the card and the method, flattened: the preset's sections
    (backbone, budgets, sizes, selector) but `NOT_SETUP`, the precision and the two sets' contents."""
    parts = {"preset": _get(cfg, "preset") or {}, "precision": cfg.get("precision"),
             "easy set": str(_get(cfg, "data", "easy_fingerprint"))[:8],
             "hard set": str(_get(cfg, "data", "hard_fingerprint"))[:8],
             "features": _get(cfg, "data", "features"), "fov": _get(cfg, "data", "fov")}
    flat: dict[str, str] = {}

    def walk(prefix: str, v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        else:
            flat[prefix.removeprefix("preset.")] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    walk("", parts)
    return {k: v for k, v in flat.items() if k not in NOT_SETUP}


def _split_setups(runs: pd.DataFrame, cfgs: list[dict] | None = None) -> tuple[pd.Series, pd.Series]:
    """Card labels that keep different setups apart: where one card's runs differ in backbone, budget,
    precision, a set's contents or a card path of the same name, every setup is named by what differs
    (e.g. "hard [source.backbone=resnet18]"), so a re-run with another setup never replaces, or is
    paired with, the runs of another. Returns the labels and each run's setup tag alone ("" if none)."""
    setups = [_setup(c) for c in (cfgs if cfgs is not None else map(_config, runs["config"]))]
    cards, tags = runs["card"].copy(), pd.Series("", index=runs.index)
    for idx in runs.groupby(GROUP, sort=False).groups.values():
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


def _as_json(value: object) -> str:
    """A recorded mapping (`--hp` overrides, near-leak columns) as sorted JSON; "{}" when absent."""
    return json.dumps(value if isinstance(value, dict) else {}, sort_keys=True)


def _source_steps(cfg: dict) -> float:
    """The source stage's step budget (the oracle's own), NaN when not recorded."""
    try:
        return float(_get(cfg, "preset", "source", "steps"))
    except (ValueError, TypeError):
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
    cfgs = [_config(c) for c in runs["config"]]
    runs["shift"] = [_shift(c) for c in cfgs]
    runs["card"] = [_card(c, t) for c, t in zip(cfgs, runs["task"])]
    runs["card"], runs["setup"] = _split_setups(runs, cfgs)
    runs["overrides"] = [_as_json(c.get("hp_overrides")) for c in cfgs]
    runs["source_steps"] = [_source_steps(c) for c in cfgs]
    runs["near_leaks"] = [_as_json(_get(c, "data", "near_leaks")) for c in cfgs]
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
