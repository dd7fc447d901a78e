"""Unit tests: metrics from scores, the SQLite store, backbones, the leak guard."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from harness.data.features import feature_matrix, observable_columns
from harness.errors import BadInput
from harness.metrics import auroc_ci, tpr_at_false_positives, validator_scores
from harness.models import LensFinder
from harness.store import Metric, RunRecord, Store


def test_auroc_is_computed_on_scores_with_an_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = y * 0.8 + rng.normal(0, 0.6, 400)
    a, lo, hi = auroc_ci(y, s, n_boot=300)
    assert a == pytest.approx(roc_auc_score(y, s))
    assert lo < a < hi and hi - lo < 0.2
    # thresholding the scores would lose ranking information and change the value
    assert a != pytest.approx(roc_auc_score(y, s > 0.4))


def test_tpr_at_false_positives_by_hand() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.9, 0.5, 0.1, 0.95, 0.8, 0.6, 0.2])
    assert tpr_at_false_positives(y, s, 0) == pytest.approx(1 / 4)   # only 0.95 beats the top negative
    assert tpr_at_false_positives(y, s, 1) == pytest.approx(3 / 4)   # beat 0.5
    assert tpr_at_false_positives(y, s, 2) == pytest.approx(4 / 4)   # beat 0.1
    assert np.isnan(tpr_at_false_positives(y, s, 10))   # fewer than 11 negatives: 1 for any scores
    assert np.isnan(tpr_at_false_positives(y, np.zeros_like(s), 10))


def test_validators_prefer_confident_diverse_predictions() -> None:
    confident = torch.tensor([[5.0, -5.0], [-5.0, 5.0]] * 50)
    unsure = torch.zeros(100, 2)
    assert validator_scores(confident)["im"] > validator_scores(unsure)["im"]


def test_store_writes_one_transaction_and_reads_back(tmp_path: Path) -> None:
    st = Store(tmp_path / "s.db")
    rec = RunRecord(task="lens-finding", method="m", seed=0, preset="smoke", fingerprint="f", config={"a": 1},
                    code_version="x", device="cpu", run_key="k")
    st.record(rec, [Metric("hard_test", "auroc", 0.8, 0.7, 0.9)])
    with sqlite3.connect(tmp_path / "s.db") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st.done("k") == rec.id
    # a metric row that violates the primary key aborts the whole run: no half row
    bad = RunRecord(task="lens-finding", method="m", seed=1, preset="smoke", fingerprint="f", config={},
                    code_version="x", device="cpu", run_key="k2")
    with pytest.raises(sqlite3.IntegrityError):
        st.record(bad, [Metric("hard_test", "auroc", 0.8), Metric("hard_test", "auroc", 0.7)])
    assert list(st.runs().id) == [rec.id]
    assert len(st.metrics()) == 1


def test_store_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        Store(tmp_path / "missing" / "s.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BadInput, match="not a readable results store"):
        Store(junk)


def test_equivariant_backbone_is_rot90_invariant() -> None:
    torch.manual_seed(0)
    m = LensFinder("equivariant", 3, n_features=0).eval()
    x = torch.randn(5, 3, 64, 64)
    c = torch.zeros(5, 0)
    for k in (1, 2, 3):
        torch.testing.assert_close(m(x, c), m(torch.rot90(x, k, dims=(-2, -1)), c), atol=1e-5, rtol=1e-4)
    # a plain CNN is not: the property is the backbone's, not the test's
    plain = LensFinder("small", 3, n_features=0).eval()
    assert not torch.allclose(plain(x, c), plain(torch.rot90(x, 1, dims=(-2, -1)), c), atol=1e-5)


@pytest.mark.parametrize("backbone", ["small", "tiny", "cnn4", "resnet18", "equivariant"])
def test_lens_finder_fuses_catalog_by_attention(backbone: str) -> None:
    m = LensFinder(backbone, 3, n_features=6).eval()
    x, c = torch.randn(4, 3, 64, 64), torch.randn(4, 6)
    assert m(x, c).shape == (4, 2)
    assert isinstance(m.attn, torch.nn.MultiheadAttention)
    # the catalog branch really influences the output
    assert not torch.allclose(m(x, c), m(x, c + 3.0))
    assert LensFinder(backbone, 3, n_features=6, use_catalog=False)(x, c).shape == (4, 2)


def test_leak_guard_refuses_truth_and_separating_columns() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    cat = pd.DataFrame({"id": np.arange(200), "mag_r": rng.normal(20, 1, 200),
                        "numb_pix_lensed_image": y * rng.integers(50, 500, 200),
                        "truth_theta_E": y * 1.2})
    assert "truth_theta_E" not in observable_columns(cat)
    with pytest.raises(BadInput, match="numb_pix_lensed_image"):
        feature_matrix(cat, y)
    with pytest.raises(BadInput, match="truth column"):
        feature_matrix(cat, y, ["truth_theta_E"])
    x, cols = feature_matrix(cat, y, ["mag_r"])
    assert x.shape == (200, 1) and x.dtype == np.float32 and cols == ["mag_r"]


def test_auroc_interval_is_the_quantiles_of_scikit_learn_on_the_same_resamples() -> None:
    # auroc_ci scores every resample from one sort; each must equal roc_auc_score on that resample
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    s = np.round(rng.normal(size=150) + y, 1)            # rounded: ties must count half, as sklearn does
    a, lo, hi = auroc_ci(y, s, n_boot=200, seed=7)
    draws = np.random.default_rng(7).multinomial(150, np.full(150, 1 / 150), size=200)
    stats = [roc_auc_score(y[i], s[i]) for i in (np.repeat(np.arange(150), c) for c in draws)
             if np.unique(y[i]).size == 2]
    assert a == pytest.approx(roc_auc_score(y, s))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))


def test_tiny_backbone_is_channels_last_and_cheaper_than_small() -> None:
    tiny, small = LensFinder("tiny", 3, n_features=0), LensFinder("small", 3, n_features=0)
    conv = next(m for m in tiny.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.stride == (2, 2)
    n = lambda m: sum(p.numel() for p in m.backbone.parameters())
    assert n(tiny) < n(small) / 3
    assert tiny(torch.randn(2, 3, 64, 64), torch.zeros(2, 0)).shape == (2, 2)


def test_cnn4_keeps_full_resolution_first_and_pools_to_4x4() -> None:
    """The substructure demo's backbone: a stride-1 first conv (fine arc detail is its signal) and
    four pooling stages, so a 64-px stamp ends as a 4x4 map of the last stage's width."""
    from harness.models.backbones import CNN4_WIDTHS

    m = LensFinder("cnn4", 1, n_features=0, num_classes=3).eval()
    convs = [c for c in m.backbone.modules() if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == len(CNN4_WIDTHS) == 4 and all(c.stride == (1, 1) for c in convs)
    assert convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    trunk = m.backbone.net[:-2]   # without the global pooling
    assert trunk(torch.randn(2, 1, 64, 64)).shape == (2, CNN4_WIDTHS[-1], 4, 4)
    assert m(torch.randn(2, 1, 64, 64), torch.zeros(2, 0)).shape == (2, 3)


@pytest.mark.parametrize("backbone", ["tiny", "cnn4"])
def test_pooling_before_relu_gives_the_textbook_order_numbers_bit_for_bit(backbone: str) -> None:
    """The CNNs pool then ReLU (cheaper); swapped back to conv-BN-ReLU-pool with the same weights,
    the training-mode outputs and every weight gradient are identical, on stamps with negative and
    tied (all-zero) windows, so the speed-up changes no result and no cached model."""
    import copy

    from harness.models.backbones import make_backbone

    torch.manual_seed(0)
    fast = make_backbone(backbone, 3)
    textbook = copy.deepcopy(fast)
    layers = list(textbook.net)
    for i in [i for i, m in enumerate(layers) if isinstance(m, torch.nn.MaxPool2d)]:
        assert isinstance(layers[i + 1], torch.nn.ReLU)
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    textbook.net = torch.nn.Sequential(*layers)
    assert textbook.state_dict().keys() == fast.state_dict().keys()
    x = torch.randn(16, 3, 64, 64)
    x[:4] = 0.0                                   # flat stamps: all-equal windows after batch norm
    outs = [m(x) for m in (fast, textbook)]
    assert torch.equal(outs[0], outs[1])
    for out in outs:
        out.square().sum().backward()
    for a, b in zip(fast.parameters(), textbook.parameters()):
        assert torch.equal(a.grad, b.grad)
