"""BBSE recovers a shifted prior from predictions alone; the balance warning fires only where it should."""

from __future__ import annotations

import numpy as np
import pytest

from harness.label_shift import assumes_balance_warning, bbse


def _classifier(labels: np.ndarray, tpr: float, tnr: float, rng: np.random.Generator) -> np.ndarray:
    """Hard predictions of a fixed classifier: p(ŷ|y) is the same in both domains (label shift)."""
    u = rng.random(labels.size)
    return np.where(labels == 1, u < tpr, u >= tnr).astype(int)


def test_hand_computed_example() -> None:
    # source val: 4 lenses (3 found), 4 non-lenses (1 false alarm): C = [[3/8, 1/8], [1/8, 3/8]]
    val_y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    val_p = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    # target: 3 of 8 predicted lenses -> mu = [5/8, 3/8]; C w = mu -> w = [1.5, 0.5]; q = w p = [0.75, 0.25]
    tgt_p = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    est = bbse(val_p, val_y, tgt_p, 2)
    np.testing.assert_allclose(est.target, [0.75, 0.25], atol=1e-12)
    np.testing.assert_allclose(est.source, [0.5, 0.5])
    np.testing.assert_allclose(est.weights, [1.5, 0.5], atol=1e-12)


def test_recovers_a_quarter_lens_fraction_where_naive_counting_does_not() -> None:
    rng = np.random.default_rng(0)
    src = (rng.random(40000) < 0.5).astype(int)
    tgt = (rng.random(20000) < 0.25).astype(int)
    val_pred, tgt_pred = _classifier(src, 0.7, 0.8, rng), _classifier(tgt, 0.7, 0.8, rng)
    est = bbse(val_pred, src, tgt_pred, 2)
    assert est.target[1] == pytest.approx(0.25, abs=0.02)
    naive = tgt_pred.mean()
    assert naive - 0.25 > 0.05        # counting predicted lenses is biased: 0.7*0.25 + 0.2*0.75 = 0.325


def test_never_predicted_class_gives_a_valid_prior() -> None:
    est = bbse(np.zeros(10, int), np.array([0, 1] * 5), np.zeros(7, int), 2)
    assert np.all(est.target >= 0) and est.target.sum() == pytest.approx(1.0)


def test_balance_warning() -> None:
    assert assumes_balance_warning("im", np.array([0.75, 0.25])) is not None
    assert assumes_balance_warning("im", np.array([0.52, 0.48])) is None
    assert assumes_balance_warning("snd", np.array([0.75, 0.25])) is None
