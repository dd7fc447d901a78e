"""Paired statistics: AUROC by ranks equals scikit-learn's; paired intervals behave as the protocol needs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harness.report.paired import auroc_rows, gap_closed, headline_auroc, paired_delta


def test_rank_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=(4, 300)) + y, 1)   # rounding makes ties
    got = auroc_rows(y, s)
    want = [roc_auc_score(y, row) for row in s]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_hand_computed_auroc() -> None:
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auroc_rows(np.array([1, 1, 0, 0]), np.array([0.8, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    assert np.isnan(auroc_rows(np.array([1, 1]), np.array([0.2, 0.3])))


def test_macro_auroc_matches_sklearn_ovr() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    p = rng.dirichlet(np.ones(3), size=200) + 0.3 * np.eye(3)[y]
    p /= p.sum(1, keepdims=True)
    want = roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert headline_auroc(y, p) == pytest.approx(want, abs=1e-12)


def test_identical_methods_have_zero_difference() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=(3, 400)) + y
    d = paired_delta(y, s, s.copy(), n_boot=200)
    assert d.delta == 0 and d.low == 0 and d.high == 0 and not d.significant


def test_paired_interval_resolves_a_small_consistent_gain() -> None:
    """b = a plus noise that hurts (AUROC about 0.03 lower): the paired interval lies above 0."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    a = rng.normal(size=(5, 1000)) * 1.5 + y
    b = a + 1.2 * rng.normal(size=(5, 1000))
    d = paired_delta(y, a, b, n_boot=300, seed=1)
    assert d.delta > 0 and d.significant and d.low > 0
    assert d.per_seed.shape == (5,)
    swapped = paired_delta(y, b, a, n_boot=300, seed=1)
    assert swapped.high < 0 and swapped.delta == pytest.approx(-d.delta)


def test_noise_only_difference_is_not_significant() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    base = rng.normal(size=500) + y
    a = base + 0.3 * rng.normal(size=(3, 500))
    b = base + 0.3 * rng.normal(size=(3, 500))
    assert not paired_delta(y, a, b, n_boot=300).significant


def test_gap_closed_ratio_and_its_significance() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 800)
    clean = rng.normal(size=(3, 800)) + 2 * y
    oracle = clean
    base = clean + 2.0 * rng.normal(size=(3, 800))
    half = clean + 0.9 * rng.normal(size=(3, 800))
    ratio, lo, hi, gap_ok = gap_closed(y, half, base, oracle, n_boot=200)
    assert gap_ok and lo < ratio < hi and 0 < ratio < 1
    # no real gap: the oracle is the baseline plus noise -> gap not significant
    _, _, _, gap_ok = gap_closed(y, half, base, base + 0.01 * rng.normal(size=(3, 800)), n_boot=200)
    assert not gap_ok


def test_bootstrap_weights_equal_resampling() -> None:
    """Weighted AUROC with multiplicities equals the AUROC of the explicitly resampled images."""
    from harness.report.paired import weighted_auroc

    rng = np.random.default_rng(6)
    y, s = rng.integers(0, 2, 50), np.round(rng.normal(size=50), 1)
    idx = rng.integers(0, 50, 50)
    counts = np.bincount(idx, minlength=50)
    assert weighted_auroc(y, s, counts) == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="same shape"):
        paired_delta(np.zeros(4), np.zeros((2, 4)), np.zeros((3, 4)))


def test_memoised_draws_follow_the_scores_not_the_array() -> None:
    """The per-seed draws are memoised by content: an array changed in place is scored afresh, and a
    memoised result equals a cold one."""
    from harness.report import paired

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    a, b = rng.normal(size=(3, 300)) + y, rng.normal(size=(3, 300)) + 0.5 * y
    warm = paired.paired_delta(y, a, b, n_boot=200)
    again = paired.paired_delta(y, a, b, n_boot=200)
    paired._SEED_DRAWS.clear()
    paired._draws.cache_clear()
    cold = paired.paired_delta(y, a, b, n_boot=200)
    assert (warm.low, warm.high) == (again.low, again.high) == (cold.low, cold.high)
    b[:, y == 1] += 2.0          # in place: same array object, other scores
    changed = paired.paired_delta(y, a, b, n_boot=200)
    assert changed.high < warm.low and changed.delta < warm.delta
