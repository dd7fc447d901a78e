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


def auroc_ci(labels: np.ndarray, scores: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
             level: float = 0.95) -> tuple[float, float, float]:
    """AUROC and its percentile bootstrap interval (resampling test images with replacement)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    point = auroc(labels, scores)
    if np.isnan(point):
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n = labels.size
    stats = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        y = labels[i]
        if y.min() != y.max():
            stats.append(roc_auc_score(y, scores[i]))
    if not stats:  # every resample had a single class: no interval
        return point, float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return point, float(lo), float(hi)


def tpr_at_false_positives(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of lenses scored above the (k+1)-th highest non-lens: at most k false positives."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    neg = np.sort(scores[labels == 0])[::-1]
    pos = scores[labels == 1]
    if pos.size == 0:
        return float("nan")
    if neg.size <= k:
        return 1.0
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
