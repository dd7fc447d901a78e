"""The final evaluation reuses scores instead of computing them again: the last checkpoint's pool
validators (it holds the final weights), the final weights' hard-test AUROC for a selector that picked
the last checkpoint, and a shared start model's step-0 test AUROC. Each reused number must equal the
one a fresh inference of the same weights gives."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from harness import evaluate as evaluation
from harness.adapt import Checkpoint
from harness.config import get_preset
from harness.domains import prepare_data
from harness.metrics import class_scores, score_auroc, validator_scores
from harness.pipeline import Options, _adapt_and_evaluate, _estimate_prior
from harness.registry import all_methods
from harness.stages import stage_start
from harness.store import Store
from harness.training import infer


@pytest.fixture(scope="module")
def start(smoke_root: Path, tmp_path_factory: pytest.TempPathFactory):
    preset = get_preset("smoke").replace("adapt", steps=4, checkpoints=2)
    opts = Options(preset=preset, store=Store(tmp_path_factory.mktemp("reuse") / "s.db"),
                   device=torch.device("cpu"), precision="fp32", datasets_dir=smoke_root / "ds",
                   quiet=True, log=lambda m: None)
    p = prepare_data(preset, opts.datasets_dir, opts.runtime)
    _, ssl_state, _, source = stage_start(p, 0, preset, opts.store.cache, opts.runtime)
    return opts, p, source, ssl_state, _estimate_prior(source, p, 512, opts.runtime.autocast)


def _fresh(opts, source, state: dict, data, fn):
    """`fn` of a fresh inference of the lens finder with a checkpoint's `model.` weights (or the
    finder's own), at the harness's evaluation batch size and precision."""
    model = copy.deepcopy(source)
    if state is not None:
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    with torch.no_grad():
        return fn(infer(lambda b: model(b.images, b.catalog), data, opts.preset.adapt.eval_batch_size,
                        opts.runtime.autocast))


@pytest.mark.parametrize("name", ["source_only", "dann", "oracle"])
def test_reused_validators_and_selected_aurocs_equal_fresh_ones(start, name: str) -> None:
    opts, p, source, ssl_state, prior = start
    p = dataclasses.replace(p, priors={}, start_scores={})
    cls = all_methods()[name]
    metrics, _, _, final, cks = _adapt_and_evaluate(cls, {**cls.hparams, "steps": 4}, 0, p, opts, source,
                                                    ssl_state, prior)
    got = {(m.split, m.name): m.value for m in metrics}
    assert cks[-1].step == (4 if cls.train_model else 0)
    assert all(torch.equal(final[k], cks[-1].state[k]) for k in final)   # the last checkpoint is final
    fresh = _fresh(opts, source, final, p.pool, validator_scores)
    assert (got[("hard_pool", "im")], got[("hard_pool", "snd")]) == (fresh["im"], fresh["snd"])
    y = p.hard.labels[p.hard.split("test")]
    test_auroc = lambda c: _fresh(opts, source, c.state, p.test, lambda z: score_auroc(y, class_scores(z)))
    by_step = {c.step: c for c in cks}
    for which in ("validator", "labelled"):
        chosen = by_step[int(got[("hard_test", f"sel_{which}_step")])]
        assert got[("hard_test", f"auroc_sel_{which}")] == test_auroc(chosen)
    if cls.oracle:
        assert [c.test_auroc for c in cks[-2:]] == [test_auroc(c) for c in cks[-2:]]


def test_a_shared_start_models_test_auroc_is_that_of_a_fresh_inference(start) -> None:
    """source_only scores its start model (its only checkpoint) and leaves the value in the memo of the
    prepared data; dann starts from the same weights, so a selector picking its step 0 reads it."""
    opts, p, source, ssl_state, prior = start
    p = dataclasses.replace(p, priors={}, start_scores={})
    keys = []
    for name in ("source_only", "dann"):
        cls = all_methods()[name]
        *_, cks = _adapt_and_evaluate(cls, {**cls.hparams, "steps": 4}, 0, p, opts, source, ssl_state, prior)
        keys.append(cks[0].start_key)
    assert keys[0] is not None and keys[0] == keys[1]
    memo = [v for k, v in p.start_scores.items() if isinstance(k, tuple) and k[1] == keys[0]]
    y = p.hard.labels[p.hard.split("test")]
    assert memo == [_fresh(opts, source, None, p.test, lambda z: score_auroc(y, class_scores(z)))]


def test_selected_auroc_scores_each_set_of_weights_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(evaluation, "checkpoint_test_auroc",
                        lambda method, state, *a: calls.append(state["w"]) or 0.5 + state["w"] / 100)
    y = torch.tensor([0, 1, 0, 1]).numpy()
    p = type("P", (), {"hard": type("H", (), {"labels": y, "split": lambda self, s: slice(None)})()})()
    final = evaluation.Evaluation([], None, {}, torch.tensor([0.1, 0.9, 0.2, 0.8]).numpy())
    ck = lambda step, key=None: Checkpoint(step, {"w": step}, {}, 0.0, start_key=key)
    start, mid, last = ck(0, "h"), ck(2), ck(4)
    shared = {("hard_test_auroc", "h", 512, "fp32"): 0.77, ("hard_test_auroc", "other", 256, "fp32"): 0.1}
    sel = evaluation.SelectedAuroc(None, [start, mid, last], final, p, 512, None, shared, "fp32")
    assert sel(last) == 1.0 and calls == []          # the final weights: evaluate's scores
    assert sel(start) == 0.77 and calls == []        # a shared start model scored by an earlier run
    assert sel(mid) == sel(mid) == 0.52 and calls == [2]   # picked twice, scored once
    fresh_start = ck(0, "other")
    # another batch size's value is not this one's: scored, and kept beside it
    assert sel(fresh_start) == 0.5 and shared[("hard_test_auroc", "other", 512, "fp32")] == 0.5
    assert calls == [2, 0]
