"""Paired columns of the tables: Δ AUROC against the baseline and the control, gap closed, verdicts.

For every method of a group (task, preset, card) this pairs its runs with the reference's runs of
the same seeds, on the same hard-test images (read from each run's predictions), and bootstraps the
difference with `harness.report.paired`. A method "beats" a reference only when the 95% interval of
the paired difference lies above 0. "Gap closed" is the bootstrapped ratio to the baseline→oracle
gap, shown only where that gap is itself significantly positive. `verdict` writes, from these
numbers, the one line per card that says whether any unsupervised method beats the baseline.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from harness.data.features import LEAK_AUROC, LEAK_WARN
from harness.report import roles
from harness.report.load import GROUP, Selection, latest_ok, predictions
from harness.report.paired import gap_closed, paired_delta

REFERENCES = {"base": roles.BASELINE, "control": roles.CONTROL}


def _test_scores(sel: Selection, run_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(image index, labels, scores) of a run's hard-test predictions, sorted by image index."""
    df = predictions(sel, run_id)
    if df is None:
        return None
    t = df[df["split"] == "hard_test"].sort_values("index")
    cols = ["score"] if "score" in t else sorted((c for c in t if c.startswith("score_")),
                                                  key=lambda c: int(c.split("_")[1]))
    scores = t[cols].to_numpy(dtype=np.float64)
    return t["index"].to_numpy(), t["label"].to_numpy(), scores[:, 0] if cols == ["score"] else scores


def _blocks(sel: Selection, runs_of: dict[str, pd.Series], methods: list[str], read: dict
            ) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Labels and one (seeds, images[, K]) block per method over the seeds all of them share.

    `runs_of` maps each method of the group to its run ids by seed; `read` holds the predictions
    already read, by run id: a reference's runs are paired with every method of its group, and are
    read once."""
    if any(m not in runs_of for m in methods):
        return None
    by = {m: runs_of[m] for m in methods}
    seeds = sorted(set.intersection(*(set(v.index) for v in by.values())))
    if not seeds:
        return None
    labels, out, index = None, [], None
    for m in methods:
        rows = []
        for s in seeds:
            rid = by[m][s]
            got = read[rid] if rid in read else read.setdefault(rid, _test_scores(sel, rid))
            if got is None:
                return None
            idx, y, sc = got
            if index is None:
                index, labels = idx, y
            elif not (np.array_equal(idx, index) and np.array_equal(y, labels)):
                return None        # not the same test images: no paired comparison
            rows.append(sc)
        out.append(np.stack(rows))
    return labels, out


def add_paired(sel: Selection, summary: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Add Δ-vs-reference columns (`delta_base`, `delta_control`, each with `.low`/`.high` and the
    shared seed count) and replace gap closed by its paired-bootstrap ratio."""
    out = summary.copy()
    for col in ("delta_base", "delta_control", "gap_closed", "delta_oracle"):
        for suffix in ("", ".low", ".high"):
            out[col + suffix] = math.nan
    out["gap_significant"] = False
    out["gap_closed"] = out["gap_closed"].astype(float)
    ok, read = latest_ok(sel), {}
    for key, g in out.groupby(GROUP, sort=False):
        mine = ok[(ok[GROUP] == pd.Series(key, index=GROUP)).all(axis=1)]
        mine = {m: d.set_index("seed")["id"] for m, d in mine.groupby("method", sort=False)}
        refs = {k: roles.reference(g, r) for k, r in REFERENCES.items()}
        oracle = roles.reference(g, roles.ORACLE)
        gap = _gap_significant(sel, mine, refs["base"], oracle, read, n_boot)
        out.loc[g.index, "gap_significant"] = gap
        for i in _longer_oracles(g, oracle):   # the ceiling check: the oracle again, with more steps
            got = _blocks(sel, mine, [g.loc[i, "method"], oracle["method"]], read)
            if got is not None:
                d = paired_delta(got[0], got[1][0], got[1][1], n_boot=n_boot)
                out.loc[i, ["delta_oracle", "delta_oracle.low", "delta_oracle.high"]] = d.delta, d.low, d.high
        for i, row in g.iterrows():
            for k, ref in refs.items():
                if ref is None or ref["method"] == row["method"]:
                    continue
                got = _blocks(sel, mine, [row["method"], ref["method"]], read)
                if got is not None:
                    d = paired_delta(got[0], got[1][0], got[1][1], n_boot=n_boot)
                    out.loc[i, [f"delta_{k}", f"delta_{k}.low", f"delta_{k}.high"]] = d.delta, d.low, d.high
            base = refs["base"]
            if not gap:   # no significant baseline→oracle gap: no ratio, references included
                continue
            if row["method"] in (base["method"], oracle["method"]):   # 0 and 1 by definition
                out.loc[i, "gap_closed"] = float(row["method"] == oracle["method"])
                continue
            got = _blocks(sel, mine, [row["method"], base["method"], oracle["method"]], read)
            if got is not None:
                ratio, lo, hi, significant = gap_closed(got[0], *got[1], n_boot=n_boot)
                if significant:   # the gap on this row's own seeds, too
                    out.loc[i, ["gap_closed", "gap_closed.low", "gap_closed.high"]] = ratio, lo, hi
    return out


