"""Decide which figures a group gets, gather their inputs from the run folders, and write the PNGs.

Every figure either lands as a PNG or comes back as a note saying which input was missing, so a
store of failed or old runs still gives a complete (if thinner) report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report import pictures, plots, roles
from harness.report.load import Selection, arrays, predictions
from harness.report.style import save
from harness.report.tables import HEADLINE, label


@dataclass
class Fig:
    """A figure in the report: its file (relative to the report folder) or, when skipped, why."""

    title: str
    file: str | None = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _runs_of(ok: pd.DataFrame, r: pd.Series) -> pd.DataFrame:
    mask = ((ok["task"] == r["task"]) & (ok["preset"] == r["preset"]) & (ok["card"] == r["card"])
            & (ok["shift"] == r["shift"])
            & (ok["method"] == r["method"]))
    return ok[mask].sort_values("seed")


def best_unsupervised(group: pd.DataFrame) -> pd.Series | None:
    """Highest-AUROC adaptation method (role "method") that uses no hard labels."""
    g = group[roles.unsupervised(group) & np.isfinite(group[HEADLINE])]
    return g.iloc[0] if len(g) else None


def _missing(what: str, lacking: list[str]) -> list[str]:
    return [f"No {what} for: {', '.join(lacking)}."] if lacking else []


def roc_figs(sel: Selection, group: pd.DataFrame, ok: pd.DataFrame, colours: dict, out: Path,
             stem: str) -> list[Fig]:
    """The (macro) ROC figure and, for multi-class groups, one ROC panel per class: each run's
    predictions are read once for both."""
    fig = Fig("ROC curves (hard test)")
    curves: dict[str, list[np.ndarray]] = {}
    by_class: dict[str, list] = {}
    lacking, multiclass, negatives = [], False, []
    for _, r in group.iterrows():
        for _, run in _runs_of(ok, r).iterrows():
            pred = predictions(sel, run["id"])
            got = plots.roc_on_grid(pred) if pred is not None else None
            if got is None:
                lacking.append(f"{r['method']} seed {run['seed']}")
                continue
            multiclass |= "score" not in pred.columns
            curves.setdefault(r["method"], []).append(got[0])
            negatives.append(got[1])
            per_class = plots.roc_per_class(pred)
            if per_class is not None:
                by_class.setdefault(r["method"], []).append(per_class)
    if not curves:
        fig.notes = ["Skipped: no run in this group has usable hard-test predictions (predictions.parquet)."]
        return [fig]
    fig.notes = _missing("usable hard-test predictions.parquet", lacking)
    png = plots.roc(group, curves, colours, multiclass, negatives=min(negatives))
    fig.file = save(png, out / f"{stem}-roc.png").name
    fig.caption = ("Mean true-positive rate on a common false-positive grid over seeds, band = min–max "
                   "over seeds; inset: the same on a log-FPR axis (1e-3 to 1).")
    return [fig] + ([_class_roc_fig(group, by_class, colours, out, stem)] if by_class else [])


def _class_roc_fig(group: pd.DataFrame, curves: dict[str, list], colours: dict, out: Path, stem: str) -> Fig:
    """One ROC panel per class, named by the group's task where it declares its classes."""
    from harness.tasks import TASKS

    k = len(next(iter(curves.values()))[0])
    task = TASKS.get(str(group["task"].iloc[0]))
    known = task is not None and len(task.classes) == k
    classes = list(task.classes) if known else [str(i) for i in range(k)]
    fig = Fig("ROC per class (hard test)")
    fig.file = save(plots.class_roc(group, curves, colours, classes), out / f"{stem}-roc-classes.png").name
    fig.caption = "One-vs-rest ROC of each class, mean over seeds."
    return fig


def auroc_fig(group: pd.DataFrame, colours: dict, out: Path, stem: str) -> Fig:
    fig = Fig("AUROC by method")
    if not np.isfinite(group[HEADLINE]).any():
        fig.notes = ["Skipped: no hard-test AUROC recorded in this group."]
        return fig
    fig.file = save(plots.auroc_bars(group, colours), out / f"{stem}-auroc.png").name
    base = roles.reference(group, roles.BASELINE)
    shown = base is not None and np.isfinite(base[HEADLINE])
    fig.caption = (f"Dashed line: {base['method']} (baseline). " if shown else "") + "n = seeds."
    return fig


def gap_fig(group: pd.DataFrame, colours: dict, out: Path, stem: str) -> Fig:
    fig = Fig("Gap closed by method")
    if not np.isfinite(group["gap_closed"]).any():
        base, top = group["gap_baseline"].iloc[0], group["gap_oracle"].iloc[0]
        need = [what for what, name in (("baseline", base), ("oracle", top)) if not name]
        why = (f"no {' or '.join(need)} run" if need
               else f"the {base} (baseline) → {top} (oracle) gap is not significantly above 0, or unpaired")
        fig.notes = [(f"Skipped: gap closed needs a baseline and an oracle result, by stored role "
                      f"({why} in this group).")]
        return fig
    fig.file = save(plots.gap_bars(group, colours), out / f"{stem}-gap.png").name
    fig.caption = ("Whiskers: 95% paired-bootstrap interval of the ratio (images and seeds resampled once "
                   "for the method, the baseline and the oracle, so it carries all three's uncertainty).")
    return fig


