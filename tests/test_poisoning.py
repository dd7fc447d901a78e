"""Poisoning: labels a method must not see cannot change what it learns or which checkpoint is chosen.

For every registered method, adaptation runs twice from the same start model and seed (fp32, CPU):
once on the true labels and once with every hard-test label flipped and, for methods that are not the
oracle, every hard-pool label scrambled too. Weights and selected checkpoints must be bitwise equal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config import get_preset
from harness.domains import prepare_data
from harness.pipeline import Options, _adapt_and_evaluate, _estimate_prior
from harness.registry import all_methods
from harness.stages import stage_start
from harness.store import Store


@pytest.fixture(scope="module")
def start(smoke_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The smoke domains, both prepared (true and poisoned labels), and the cached start models."""
    preset = get_preset("smoke")
    preset = preset.replace("adapt", steps=4, checkpoints=2)
    store = Store(tmp_path_factory.mktemp("poison") / "s.db")
    opts = Options(preset=preset, store=store, device=torch.device("cpu"), precision="fp32",
                   datasets_dir=smoke_root / "ds", quiet=True, log=lambda m: None)
    rt = opts.runtime
    p = prepare_data(preset, opts.datasets_dir, rt)
    _, ssl_state, _, source = stage_start(p, 0, preset, store.cache, rt)
    prior = _estimate_prior(source, p, 512, rt.autocast)
    labels = np.array(p.hard.labels)
    test, pool = p.hard.split("test"), p.hard.split("pool")
    labels[test] = 1 - labels[test]
    labels[pool] = np.random.default_rng(1).permutation(labels[pool])[::-1]
    assert (labels[test] != p.hard.labels[test]).all()
    hard = dataclasses.replace(p.hard, labels=labels)
    scrambled = torch.from_numpy(labels[pool])
    return opts, p, hard, scrambled, source, ssl_state, prior


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_scrambled_test_and_pool_labels_leave_weights_identical(start, name: str) -> None:
    opts, p, hard, scrambled, source, ssl_state, prior = start
    cls = all_methods()[name]
    poisoned = dataclasses.replace(p, hard=hard, pool_labels=p.pool_labels if cls.oracle else scrambled,
                                   priors={}, start_scores={})
    out = {}
    clean = dataclasses.replace(p, priors={}, start_scores={})
    for tag, prepared in (("true", clean), ("poisoned", poisoned)):
        hp = {**cls.hparams, "steps": 4}   # the oracle's source-length budget too, as every method's
        metrics, _, _, final, cks = _adapt_and_evaluate(cls, hp, 0, prepared, opts, source, ssl_state, prior)
        steps = {m.name: m.value for m in metrics if m.name in ("sel_validator_step", "sel_labelled_step")}
        out[tag] = (final, steps, [c.step for c in cks], metrics)
    (w1, s1, c1, m1), (w2, s2, c2, m2) = out["true"], out["poisoned"]
    assert s1 == s2 and c1 == c2
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    # the poisoning took: the test metrics (which do read the test labels) moved
    a1 = next(m.value for m in m1 if m.split == "hard_test" and m.name == "auroc")
    a2 = next(m.value for m in m2 if m.split == "hard_test" and m.name == "auroc")
    assert a1 != a2