def _longer_oracles(group: pd.DataFrame, oracle: pd.Series | None) -> list:
    """Rows of the group's oracle method run with only a larger `steps` (`--hp oracle.steps=N`): paired
    with the oracle, they test whether it is a ceiling at its own budget (Δ above 0: it is not)."""
    if oracle is None or "overrides" not in group:
        return []
    out = []
    for i, row in group.iterrows():
        over = json.loads(row["overrides"] or "{}")
        longer = isinstance(over.get("steps"), int) and not over["steps"] <= oracle.get("source_steps", 0)
        if (i != oracle.name and row["base_method"] == oracle["base_method"] and row["role"] == roles.ORACLE
                and set(over) == {"steps"} and longer and json.loads(oracle["overrides"] or "{}") == {}):
            out.append(i)
    return out


def _gap_significant(sel: Selection, runs_of: dict[str, pd.Series], base: pd.Series | None,
                     oracle: pd.Series | None, read: dict, n_boot: int) -> bool:
    """Whether the group's baseline→oracle gap is significantly positive, over every seed the two share
    (one decision per group: a method with fewer seeds changes only its own ratio, never the card's)."""
    if base is None or oracle is None:
        return False
    got = _blocks(sel, runs_of, [oracle["method"], base["method"]], read)
    if got is None:
        return False
    return bool(paired_delta(got[0], got[1][0], got[1][1], n_boot=n_boot).low > 0)


