"""Summarise runs into one row per method, and render that summary as Markdown, HTML or text.

Numbers are computed once (`summarise`); every renderer formats that one frame, so views agree.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
from scipy import stats

from harness.report import compare, roles
from harness.report.load import CARRIED, GROUP, Selection, latest_ok

HEADLINE = "hard_test.auroc"
OVER_SEEDS = "over seeds"
BOOTSTRAP = "bootstrap over test images"
FOLDS = "t-interval over 5 folds"
ORACLE_MARK, LABELS_MARK = "†", "‡"
PRESET_ORDER = {"full": 0, "demo": 1, "smoke": 2}  # biggest (most trustworthy) runs first
SPLIT_ORDER = {"hard_test": 0, "easy_val": 1, "hard_pool": 2, "ssl": 3}



def legend(rows: pd.DataFrame) -> list[str]:
    """The notes under a table of `rows` (one group or the whole summary), naming the reference runs
    that gap closed used there."""
    base = sorted(set(rows["gap_baseline"]) - {""}) or ["none"]
    top = sorted(set(rows["gap_oracle"]) - {""}) or ["none"]
    ssl_real = "ssl-real" in set(rows.get("task", []))
    folds = " (ssl-real: the labels of its training folds)" if ssl_real else ""
    return [
        (f"{ORACLE_MARK} oracle: trained on the hard domain's labels; {LABELS_MARK} uses the 20% labelled "
         f"hard split{folds}. Both use hard labels — not an unsupervised result."),
        ("Intervals are 95%: a t-interval over per-seed values when a method has 3 or more seeds "
         f"(\"{OVER_SEEDS}\"), otherwise the mean of the per-run bootstrap intervals (\"{BOOTSTRAP}\")."),
        ("AUROC is that of the final weights (every method's schedule anneals to its end); the two selection "
         "columns show what checkpoint selection (step 0 = the start model included) would have given; the "
         f"20%-label one is blank for {ORACLE_MARK} and {LABELS_MARK} rows, which train on that split."),
        (f"Δ vs baseline ({', '.join(base)}) and vs control: mean over the seeds both ran of the AUROC "
         "difference on the same test images, with a 95% paired bootstrap over images and seeds; 'beats' "
         "and 'worse' mark intervals that exclude 0."),
        ("Gap closed = (AUROC − AUROC of the baseline) / (AUROC of the oracle − AUROC of the baseline), "
         f"oracle: {', '.join(top)}, with a paired-bootstrap interval of the ratio; shown only where the "
         "baseline→oracle gap is itself significant."),
        (f"An oracle marked 'not converged' changed its hard-test AUROC by more than {NOT_CONVERGED} between "
         "its last two checkpoints, so it is not a ceiling yet; an unmarked one may still not be (the "
         "verdict says whether an oracle trained longer on the same seeds was run, and what it gained)."),
        "TPR0: true-positive rate at zero false positives; TPR10: at ten false positives (Bologna).",
    ] + ([(f"ssl-real: each arm's AUROC is the mean over its 5 folds with a {FOLDS} (clipped to [0, 1]; "
           "optimistic, as folds share training images); Δ vs scratch is a paired bootstrap over every "
           "image's pooled out-of-fold score. The SSL arms' encoder saw every image, unlabelled "
           "(transductive), which scratch did not.")] if ssl_real else [])


def interval(values: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> tuple[float, float, float, str]:
    """Mean and 95% interval of one metric over a method's runs, and which kind of interval it is.

    With 3+ seeds the spread between seeds is the honest uncertainty; with fewer a t-interval is
    useless (t_{0.975,1} = 12.7), so fall back to the per-run bootstrap over test images.
    """
    keep = np.isfinite(values)
    v, lo, hi = values[keep], lows[keep], highs[keep]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, ""
    mean = float(v.mean())
    if n >= 3:
        half = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
        return mean, mean - half, mean + half, OVER_SEEDS
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        return mean, float(lo.mean()), float(hi.mean()), BOOTSTRAP
    return mean, math.nan, math.nan, ""


def _metric_order(col: str) -> tuple:
    split, name = col.split(".", 1)
    return (col != HEADLINE, SPLIT_ORDER.get(split, 9), split, name)


def summarise(sel: Selection) -> pd.DataFrame:
    """One row per (task, preset, shift, method): every metric's mean/low/high, seeds, notes, gap closed."""
    ok = latest_ok(sel)
    met = sel.metrics.merge(ok[["id"]], left_on="run", right_on="id")
    met = met.assign(col=met["split"] + "." + met["name"])
    cols = sorted(set(met["col"]), key=_metric_order)
    if HEADLINE not in cols:
        cols.insert(0, HEADLINE)
    rows = []
    for (task, preset, card, shift, method), runs in sel.runs.groupby(GROUP + ["method"], sort=True):
        mine = ok[(ok["task"] == task) & (ok["preset"] == preset) & (ok["card"] == card)
                  & (ok["shift"] == shift) & (ok["method"] == method)]
        failed_seeds = set(runs.loc[runs["status"] != "ok", "seed"]) - set(mine["seed"])
        row = {"task": task, "preset": preset, "card": card, "shift": float(shift), "method": method,
               "role": str(runs["role"].iloc[-1]),  # the latest run's: runs come in time order
               **{k: runs[k].iloc[-1] for k in CARRIED},
               "oracle": bool(runs["oracle"].any()),
               "uses_target_labels": bool(runs["uses_target_labels"].any()),
               "n_seeds": len(mine), "n_failed": len(failed_seeds),
               "seeds_list": ",".join(str(s) for s in sorted(mine["seed"])),
               "seconds_mean": float(mine["seconds"].mean()) if len(mine) else math.nan}
        m = met[met["run"].isin(set(mine["id"]))]
        for col in cols:
            mc = m[m["col"] == col]
            mean, lo, hi, kind = interval(*(mc[k].to_numpy(dtype=float) for k in ("value", "low", "high")))
            row[col], row[f"{col}.low"], row[f"{col}.high"] = mean, lo, hi
            if col == HEADLINE:   # an ssl-real run's own interval is over its folds, not a bootstrap
                row["interval"] = FOLDS if task == "ssl-real" and kind == BOOTSTRAP else kind
        rows.append(row)
    df = pd.DataFrame(rows)
    keys = sorted(df.groupby(GROUP).groups, key=lambda k: (k[0], PRESET_ORDER.get(k[1], 9), k[1], k[2], k[3]))
    df = pd.concat([_finish_group(df[(df[GROUP] == pd.Series(k, index=GROUP)).all(axis=1)]) for k in keys],
                   ignore_index=True)
    df = compare.add_paired(sel, df)
    n_shifts = df["shift"].where(df["shift"] >= 0).groupby([df["task"], df["preset"]]).transform("nunique")
    df["group"] = [f"{t} · {p}" + (f" · {c}" if c else "") + (f" · shift {s:g}" if k > 1 and s >= 0 else "")
                   for t, p, c, s, k in zip(df["task"], df["preset"], df["card"], df["shift"], n_shifts)]
    return df


