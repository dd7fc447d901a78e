"""Paired comparisons of two methods on the same test images and seeds (the protocol's "beats").

Two methods evaluated on one test split are strongly correlated: most images are easy for both. An
unpaired interval (each method's own spread) therefore hides differences that a paired one resolves.
Here every bootstrap draw resamples the test images AND the seeds once and applies the same draw to
both methods, so the interval is that of the difference itself (Efron & Tibshirani 1993, ch. 10).
A method "beats" a baseline only when the 95% interval of the difference excludes 0.

Scores are (seeds, images) for binary tasks or (seeds, images, classes) for multi-class tasks, where
the macro one-vs-rest AUROC is used, as in the tables.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from harness.metrics import weighted_auroc

N_BOOT = 1000


def auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of `scores` (rows, n) against binary `labels` (n,)."""
    scores = np.atleast_2d(scores)
    return np.array([weighted_auroc(labels, row) for row in scores]).reshape(np.shape(scores)[:-1])


def headline_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The tables' headline for one run: binary AUROC from (n,) scores, macro one-vs-rest from (n, K)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim == 2:
        return np.nanmean(np.stack([weighted_auroc(labels == k, scores[:, k], weights)
                                    for k in range(scores.shape[1])]), axis=0)
    return weighted_auroc(labels, scores, weights)


@dataclass
class Paired:
    """Mean over seeds of a − b, its 95% paired-bootstrap interval, and the per-seed differences."""

    delta: float
    low: float
    high: float
    per_seed: np.ndarray

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (in either direction)."""
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))


@lru_cache(maxsize=4)   # (B, n) integers each: a report needs a card's draws, and gap_closed's B = 1
def _draws(n_seeds: int, n: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image multiplicities (B, n) and seed picks (B, S): one draw shared by every method compared
    (cached, read-only: a report draws the same ones for every comparison of a card)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    picks = rng.integers(0, n_seeds, (n_boot, n_seeds))
    counts.flags.writeable = picks.flags.writeable = False
    return counts, picks


_SEED_DRAWS: OrderedDict[tuple, np.ndarray] = OrderedDict()   # at most 4,096 x (B,) floats


def _seed_draws(labels: np.ndarray, scores: np.ndarray, n_seeds: int, n_boot: int, seed: int) -> np.ndarray:
    """One seed's AUROC under every draw's image multiplicities, (B,); memoised by content (digests),
    because a report compares each run with its baseline, control and oracle, and those references
    with every method: the same (scores, draws) pairs come back many times."""
    digest = lambda a: hashlib.blake2b(np.ascontiguousarray(a).view(np.uint8), digest_size=16).digest()
    key = (digest(labels), labels.dtype.str, digest(scores), scores.shape, n_seeds, n_boot, seed)
    if key not in _SEED_DRAWS:
        _SEED_DRAWS[key] = headline_auroc(labels, scores, _draws(n_seeds, scores.shape[0], n_boot, seed)[0])
        if len(_SEED_DRAWS) > 4096:
            _SEED_DRAWS.popitem(last=False)
    return _SEED_DRAWS[key]


def _per_draw(labels: np.ndarray, runs: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Mean over the picked seeds of each draw's AUROC: (B,)."""
    picks = _draws(runs.shape[0], runs.shape[1], n_boot, seed)[1]
    per_seed = np.stack([_seed_draws(labels, np.asarray(r, dtype=np.float64), len(runs), n_boot, seed)
                         for r in runs])      # (S, B)
    return per_seed[picks, np.arange(len(picks))[:, None]].mean(1)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return np.nan, np.nan
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def _check(labels: np.ndarray, *runs: np.ndarray) -> None:
    shapes = {r.shape for r in runs}
    if len(shapes) != 1 or runs[0].shape[1] != labels.shape[0]:
        raise ValueError(f"paired scores need the same shape (seeds, images[, classes]): "
                         f"{sorted(shapes)}, {labels.shape[0]} labels")


def paired_delta(labels: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = 0.95) -> Paired:
    """Paired bootstrap of mean-over-seeds AUROC(a) − AUROC(b) on the same images.

    `a` and `b` hold one block of scores per seed, paired by seed (same seed, same test images). Each
    draw resamples images and seeds with replacement and applies the draw to both methods.
    """
    labels, a, b = np.asarray(labels), np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    _check(labels, a, b)
    per_seed = np.array([headline_auroc(labels, x) - headline_auroc(labels, y) for x, y in zip(a, b)])
    lo, hi = _interval(_per_draw(labels, a, n_boot, seed) - _per_draw(labels, b, n_boot, seed), level)
    return Paired(float(np.mean(per_seed)), lo, hi, per_seed)


def gap_closed(labels: np.ndarray, method: np.ndarray, base: np.ndarray, oracle: np.ndarray,
               n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> tuple[float, float, float, bool]:
    """(AUROC_method − AUROC_base) / (AUROC_oracle − AUROC_base) with a paired-bootstrap interval.

    Every draw resamples images and seeds once for all three, so the interval carries the baseline's and
    the oracle's uncertainty too. The last value says whether the base→oracle gap itself is significantly
    positive (its paired interval lies above 0); where it is not, the ratio is noise and is not shown.
    """
    labels = np.asarray(labels)
    m, b, o = (np.asarray(x, dtype=np.float64) for x in (method, base, oracle))
    _check(labels, m, b, o)
    gap = paired_delta(labels, o, b, n_boot=n_boot, seed=seed, level=level)
    point = float(paired_delta(labels, m, b, n_boot=1, seed=seed).delta / gap.delta) if gap.delta else np.nan
    ab = _per_draw(labels, b, n_boot, seed)
    den = _per_draw(labels, o, n_boot, seed) - ab
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = (_per_draw(labels, m, n_boot, seed) - ab) / np.where(den != 0, den, np.nan)
    lo, hi = _interval(ratios, level)
    return point, lo, hi, bool(gap.significant and gap.low > 0)
