"""Observable catalog features and the leak guard.

The seed DeepLense solution reached AUC 1.0 by feeding `numb_pix_lensed_image` (a simulation
truth) to the model. This module is the single door through which catalog columns become model
inputs: it never offers `truth_*` columns, warns about a column whose single-feature AUROC exceeds
0.95 and refuses one above 0.99 (either direction) unless the user names it in `--allow-column`.
Importers of real catalogs decide which columns are observables at all (an allow-list); every
other column arrives here already as `truth_*`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from harness.errors import BadInput

LEAK_AUROC = 0.99   # refuse above this single-feature AUROC
LEAK_WARN = 0.95    # warn above this one
NON_FEATURES = {"id", "label", "is_lens", "class"}


def observable_columns(catalog: pd.DataFrame) -> list[str]:
    """Numeric, non-truth, non-identifier columns: the candidates for model input."""
    cols = []
    for c in catalog.columns:
        if c.startswith("truth_") or c.lower() in NON_FEATURES:
            continue
        if pd.api.types.is_numeric_dtype(catalog[c]):
            cols.append(c)
    return cols


def single_feature_auroc(values: np.ndarray, labels: np.ndarray) -> float:
    """max(AUROC, 1 - AUROC) of one column against binary labels (direction-free separability)."""
    known = labels >= 0
    y, v = labels[known], np.nan_to_num(values[known].astype(np.float64))
    if np.unique(y).size < 2:
        return 0.5
    if np.unique(y).size > 2:  # multi-class: worst one-vs-rest
        return max(single_feature_auroc(values[known], (y == k).astype(int)) for k in np.unique(y))
    a = roc_auc_score(y, v)
    return float(max(a, 1 - a))


def check_leaks(catalog: pd.DataFrame, labels: np.ndarray, columns: list[str],
                threshold: float = LEAK_AUROC, allow: tuple[str, ...] = (),
                log: Callable[[str], None] | None = None, near: dict[str, float] | None = None) -> None:
    """Raise BadInput naming the first column whose single-feature AUROC exceeds `threshold` (unless
    it is in `allow`); send a warning to `log` for every column above LEAK_WARN, and record it in
    `near` (the largest AUROC seen per column), so the run can carry it to the report."""
    for c in columns:
        a = single_feature_auroc(catalog[c].to_numpy(), np.asarray(labels))
        if a > LEAK_WARN and near is not None:
            near[c] = max(a, near.get(c, 0.0))
        if a > threshold and c not in allow:
            n = int((np.asarray(labels) >= 0).sum())
            chance = "; with so few, it may be chance: --no-catalog trains on images alone" if n < 100 else ""
            raise BadInput(
                f"leak guard: catalog column '{c}' alone separates the labels (AUROC {a:.3f} > {threshold} "
                f"on {n} labelled images); it cannot be a model input (name it in --allow-column if it is a "
                f"genuine observable){chance}")
        if a > LEAK_WARN and log is not None:
            why = ("allowed by --allow-column" if a > threshold
                   else f"above {LEAK_WARN}; check it is observable")
            log(f"warning: leak guard: catalog column '{c}' alone reaches AUROC {a:.3f} ({why})")


def feature_matrix(catalog: pd.DataFrame, labels: np.ndarray, columns: list[str] | None = None,
                   check: bool = True, allow: tuple[str, ...] = (), log: Callable[[str], None] | None = None,
                   near: dict[str, float] | None = None) -> tuple[np.ndarray, list[str]]:
    """The observable feature matrix (N, F) float32 and its column names, leak-checked.

    `columns=None` takes every observable column. Asking for a `truth_*` or missing column is
    a BadInput. Labels are used only to check for leaks (pass the labels the caller may see).
    """
    if columns is None:
        columns = observable_columns(catalog)
    for c in columns:
        if c.startswith("truth_"):
            raise BadInput(f"leak guard: '{c}' is a truth column and is never a model input")
        if c not in catalog.columns:
            raise BadInput(f"catalog has no column '{c}' (has: {', '.join(catalog.columns)})")
        if not pd.api.types.is_numeric_dtype(catalog[c]):
            raise BadInput(f"catalog column '{c}' is not numeric")
    if check:
        check_leaks(catalog, labels, columns, allow=allow, log=log, near=near)
    x = catalog[columns].to_numpy(dtype=np.float32) if columns else np.zeros((len(catalog), 0), np.float32)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), list(columns)
