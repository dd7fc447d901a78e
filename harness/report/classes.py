"""Multi-class and task-specific parts of a group's section: the per-class one-vs-rest AUROC table
(macro first, Keras' micro AUC last and labelled) and the task's published anchor line."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.tables import HEADLINE, _ci, _num, label

NOT_CLASSES = {"auroc", "auroc_sel_validator", "auroc_sel_labelled", "auroc_micro_keras"}
MICRO = "hard_test.auroc_micro_keras"


def per_class(group: pd.DataFrame) -> pd.DataFrame | None:
    """Multi-class groups: the macro one-vs-rest hard-test AUROC (the headline) and each class's, with
    their intervals, per method; Keras' micro AUC last, labelled as such; None for binary groups."""
    cols = [c for c in group.columns if c.startswith("hard_test.auroc_") and c.count(".") == 1
            and c.split(".")[1] not in NOT_CLASSES
            and not c.split(".")[1].startswith(("auroc_fold", "auroc_pooled"))
            and np.isfinite(group[c]).any()]
    if not cols:
        return None
    out = pd.DataFrame({"Method": [label(r) for _, r in group.iterrows()]})
    out["macro"] = [_ci(r, HEADLINE) for _, r in group.iterrows()]
    for c in cols:
        out[c.split(".")[1].removeprefix("auroc_")] = [_ci(r, c) for _, r in group.iterrows()]
    if MICRO in group.columns and np.isfinite(group[MICRO]).any():
        out["micro AUC (Keras, not the headline)"] = [_num(v) for v in group[MICRO]]
    return out


def anchor(group: pd.DataFrame) -> str:
    """The published numbers the group's task prints beside its results ('' if none): context from
    another paper's data and selection, never a comparison the harness makes."""
    from harness.tasks import TASKS

    tasks = set(group["task"]) if "task" in group else set()
    t = TASKS.get(next(iter(tasks))) if len(tasks) == 1 else None
    if t is None or not t.anchor:
        return ""
    labels = [str(c) for c in group.get("card", [])]
    cards = {c.split(" ")[0] for c in labels}   # the card, without its setup tag
    mine = cards <= set(t.anchor_cards) and not any(" from " in c for c in labels)   # nor another source
    return f"Anchor: {t.anchor}" if not t.anchor_cards or mine else ""
