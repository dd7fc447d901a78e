"""Label-free estimate of the target class prior: black-box shift estimation (BBSE, Lipton et al. 2018).

Why: lenses are rare, so the target pool's lens fraction differs from the balanced source's, and
methods that push predictions towards the source prior (AdaMatch's distribution alignment, MCC, the
IM validator) are then pulled the wrong way. Under label shift (p(x|y) fixed), the source model's
joint confusion matrix on held-out source data, C[i, j] = P_s(ŷ = i, y = j), and the distribution of
its predictions on the target, μ[i] = P_t(ŷ = i), satisfy μ = C w with w[j] = q(y = j) / p(y = j).
Solving for w needs no target label. The estimate is clipped to be non-negative and normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PriorEstimate:
    """The estimated target prior q(y), the source prior p(y) and the importance weights w = q / p."""

    target: np.ndarray
    source: np.ndarray
    weights: np.ndarray


def bbse(val_pred: np.ndarray, val_labels: np.ndarray, target_pred: np.ndarray, num_classes: int
         ) -> PriorEstimate:
    """BBSE from hard predictions: `val_*` on held-out labelled source data, `target_pred` on the pool.

    The source prior is that of `val_labels`. A singular confusion matrix (a class never predicted)
    falls back to least squares, which is what `lstsq` returns for a full-rank system too.
    """
    k = int(num_classes)
    val_pred, val_labels, target_pred = (np.asarray(a, dtype=np.int64)
                                         for a in (val_pred, val_labels, target_pred))
    if val_pred.size == 0 or target_pred.size == 0:
        raise ValueError("BBSE needs predictions on held-out source data and on the target")
    joint = np.zeros((k, k))
    np.add.at(joint, (val_pred, val_labels), 1.0)
    joint /= val_pred.size
    mu = np.bincount(target_pred, minlength=k)[:k] / target_pred.size
    w = np.clip(np.linalg.lstsq(joint, mu, rcond=None)[0], 0.0, None)
    p = np.bincount(val_labels, minlength=k)[:k] / val_labels.size
    q = w * p
    q = q / q.sum() if q.sum() > 0 else np.full(k, 1.0 / k)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(p > 0, q / p, 0.0)
    return PriorEstimate(target=q, source=p, weights=weights)


def assumes_balance_warning(selector: str, prior: np.ndarray, tolerance: float = 0.1) -> str | None:
    """A one-line warning when a label-free validator that favours balanced predictions meets a target
    whose estimated prior is far from uniform (IM rewards the entropy of the mean prediction)."""
    k = len(prior)
    if selector == "im" and np.max(np.abs(np.asarray(prior) - 1.0 / k)) > tolerance:
        shown = ", ".join(f"{x:.2f}" for x in prior)
        return (f"label-free selection with 'im' assumes balanced classes, but the estimated target prior is "
                f"[{shown}]; its choice may favour over-predicting the rare class (see also 'snd')")
    return None