def _first_with(sel: Selection, runs: pd.DataFrame, name: str, needed: tuple[str, ...]):
    for _, run in runs.iterrows():
        z = arrays(sel, run["id"], name, needed)
        if z is not None:
            return run, z
    return None, None


def embedding_fig(sel: Selection, group: pd.DataFrame, ok: pd.DataFrame, out: Path, stem: str) -> Fig:
    base, best = roles.reference(group, roles.BASELINE), best_unsupervised(group)
    fig = Fig(f"Embeddings: {'baseline' if base is None else base['method']} vs best unsupervised method")
    picks = ([base] if base is not None else []) + ([best] if best is not None else [])
    panels = []
    lacking = []
    for r in picks:
        run, z = _first_with(sel, _runs_of(ok, r), "embeddings.npz", ("features", "domain", "label"))
        if z is None:
            lacking.append(r["method"])
        else:
            panels.append((f"{label(r)}, seed {run['seed']}", z))
    if not picks:
        fig.notes = ["Skipped: no baseline run and no unsupervised method in this group."]
    elif not panels:
        fig.notes = [f"Skipped: no usable embeddings.npz for {' or '.join(lacking)}."]
    if not panels:
        return fig
    fig.notes = _missing("usable embeddings.npz", lacking)
    fig.file = save(pictures.embedding(panels), out / f"{stem}-embedding.png").name
    fig.caption = ("PCA of the penultimate-layer features (up to 2000 points, both domains in the same "
                   "proportion as stored). Overlapping domain clouds mean the features are domain-invariant.")
    return fig


def extremes_fig(sel: Selection, group: pd.DataFrame, ok: pd.DataFrame, out: Path, stem: str) -> Fig:
    fig = Fig("Highest- and lowest-ranked hard-test images")
    best = best_unsupervised(group)
    order = list(group.iterrows())
    if best is not None:
        order = [(None, best)] + [(i, r) for i, r in order if r["method"] != best["method"]]
    lacking = []
    for _, r in order:
        run, z = _first_with(sel, _runs_of(ok, r), "extremes.npz", ("images", "score", "label"))
        if z is None or np.asarray(z["images"]).ndim not in (3, 4) or len(z["images"]) == 0:
            lacking.append(r["method"])
            continue
        title = f"{label(r)}, seed {run['seed']}"
        fig.file = save(pictures.contact_sheet(z, title), out / f"{stem}-extremes.png").name
        why = " (best unsupervised method)" if best is not None and r is best else ""
        fig.caption = (f"{title}{why}. Bands g, r, i shown as blue, green, red with an asinh stretch "
                       "per image.")
        if lacking:
            fig.notes = [f"Shown for {r['method']} because {', '.join(lacking)} has no usable extremes.npz."]
        return fig
    fig.notes = ["Skipped: no run in this group has a usable extremes.npz."]
    return fig


def group_figures(sel: Selection, group: pd.DataFrame, ok: pd.DataFrame, colours: dict, out: Path,
                  title: str) -> list[Fig]:
    stem = slug(title)
    return [*roc_figs(sel, group, ok, colours, out, stem), auroc_fig(group, colours, out, stem),
            gap_fig(group, colours, out, stem), embedding_fig(sel, group, ok, out, stem),
            extremes_fig(sel, group, ok, out, stem)]


def shift_figures(summary: pd.DataFrame, colours: dict, out: Path) -> list[Fig]:
    """AUROC vs data.shift for each (task, preset, setup) that was run at several shifts."""
    figs = []
    for (task, preset, setup), rows in summary[summary["shift"] >= 0].groupby(["task", "preset", "setup"]):
        if rows["shift"].nunique() < 2:   # cards off the easy -> hard ladder have no shift value
            continue
        rows = rows[np.isfinite(rows[HEADLINE])]
        f = Fig(f"AUROC vs shift · {task} · {preset}" + (f" · {setup}" if setup else ""))
        png = plots.auroc_vs_shift(rows, colours)
        stem = slug(f"{task}-{preset}" + (f"-{setup}" if setup else ""))
        f.file = save(png, out / f"{stem}-shift.png").name
        f.caption = "Mean hard-test AUROC per shift value; error bars as in the tables."
        figs.append(f)
    return figs


def suite_figures(summary: pd.DataFrame, out: Path) -> list[tuple[Fig, list[str]]]:
    """Per (task, preset) run on several cards: the method x card heatmap of paired Δ vs the baseline,
    and one verdict line per card, written from that card's numbers."""
    from harness.report.compare import verdict

    found = []
    for (task, preset), rows in summary.groupby(["task", "preset"], sort=False):
        if rows["card"].nunique() < 2:
            continue
        rows = rows[rows["role"] != roles.BASELINE]
        if rows.empty:   # e.g. one card run with and without its catalog, by the baseline alone
            continue
        f = Fig(f"Shift suite · {task} · {preset}")
        f.file = save(plots.suite_heatmap(rows), out / f"{slug(task + '-' + preset)}-suite.png").name
        f.caption = ("Mean over seeds of the paired Δ hard-test AUROC against each card's own baseline; "
                     "coloured only where the paired 95% interval excludes 0.")
        mine = summary[(summary["task"] == task) & (summary["preset"] == preset)]
        lines = [verdict(g, card) for card, g in mine.groupby("card", sort=False)]
        found.append((f, lines))
    return found
