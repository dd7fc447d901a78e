"""Metric figures: ROC curves from the saved predictions, AUROC and gap closed by method, AUROC vs shift.

Each function takes already-summarised numbers and returns a matplotlib Figure (no pyplot, so
no global state and no display backend is needed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from harness.report import roles
from harness.report.style import BASELINE_GREY, ORACLE_GREY, line_style, style
from harness.report.tables import HEADLINE, label

FPR_GRID = np.unique(np.concatenate([[0.0], np.logspace(-4, 0, 240), np.linspace(0, 1, 201)]))


def _step_tpr(y: np.ndarray, s: np.ndarray) -> np.ndarray | None:
    """TPR on FPR_GRID for one binary problem; the ROC is a step function, so take the last step at or
    below each FPR (linear interpolation would credit thresholds that do not exist)."""
    if y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return tpr[np.searchsorted(fpr, FPR_GRID, side="right") - 1]


def roc_on_grid(pred: pd.DataFrame, split: str = "hard_test") -> tuple[np.ndarray, int] | None:
    """(TPR at FPR_GRID, number of negatives) for one run: binary P(lens), or the macro one-vs-rest
    mean for multi-class (negatives = the smallest one-vs-rest negative count)."""
    p = pred[pred["split"] == split]
    if p.empty:
        return None
    y = p["label"].to_numpy(dtype=int)
    if "score" in p.columns:
        t = _step_tpr(y == 1, p["score"].to_numpy(dtype=float))
        return None if t is None else (t, int((y != 1).sum()))
    cols = sorted((c for c in p.columns if c.startswith("score_")), key=lambda c: int(c.split("_")[1]))
    curves = [_step_tpr(y == k, p[c].to_numpy(dtype=float)) for k, c in enumerate(cols)]
    curves = [c for c in curves if c is not None]
    neg = min(int((y != k).sum()) for k in range(len(cols))) if cols else 0
    return (np.mean(curves, axis=0), neg) if curves else None


def roc_per_class(pred: pd.DataFrame, split: str = "hard_test") -> list[np.ndarray | None] | None:
    """One-vs-rest TPR on FPR_GRID for each class of a multi-class run (None for a binary run)."""
    p = pred[pred["split"] == split]
    cols = sorted((c for c in p.columns if c.startswith("score_")), key=lambda c: int(c.split("_")[1]))
    if p.empty or not cols:
        return None
    y = p["label"].to_numpy(dtype=int)
    return [_step_tpr(y == k, p[c].to_numpy(dtype=float)) for k, c in enumerate(cols)]


def class_roc(group: pd.DataFrame, curves: dict[str, list[list]], colours: dict,
              classes: list[str]) -> Figure:
    """One panel per class: each method's one-vs-rest ROC, mean over seeds."""
    with style():
        fig = Figure(figsize=(4.0 * len(classes) + 2.4, 4.2))
        axes = fig.subplots(1, len(classes), squeeze=False)[0]
        for k, (ax, c) in enumerate(zip(axes, classes)):
            for _, r in group.iterrows():
                runs = [x[k] for x in curves.get(r["method"], []) if x[k] is not None]
                if runs:
                    ax.plot(FPR_GRID, np.vstack(runs).mean(0), color=colours[r["method"]], lw=1.6,
                            ls=line_style(r["oracle"], r["uses_target_labels"]),
                            label=label(r) if k == len(classes) - 1 else None)
            ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", zorder=0)
            ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate", title=f"{c} vs rest")
        axes[0].set_ylabel("true-positive rate")
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8)
    return fig