def mark(low: float, high: float) -> str:
    """'beats' / 'worse' when the paired interval excludes 0, else ''."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return "beats" if low > 0 else "worse" if high < 0 else ""


def verdict(group: pd.DataFrame, title: str) -> str:
    """One line, from the numbers: do unsupervised methods beat the baseline on this card?"""
    base = roles.reference(group, roles.BASELINE)
    ssl_real = set(group.get("task", [])) == {"ssl-real"}   # its arms all use the fold labels
    un = group[(group["role"] == roles.METHOD) if ssl_real else roles.unsupervised(group)]
    kind = "SSL arms" if ssl_real else "unsupervised methods"
    notes = _ceiling(group) + _near_leaks(group) + _prior_off(group)
    if base is None:
        return "; ".join([f"{title}: no baseline run, so no verdict", *notes]) + "."
    tested = un[np.isfinite(un["delta_base.low"])]
    if tested.empty:
        return "; ".join([f"{title}: no {kind[:-1]} has paired runs against {base['method']}", *notes]) + "."
    wins = tested[tested["delta_base.low"] > 0]
    worse = tested[tested["delta_base.high"] < 0]
    head = (f"{title}: {len(wins)} of {len(tested)} {kind} beat {base['method']} "
            "(paired 95% interval of Δ AUROC above 0)")
    parts = [head + (": " + ", ".join(f"{r.method} {r.delta_base:+.3f}" for r in wins.itertuples())
                     if len(wins) else "")]
    if len(worse):
        verb = "is" if len(worse) == 1 else "are"
        parts.append(f"{len(worse)} {verb} worse ({', '.join(worse['method'])})")
    if ssl_real:   # the seed's lower bar: better than chance
        low = group.get("hard_test.auroc.low", pd.Series(np.nan, index=group.index))
        above = group.loc[low > 0.5, "method"]
        names = ", ".join(above) if len(above) else "none"
        parts.append(f"above chance (interval over folds above 0.5): {names}")
    gap = group["gap_significant"].any()
    oracle = roles.reference(group, roles.ORACLE)
    if oracle is not None:
        below = float(oracle.get("delta_base.high", np.nan)) < 0
        parts.append(f"the {base['method']}→{oracle['method']} gap is " + (
            "significant" if gap else
            f"negative ({oracle['delta_base']:+.3f} [{oracle['delta_base.low']:+.3f}, "
            f"{oracle['delta_base.high']:+.3f}]): the oracle is below the baseline, so it is no ceiling"
            if below else "not significant, so gap closed is not shown"))
    return "; ".join(parts + notes) + "."


def _prior_off(group: pd.DataFrame, tolerance: float = 0.1) -> list[str]:
    """BBSE's estimate of the pool's lens share against the card's declared one, where they are far apart:
    label-shift corrections (IWDAN's weights) and the IM warning act on the estimate, never the truth."""
    est, decl = group.get("hard_pool.prior_bbse_lens"), group.get("hard_pool.prior_declared_lens")
    if est is None or decl is None or not (np.isfinite(est).any() and np.isfinite(decl).any()):
        return []
    e, d = float(np.nanmean(est)), float(np.nanmean(decl))
    if abs(e - d) <= tolerance:
        return []
    return [(f"BBSE estimates the pool's lens share at {e:.2f} where the card declares {d:.2f} (label-shift "
             "corrections such as IWDAN's weights use the estimate)")]


def _near_leaks(group: pd.DataFrame) -> list[str]:
    """Model-input catalog columns that alone came close to separating the labels (the leak guard refuses
    above its threshold): a referee should know what the catalog branch could lean on."""
    near: dict[str, float] = {}
    for text in group.get("near_leaks", []):
        for c, a in json.loads(text or "{}").items():
            near[c] = max(a, near.get(c, 0.0))
    if not near:
        return []
    cols = ", ".join(f"{c} {a:.3f}" for c, a in sorted(near.items(), key=lambda x: -x[1]))
    return [(f"catalog columns that alone nearly separate the labels (single-feature AUROC above "
             f"{LEAK_WARN}, refused above {LEAK_AUROC}): {cols}")]


def _ceiling(group: pd.DataFrame) -> list[str]:
    """The ceiling check's sentences: each longer-trained oracle against the group's oracle, or, with an
    oracle but no such run, that the check was not made (converging within its own cosine budget, the
    table's only other test, does not show that more steps would not raise it)."""
    oracle = roles.reference(group, roles.ORACLE)
    if oracle is None:
        return []
    low = group.get("delta_oracle.low", pd.Series(np.nan, index=group.index))
    out = []
    for _, r in group[np.isfinite(low)].iterrows():
        d = f"{r['delta_oracle']:+.3f} [{r['delta_oracle.low']:+.3f}, {r['delta_oracle.high']:+.3f}]"
        out.append(f"{r['method']} gains {d} over {oracle['method']}: " + (
            "more steps raise it, so it is not yet a ceiling" if r["delta_oracle.low"] > 0
            else "no significant gain, so more steps do not raise the ceiling"))
    if not out:
        steps = pd.to_numeric(oracle.get("source_steps", math.nan), errors="coerce")
        n = f"{2 * int(steps)}" if math.isfinite(steps) and steps > 0 else "N"
        out.append(f"whether {oracle['method']} is a ceiling is untested (run it again with more steps, "
                   f"e.g. `--hp {oracle.get('base_method', oracle['method'])}.steps={n}`, on the same seeds)")
    return out