def _finish_group(g: pd.DataFrame) -> pd.DataFrame:
    """Reference names, seed notes and the AUROC sort order, all relative to the rest of the group.

    Gap closed (computed with the paired statistics in `compare`) runs from the group's baseline-role
    run (0) to its oracle-role run (1); their names are kept in `gap_baseline` / `gap_oracle`.
    """
    g = g.copy()
    base_row, top_row = roles.reference(g, roles.BASELINE), roles.reference(g, roles.ORACLE)
    g["gap_baseline"] = "" if base_row is None else base_row["method"]
    g["gap_oracle"] = "" if top_row is None else top_row["method"]
    most = int(g["n_seeds"].max())
    g["seeds"] = [_seed_note(n, f, most) for n, f in zip(g["n_seeds"], g["n_failed"])]
    return g.sort_values(HEADLINE, ascending=False, na_position="last", kind="stable")


def _seed_note(n: int, failed: int, most: int) -> str:
    text = f"{n} seed" + ("" if n == 1 else "s")
    if failed:
        return f"{text} ({failed} failed)"
    if n < most:
        return f"{text} (fewer than {most})"
    return text


# ---------------------------------------------------------------- formatting

NOT_CONVERGED = 0.01   # an oracle whose last two checkpoints differ by more (test AUROC) is no ceiling


def label(row: pd.Series) -> str:
    """Method name with its mark when it uses hard labels (and a flag on an unconverged oracle)."""
    if row["oracle"]:
        flag = " (not converged)" if _get(row, "hard_test.curve_last_delta") > NOT_CONVERGED else ""
        return f"{row['method']} {ORACLE_MARK}{flag}"
    if row["uses_target_labels"]:
        return f"{row['method']} {LABELS_MARK}"
    return str(row["method"])


def _trained_on_split(row: pd.Series) -> bool:
    """A † or ‡ row trained on the 20% labelled split: picking its checkpoint by that split is in-sample
    (it favours the most fitted checkpoint), so its 20%-label selection column is left blank."""
    return bool(row["oracle"] or row["uses_target_labels"])


def _num(x: float, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(row: pd.Series, col: str) -> str:
    mean, lo, hi = (_get(row, col + sfx) for sfx in ("", ".low", ".high"))
    if not np.isfinite(mean):
        return "—"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _num(mean)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _delta(row: pd.Series, col: str) -> str:
    """A paired Δ with its interval and its verdict mark, or '—'."""
    d, lo, hi = (_get(row, col + sfx) for sfx in ("", ".low", ".high"))
    if not np.isfinite(d):
        return "—"
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {compare.mark(lo, hi)}".rstrip()


def _pct(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x * 100:+.0f}%".replace("-", "−")


def _secs(x: float) -> str:
    if not np.isfinite(x):
        return "—"
    return f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.1f} h"


