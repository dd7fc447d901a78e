"""Evaluation metrics, all computed from scores (never thresholded predictions for AUROC).

- AUROC with a 95% bootstrap interval over test images (scikit-learn's roc_auc_score);
- TPR0 / TPR10: the Bologna lens-finding challenge's true-positive rate at zero and at ten
  false positives (the regime a survey search with human inspection cares about);
- accuracy at p = 0.5; per-class and macro one-vs-rest AUROC for multi-class tasks;
- label-free validator scores (IM, SND) from pytorch-adapt, for model selection without labels.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

N_BOOT = 1000


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of binary `labels` from continuous `scores`; nan when only one class is present."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC of one score vector (n,) under each row of image weights (..., n), ties counted half.

    With bootstrap multiplicities as weights this is the AUROC of each resample, computed from one sort
    of the scores instead of one per resample; with unit weights it equals scikit-learn's roc_auc_score.
    nan where a weighting leaves a single class.
    """
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) == 1
    w = np.ones(scores.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(scores[order])) + 1]   # first index of each tied value
    w, pos = w[..., order], y[order]
    pw = np.add.reduceat(w * pos, starts, axis=-1)
    nw = np.add.reduceat(w * ~pos, starts, axis=-1)
    below = np.cumsum(nw, axis=-1) - nw
    num, n_pos, n_neg = (pw * (below + 0.5 * nw)).sum(-1), pw.sum(-1), nw.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), num / (n_pos * n_neg), np.nan)


def auroc_ci(labels: np.ndarray, scores: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
             level: float = 0.95) -> tuple[float, float, float]:
    """AUROC and its percentile bootstrap interval (resampling test images with replacement).

    Each resample is a row of multiplicities scored by `weighted_auroc` (one sort for all resamples,
    in blocks to bound memory), not a fresh roc_auc_score call per resample.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    point = auroc(labels, scores)
    if np.isnan(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n = labels.size
    block = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    stats = np.concatenate([weighted_auroc(labels, scores, rng.multinomial(n, np.full(n, 1.0 / n), size=b))
                            for b in [block] * (n_boot // block) + [n_boot % block] if b])
    stats = stats[np.isfinite(stats)]
    if not stats.size:  # every resample had a single class: no interval
        return point, float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return point, float(lo), float(hi)


def tpr_at_false_positives(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of lenses scored above the (k+1)-th highest non-lens: at most k false positives.

    NaN with k or fewer non-lenses: any threshold then keeps at most k false positives, so it would read
    1 for every model, random scores included (a high-lens-fraction card's small test split)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    neg = np.sort(scores[labels == 0])[::-1]
    pos = scores[labels == 1]
    if pos.size == 0 or neg.size <= k:
        return float("nan")
    return float(np.mean(pos > neg[k]))


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Accuracy at p = 0.5 (binary: probs of class 1) or argmax (multi-class: (N, K) probs)."""
    probs = np.asarray(probs)
    pred = (probs >= 0.5).astype(int) if probs.ndim == 1 else probs.argmax(1)
    return float(np.mean(pred == np.asarray(labels)))


def multiclass_auroc(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Per-class one-vs-rest AUROC and their macro mean."""
    out = {f"auroc_{c}": auroc((labels == k).astype(int), probs[:, k]) for k, c in enumerate(classes)}
    out["auroc_macro"] = float(np.nanmean(list(out.values())))
    return out


def multiclass_report(labels: np.ndarray, probs: np.ndarray, classes: list[str], seed: int = 0,
                      n_boot: int = N_BOOT, level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Per-class one-vs-rest AUROC and their macro mean (the headline `auroc`), each with a percentile
    bootstrap interval; every class is scored on the same resamples of the test images. Also the micro
    AUROC over one-hot targets, which Keras' `AUC` reports (shown labelled as such, never the headline)."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    per = np.stack([weighted_auroc(labels == j, probs[:, j]) for j in range(k)])            # (K,)
    boot = np.stack([weighted_auroc(labels == j, probs[:, j], w) for j in range(k)])        # (K, B)
    a = (1 - level) / 2

    def ci(point: float, draws: np.ndarray) -> tuple[float, float, float]:
        d = draws[np.isfinite(draws)]
        if not np.isfinite(point) or not d.size:
            return float(point), float("nan"), float("nan")
        lo, hi = np.quantile(d, [a, 1 - a])
        return float(point), float(lo), float(hi)

    out = {f"auroc_{c}": ci(per[j], boot[j]) for j, c in enumerate(classes)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["auroc"] = ci(float(np.nanmean(per)), np.nanmean(boot, axis=0))
    onehot = np.eye(k, dtype=bool)[labels].ravel()
    out["auroc_micro_keras"] = (float(weighted_auroc(onehot, probs.ravel())), float("nan"), float("nan"))
    return out


def class_scores(logits: torch.Tensor) -> np.ndarray:
    """Softmax probabilities as numpy: the positive-class column (N,) for two classes, else (N, K)."""
    probs = logits.float().softmax(1).cpu().numpy()
    return probs[:, 1] if probs.shape[1] == 2 else probs


def score_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """One AUROC for selection and summaries: binary from (N,) scores, macro one-vs-rest from (N, K)."""
    if np.ndim(scores) == 1:
        return auroc(labels, scores)
    return multiclass_auroc(labels, scores, [str(k) for k in range(scores.shape[1])])["auroc_macro"]


def binary_report(labels: np.ndarray, scores: np.ndarray, seed: int = 0, n_boot: int = N_BOOT
                  ) -> dict[str, tuple[float, float | None, float | None]]:
    """Every binary metric as name -> (value, low, high)."""
    a, lo, hi = auroc_ci(labels, scores, n_boot=n_boot, seed=seed)
    return {
        "auroc": (a, lo, hi),
        "tpr0": (tpr_at_false_positives(labels, scores, 0), None, None),
        "tpr10": (tpr_at_false_positives(labels, scores, 10), None, None),
        "accuracy": (accuracy(labels, scores), None, None),
    }


def validator_scores(logits: torch.Tensor) -> dict[str, float]:
    """pytorch-adapt's label-free IM and SND scores of target-pool predictions (higher is better)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorch_adapt.validators import IMValidator, SNDValidator

    logits = logits.float().cpu()
    return {
        "im": float(IMValidator()(target_train={"logits": logits})),
        "snd": float(SNDValidator()(target_train={"preds": logits.softmax(1)})),
    }