def roc(group: pd.DataFrame, curves: dict[str, list[np.ndarray]], colours: dict, multiclass: bool,
        negatives: int = 0) -> Figure:
    """Mean ROC per method with a min–max band over seeds, and a log-FPR inset for the low-FP regime.

    The inset greys out FPR below one false positive (1 / negatives): the test set cannot resolve it.
    """
    with style():
        fig = Figure(figsize=(9.2, 6.2))
        ax = fig.add_subplot()
        ins = ax.inset_axes([0.43, 0.07, 0.54, 0.46], zorder=5)
        for _, r in group.iterrows():
            runs = curves.get(r["method"])
            if not runs:
                continue
            t = np.vstack(runs)
            ls = line_style(r["oracle"], r["uses_target_labels"])
            seeds = f"  ({len(runs)} seeds)" if len(runs) > 1 else ""
            name = f"{label(r)}  AUROC {r[HEADLINE]:.3f}{seeds}"
            for a in (ax, ins):
                a.plot(FPR_GRID, t.mean(0), ls=ls, lw=1.8, color=colours[r["method"]],
                       label=name if a is ax else None)
                if len(runs) > 1:
                    a.fill_between(FPR_GRID, t.min(0), t.max(0), color=colours[r["method"]], alpha=0.15, lw=0)
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", zorder=0)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate", ylabel="true-positive rate")
        what = "macro one-vs-rest ROC" if multiclass else "ROC"
        ax.set_title(f"Hard-test {what}: mean over seeds, band = min–max", loc="left")
        ins.set_xscale("log")
        ins.set(xlim=(1e-3, 1), ylim=(0, 1.01))
        if negatives and 1 / negatives > 1e-3:
            ins.axvspan(1e-3, 1 / negatives, color="0.85", alpha=0.6, lw=0, zorder=0)
            ins.text(1.1e-3, 0.97, "< 1 false positive", fontsize=7, color="0.35", va="top")
        ins.set_facecolor("white")
        ins.set_title("log FPR (low false-positive regime)", fontsize=8)
        ins.tick_params(labelsize=7)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def _hbar_setup(group: pd.DataFrame) -> tuple[Figure, object, np.ndarray]:
    fig = Figure(figsize=(8.2, 0.42 * len(group) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(group))[::-1]
    ax.set_yticks(y, [f"{label(r)}  (n={r['n_seeds']})" for _, r in group.iterrows()])
    ax.set_ylim(-0.7, len(group) - 0.3)
    ax.grid(axis="y", visible=False)
    return fig, ax, y


def auroc_bars(group: pd.DataFrame, colours: dict) -> Figure:
    """Hard-test AUROC per method with its 95% interval; filled dots for intervals over seeds, a dashed
    line at the group's baseline (its baseline-role run)."""
    g = group[np.isfinite(group[HEADLINE])]
    with style():
        fig, ax, y = _hbar_setup(g)
        for yi, (_, r) in zip(y, g.iterrows()):
            m, lo, hi = r[HEADLINE], r[f"{HEADLINE}.low"], r[f"{HEADLINE}.high"]
            err = [[m - lo], [hi - m]] if np.isfinite(lo) and np.isfinite(hi) else None
            filled = r["interval"] == "over seeds"
            ax.errorbar([m], [yi], xerr=err, fmt="o", ms=7, capsize=4, lw=1.6, color=colours[r["method"]],
                        mfc=colours[r["method"]] if filled else "white", mew=1.6)
            ax.annotate(f"{m:.3f}", (hi if err else m, yi), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8, color="0.3")
        base = roles.reference(group, roles.BASELINE)
        if base is not None and np.isfinite(base[HEADLINE]):
            ax.axvline(base[HEADLINE], color=BASELINE_GREY, ls="--", lw=1, zorder=0)
        ax.set_xlabel("hard-test AUROC (95% interval; filled = over seeds, "
                      "open = bootstrap over test images)")
        ax.set_title("AUROC by method", loc="left")
        lo = np.nanmin(g[[HEADLINE, f"{HEADLINE}.low"]].to_numpy())
        ax.set_xlim(max(0.0, lo - 0.05), 1.0 + 0.04)
    return fig


def gap_bars(group: pd.DataFrame, colours: dict) -> Figure:
    """Share of the baseline→oracle AUROC gap each method closes; 0% = the group's baseline-role run,
    100% = its oracle-role run (named on the axis)."""
    g = group[np.isfinite(group["gap_closed"])]
    with style():
        fig, ax, y = _hbar_setup(g)
        vals = g["gap_closed"].to_numpy() * 100
        lo, hi = g["gap_closed.low"].to_numpy() * 100, g["gap_closed.high"].to_numpy() * 100
        has = np.isfinite(lo) & np.isfinite(hi)
        ax.barh(y, vals, color=[colours[m] for m in g["method"]], height=0.6, alpha=0.85)
        ax.errorbar(vals[has], y[has], xerr=[vals[has] - lo[has], hi[has] - vals[has]], fmt="none",
                    ecolor="0.25", capsize=3, lw=1)
        ax.axvline(0, color=BASELINE_GREY, lw=1)
        ax.axvline(100, color=ORACLE_GREY, lw=1, ls="--")
        base, top = g["gap_baseline"].iloc[0], g["gap_oracle"].iloc[0]
        ax.set_xlabel(f"gap closed (%): 0 = {base}, 100 = {top}; whiskers: the ratio's 95% paired interval")
        ax.set_title("Baseline → oracle gap closed", loc="left")
    return fig


def auroc_vs_shift(rows: pd.DataFrame, colours: dict) -> Figure:
    """Mean hard-test AUROC against the data shift parameter, one line per method."""
    with style():
        fig = Figure(figsize=(8.6, 5.2))
        ax = fig.add_subplot()
        first = rows[rows["shift"] == rows["shift"].min()].sort_values(HEADLINE, ascending=False)
        order = list(first["method"]) + sorted(set(rows["method"]) - set(first["method"]))
        step = np.diff(np.sort(rows["shift"].unique())).min() * 0.12 / max(1, len(order) - 1)
        for i, method in enumerate(order):
            g = rows[rows["method"] == method].sort_values("shift")
            r0 = g.iloc[0]
            lo, hi = g[f"{HEADLINE}.low"].to_numpy(), g[f"{HEADLINE}.high"].to_numpy()
            m = g[HEADLINE].to_numpy()
            err = np.where(np.isfinite([lo, hi]), [m - lo, hi - m], 0)
            dodge = (i - (len(order) - 1) / 2) * step  # keep error bars of methods apart
            ax.errorbar(g["shift"] + dodge, m, yerr=err, marker="o", ms=5, capsize=3, lw=1.6,
                        ls=line_style(r0["oracle"], r0["uses_target_labels"]),
                        color=colours[method], label=label(r0))
        ax.set(xlabel="data shift (config data.shift)", ylabel="hard-test AUROC (mean, 95% interval)")
        ax.set_title("AUROC vs domain shift", loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def suite_heatmap(rows: pd.DataFrame) -> Figure:
    """Method x card, coloured by the paired Δ AUROC vs the baseline; grey where the 95% interval
    includes 0 (no claim either way), blank where the method has no paired runs on that card."""
    import seaborn as sns

    d = rows.pivot_table(index="method", columns="card", values="delta_base", aggfunc="first")
    lo = rows.pivot_table(index="method", columns="card", values="delta_base.low", aggfunc="first")
    hi = rows.pivot_table(index="method", columns="card", values="delta_base.high", aggfunc="first")
    lo, hi = lo.reindex_like(d), hi.reindex_like(d)
    d = d.loc[d.abs().max(axis=1).sort_values(ascending=False).index]   # strongest effects on top
    lo, hi = lo.loc[d.index], hi.loc[d.index]
    sig = ((lo > 0) | (hi < 0)).to_numpy()
    finite = np.isfinite(d.to_numpy())
    text = d.map(lambda v: "" if not np.isfinite(v) else f"{v:+.3f}")
    span = max(0.01, float(np.nanmax(np.abs(d.to_numpy()))) if finite.any() else 0.01)
    with style():
        fig = Figure(figsize=(1.6 + 1.5 * d.shape[1], 0.9 + 0.42 * d.shape[0]))
        ax = fig.add_subplot()
        sns.heatmap(d, mask=~(sig & finite), cmap="RdBu", center=0, vmin=-span, vmax=span, annot=text, fmt="",
                    linewidths=0.5, linecolor="white", ax=ax,
                    cbar_kws={"label": "Δ AUROC vs baseline (paired)"})
        sns.heatmap(d.where(np.isfinite(d), 0), mask=(sig | ~finite), cmap=[BASELINE_GREY], annot=text,
                    fmt="",
                    cbar=False, linewidths=0.5, linecolor="white", ax=ax, annot_kws={"color": "white"})
        names = {r["method"]: label(r) for _, r in rows.iterrows()}   # † / ‡ for label-using rows
        ax.set_yticklabels([names.get(t.get_text(), t.get_text()) for t in ax.get_yticklabels()], rotation=0)
        ax.set(xlabel="target card", ylabel="")
        ax.set_title("Δ AUROC vs each card's baseline", loc="left")
    return fig