def _get(row: pd.Series, col: str) -> float:
    return float(row[col]) if col in row.index else math.nan


def display(group: pd.DataFrame) -> pd.DataFrame:
    """The human table of one group: formatted strings, in sort order."""
    out = []
    for _, r in group.iterrows():
        out.append({
            "Method": label(r),
            "AUROC (hard test, final weights)": _ci(r, HEADLINE),
            "Interval": r["interval"],
            "Δ vs baseline (paired)": _delta(r, "delta_base"),
            "Δ vs control (paired)": _delta(r, "delta_control"),
            "TPR0": _num(_get(r, "hard_test.tpr0")),
            "TPR10": _num(_get(r, "hard_test.tpr10")),
            "Gap closed": _pct(r["gap_closed"]),
            "Easy-val AUROC": _num(_get(r, "easy_val.auroc")),
            "AUROC, label-free model selection": _num(_get(r, "hard_test.auroc_sel_validator")),
            "AUROC, 20%-label model selection": "—" if _trained_on_split(r)
                                                else _num(_get(r, "hard_test.auroc_sel_labelled")),
            "Seeds": r["seeds"],
            "Mean time": _secs(r["seconds_mean"]),
        })
    return pd.DataFrame(out)


def groups(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per group, in the summary's order."""
    return [(t, g) for t, g in summary.groupby("group", sort=False)]


def markdown(summary: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown: one table per group, then the legend."""
    from harness.report.classes import anchor, per_class

    lines = []
    for title, g in groups(summary):
        d = display(g)
        lines += [f"### {title}", "", _md_row(d.columns), _md_row(["---"] * len(d.columns))]
        lines += [_md_row(r) for r in d.itertuples(index=False)]
        lines += ["", f"**Verdict.** {compare.verdict(g, title)}", ""]
        pc = per_class(g)
        if pc is not None:
            lines += ["Per-class one-vs-rest AUROC (hard test):", "", _md_row(pc.columns),
                      _md_row(["---"] * len(pc.columns)),
                      *(_md_row(r) for r in pc.itertuples(index=False)), ""]
        if anchor(g):
            lines += [anchor(g), ""]
    lines += [f"- {x}" for x in legend(summary)]
    return "\n".join(lines) + "\n"


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") or " " for c in cells) + " |"


def html_table(group: pd.DataFrame, d: pd.DataFrame | None = None) -> str:
    """One group's table (or `d`, a formatted frame of the same rows) as HTML; rows that use hard
    labels get a class so they can be tinted."""
    d = display(group) if d is None else d
    head = "".join(f"<th>{html.escape(c)}</th>" for c in d.columns)
    body = []
    for (_, r), cells in zip(group.iterrows(), d.itertuples(index=False)):
        cls = "oracle" if r["oracle"] else "labels" if r["uses_target_labels"] else ""
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def text(summary: pd.DataFrame) -> str:
    """Compact fixed-width table for the terminal."""
    out = []
    for title, g in groups(summary):
        rows = [("method", "AUROC [95% interval]", "Δ vs baseline [paired 95%]", "TPR10", "gap", "seeds")]
        for _, r in g.iterrows():
            rows.append((label(r), _ci(r, HEADLINE), _delta(r, "delta_base"),
                         _num(_get(r, "hard_test.tpr10")), _pct(r["gap_closed"]) or "—", r["seeds"]))
        widths = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
        lines = [_fixed(x, widths) for x in rows]
        out += [title, lines[0], "  ".join("-" * w for w in widths), *lines[1:]]
        out += [compare.verdict(g, title), ""]
    if (summary["oracle"] | summary["uses_target_labels"]).any():
        out.append(f"{ORACLE_MARK}/{LABELS_MARK} uses hard labels — not an unsupervised result")
    return "\n".join(out).rstrip() + "\n"


def _fixed(row: tuple[str, ...], widths: list[int]) -> str:
    """Method and seeds left-aligned, numbers right-aligned."""
    return "  ".join(c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
                     for i, (c, w) in enumerate(zip(row, widths))).rstrip()


def results_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """The machine table: identification columns, then every metric's mean/low/high."""
    ident = ["task", "preset", "card", "shift", "method", "base_method", "overrides", "role", "oracle",
             "uses_target_labels", "n_seeds", "n_failed", "seeds_list", "interval", "seconds_mean",
             "gap_closed", "gap_closed.low", "gap_closed.high", "gap_significant",
             *(f"delta_{k}{x}" for k in ("base", "control", "oracle") for x in ("", ".low", ".high"))]
    rest = [c for c in summary.columns if "." in c and c not in ident]
    return summary[ident + rest].rename(columns={"seeds_list": "seeds"})
