"""Where does the easy -> hard gap come from? Hard-test AUROC per method, stratified by arc visibility.

Each hard-test lens is compared against all hard-test non-lenses, in bins of its simulation
truth (lensed-source pixels above the noise, Einstein radius). If even the oracle is near chance on
faint arcs, that part of the gap is information lost to depth and seeing, which no adaptation
method can recover; the part on bright arcs is what domain adaptation can act on. Truth columns
are used here only to *analyse* finished predictions, never as inputs.

    python -m bench.gap_anatomy --store runs/harness.db --hard datasets/hard-...-n3000-s1
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def anatomy(store: Path, hard: Path, column: str = "truth_n_lensed_pix", bins: int = 3) -> pd.DataFrame:
    cat = pd.read_csv(hard / "catalog.csv")
    with sqlite3.connect(store) as con:
        runs = pd.read_sql("SELECT id, method, seed FROM runs WHERE status = 'ok'", con)
    lens_vals = cat[column].to_numpy()
    rows = []
    for r in runs.itertuples():
        f = store.parent / r.id / "predictions.parquet"
        if not f.is_file():
            continue
        p = pd.read_parquet(f)
        p = p[p.split == "hard_test"]
        neg = p[p.label == 0].score.to_numpy()
        pos = p[p.label == 1]
        v = lens_vals[pos["index"].to_numpy()]
        edges = np.quantile(v, np.linspace(0, 1, bins + 1))
        for b in range(bins):
            upper = v <= edges[b + 1] if b == bins - 1 else v < edges[b + 1]
            sel = (v >= edges[b]) & upper
            s = pos.score.to_numpy()[sel]
            y = np.r_[np.ones(s.size), np.zeros(neg.size)]
            rows.append({"method": r.method, "seed": r.seed,
                         "bin": f"{column} [{edges[b]:.0f}, {edges[b + 1]:.0f}]",
                         "auroc": roc_auc_score(y, np.r_[s, neg]), "lenses": int(s.size)})
        rows.append({"method": r.method, "seed": r.seed, "bin": "predicted lens fraction on test",
                     "auroc": float((p.score >= 0.5).mean()), "lenses": int((p.label == 1).sum())})
    df = pd.DataFrame(rows)
    return df.pivot_table(index="method", columns="bin", values="auroc", aggfunc="mean").round(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--hard", type=Path, required=True, help="the hard image-set folder the runs used")
    ap.add_argument("--column", default="truth_n_lensed_pix")
    a = ap.parse_args()
    print(anatomy(a.store, a.hard, a.column).to_string())


if __name__ == "__main__":
    main()
