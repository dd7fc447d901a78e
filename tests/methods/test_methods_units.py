"""Unit checks for the adaptation methods on a tiny hand-built context (CPU, a few seconds).

The per-method checks are parametrised over the registry (as DomainBed's test_models.py is over
its algorithm list), so a new file in `methods/` gets them with no edit here; each check applies
only where the method's flags say it can (`train_model`, `uses_target_labels`, `oracle`).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from method_fixtures import STEPS, batches, domain, run_method, start

from harness.api import scalars
from harness.neighbours import faiss_available, knn_search
from harness.registry import all_methods, get_method

ROOT = Path(__file__).resolve().parents[2]


def registered(trained: bool | None = None) -> list[str]:
    """Names of the registered methods (optionally only those whose `train_model` is `trained`)."""
    return [n for n, c in all_methods().items() if trained is None or c.train_model is trained]


# (uses_target_labels, oracle) of the shipped methods: these flags decide a method's row in the tables
# ("unsupervised DA" or not), so flipping one is a test failure. A new method's flags are its own claim;
# test_target_labels_only_where_declared checks it keeps to them.
SHIPPED_FLAGS = {
    "cdan": (False, False), "contrastive_knn": (False, False), "dann": (False, False),
    "iwdann": (False, False), "mcc": (False, False), "oracle": (True, True), "pseudo_label": (False, False),
    "pseudo_label_semi": (True, False), "source_finetune": (False, False), "source_only": (False, False),
    "ssl_joint": (False, False),
    "target_labelled": (True, False),
}


@pytest.mark.parametrize("name", registered())
def test_update_runs_finite_and_trains(name: str) -> None:
    cls = get_method(name)
    method, ctx = start(name)
    assert method.model is ctx.model and method.ctx is ctx and method.hp == ctx.hparams  # base setup ran
    # checkpoints are state_dicts: the context and hparams are plain attributes, never state
    tops = {k.split(".")[0] for k in method.state_dict()}
    own = {*dict(method.named_children()), *dict(method.named_buffers(recurse=False))}
    assert "model" in tops and tops <= own
    assert not tops & {"ctx", "hp"}
    if not cls.train_model:  # the harness never calls update(); the start model must still predict
        logits = method.predict(ctx.target.batch(torch.arange(4)))
        assert logits.shape == (4, 2) and torch.isfinite(logits).all()
        return
    before = {k: v.detach().clone() for k, v in method.model.named_parameters()}
    method.on_epoch_start(0)
    for step in range(STEPS):
        out = method.update(*batches(method, ctx), step)
        assert out and all(isinstance(v, float) for v in out.values()), out
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    changed = [k for k, v in method.model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, f"{name} did not change any model parameter"
    logits = method.predict(ctx.target.batch(torch.arange(4)))
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()


def test_shipped_methods_declare_their_label_use() -> None:
    """Among the shipped methods only pseudo_label_semi, target_labelled and oracle see target labels."""
    assert set(SHIPPED_FLAGS) <= set(registered())
    for name, flags in SHIPPED_FLAGS.items():
        cls = get_method(name)
        assert (cls.uses_target_labels, cls.oracle) == flags, name
    unsupervised = [n for n, (labels, oracle) in SHIPPED_FLAGS.items() if not labels and not oracle]
    assert "pseudo_label" in unsupervised and "labelled_weight" not in get_method("pseudo_label").hparams
    assert "labelled_weight" in get_method("pseudo_label_semi").hparams


@pytest.mark.parametrize("name", registered())
def test_target_labels_only_where_declared(name: str) -> None:
    cls = get_method(name)
    assert not cls.oracle or cls.uses_target_labels  # an oracle always counts as label-using
    run_method(name, steps=2)  # the Tripwire in ctx.labelled fails any access by the undeclared


def readme_example() -> str:
    """The complete example method of methods/README.md (kept runnable by the test below)."""
    section = (ROOT / "methods" / "README.md").read_text().split("## A complete new method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_a_new_method_file_is_listed_and_checked_with_no_test_edit(tmp_path: Path) -> None:
    """The README's example saved in a copy of `methods/` is registered and gets every per-method check."""
    assert "example_probe" not in registered(), "the probe name must be new"
    pkg = tmp_path / "methods"
    shutil.copytree(ROOT / "methods", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "example_probe.py").write_text(readme_example().replace('"entropy_min"', '"example_probe"'))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600, check=False)

    # listed: the smoke test is parametrised over the registry, and only the copy holds the new file
    smoke = run("-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                str(ROOT / "tests" / "methods" / "test_methods_smoke.py"))
    assert "test_method_runs_on_smoke_preset[example_probe]" in smoke.stdout, smoke.stdout + smoke.stderr
    units = run("-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "-k", "example_probe",
                str(ROOT / "tests" / "methods" / "test_methods_units.py"))
    assert units.returncode == 0, units.stdout + units.stderr
    passed = set(re.findall(r"PASSED \S+::(\w+)\[example_probe\]", units.stdout))
    assert passed == {"test_update_runs_finite_and_trains", "test_target_labels_only_where_declared",
                      "test_update_under_bf16_autocast"}, units.stdout


def test_scalars_reads_tensors_and_numbers_as_float32() -> None:
    loss = torch.tensor(1.0 / 3.0, requires_grad=True) * 1.0
    out = scalars(loss=loss, rate=torch.tensor(0.25, dtype=torch.bfloat16), lam=0.1)
    assert list(out) == ["loss", "rate", "lam"] and all(type(v) is float for v in out.values())
    assert out == {"loss": torch.tensor(1.0 / 3.0).item(), "rate": 0.25, "lam": torch.tensor(0.1).item()}
    assert scalars() == {}


def test_scalars_is_a_read_only_mapping_in_the_order_given() -> None:
    from collections.abc import Mapping

    out = scalars(b=torch.tensor(2.0), a=0.5, c=torch.tensor([3.0]).sum())
    assert isinstance(out, Mapping) and list(out) == ["b", "a", "c"] and len(out) == 3
    assert dict(out) == {"b": 2.0, "a": 0.5, "c": 3.0} and {**out, "a": 1.0}["a"] == 1.0
    with pytest.raises(KeyError):
        out["missing"]
    with pytest.raises(TypeError):
        out["a"] = 2.0   # a logged term is never rewritten in place


def test_gradient_reversal_flips_feature_gradient() -> None:
    from methods._adversarial import grl_lambda

    method, ctx = start("dann")
    src = ctx.source.sample(2, ctx.generator)   # 2 source rows, 4 target rows
    z = torch.randn(6, method.model.dim, requires_grad=True)
    logits = torch.randn(6, 2)

    def plain_loss(x: torch.Tensor) -> torch.Tensor:   # Ganin's: source mean + target mean, no reversal
        d = method.disc(x)
        return (F.binary_cross_entropy_with_logits(d[:2], torch.ones(2))
                + F.binary_cross_entropy_with_logits(d[2:], torch.zeros(4)))

    plain = plain_loss(z)
    (g_plain,) = torch.autograd.grad(plain, z)
    for lam in (1.0, 0.3):
        method.grl.update_weight(lam)
        rev, _ = method.domain_loss(z, logits, src)
        torch.testing.assert_close(rev, plain)
        (g_rev,) = torch.autograd.grad(rev, z)
        torch.testing.assert_close(g_rev, -lam * g_plain)
    # the discriminator itself is trained on the un-reversed loss
    rev, _ = method.domain_loss(z.detach(), logits, src)
    g_disc = torch.autograd.grad(rev, list(method.disc.parameters()))
    g_disc_plain = torch.autograd.grad(plain_loss(z.detach()), list(method.disc.parameters()))
    for a, b in zip(g_disc, g_disc_plain):
        torch.testing.assert_close(a, b)
    assert grl_lambda(0.0) == 0.0 and grl_lambda(0.5) == pytest.approx(0.98661, abs=1e-4)
    assert 0.9999 < grl_lambda(1.0) < 1.0


def test_pseudo_labels_below_threshold_contribute_nothing() -> None:
    from methods._adamatch import unlabelled_loss, warmup

    strong = torch.randn(8, 2, requires_grad=True)
    probs = torch.tensor([[0.6, 0.4]] * 8)
    loss, mask = unlabelled_loss(strong, probs, threshold=0.7)
    assert loss.item() == 0.0 and mask.sum() == 0
    loss.backward()
    assert torch.count_nonzero(strong.grad) == 0
    loss, mask = unlabelled_loss(strong, probs, threshold=0.5)
    assert loss.item() > 0 and mask.sum() == 8
    assert warmup(0.0) == 0.0 and warmup(0.5) == pytest.approx(1.0) and warmup(0.9) == pytest.approx(1.0)
    # end to end: tau > 1 puts the relative threshold above any confidence
    _, logs = run_method("pseudo_label", steps=3, tau=2.0)
    assert all(r["mask_rate"] == 0.0 and r["unlabelled"] == 0.0 for r in logs)


@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
@pytest.mark.parametrize("q,n,k", [(50, 2000, 10), (3, 100, 100), (64, 5000, 1), (16, 100_000, 6)])
def test_faiss_and_torch_neighbours_agree(q: int, n: int, k: int) -> None:
    g = torch.Generator().manual_seed(q + n)
    queries = F.normalize(torch.randn(q, 32, generator=g), dim=1)
    bank = F.normalize(torch.randn(n, 32, generator=g), dim=1)
    s_f, i_f = knn_search(queries, bank, k, backend="faiss")
    s_t, i_t = knn_search(queries, bank, k, backend="torch")
    assert i_f.dtype == i_t.dtype == torch.int64 and i_f.shape == (q, min(k, n))
    assert torch.equal(i_f, i_t)
    torch.testing.assert_close(s_f, s_t, atol=1e-5, rtol=0)
    _, i_a = knn_search(queries, bank, k)
    assert torch.equal(i_a, i_t)


def test_knn_search_fallback_without_faiss(monkeypatch) -> None:
    neighbours = importlib.import_module("harness.neighbours")
    monkeypatch.setattr(neighbours, "faiss_available", lambda: False)
    bank = F.normalize(torch.randn(30, 8), dim=1)
    _, i = knn_search(bank[:4], bank, 3)
    assert torch.equal(i[:, 0], torch.arange(4))  # each vector is its own nearest neighbour
    with pytest.raises(RuntimeError):
        knn_search(bank[:4], bank, 3, backend="faiss")


def test_torch_knn_chunks_give_the_one_chunk_answer(monkeypatch) -> None:
    """The torch search splits the queries to cap its score matrix (larger chunks on CUDA); the cap
    changes only the chunking, never the neighbours."""
    neighbours = importlib.import_module("harness.neighbours")
    g = torch.Generator().manual_seed(3)
    queries = F.normalize(torch.randn(37, 16, generator=g), dim=1)
    bank = F.normalize(torch.randn(500, 16, generator=g), dim=1)
    whole = knn_search(queries, bank, 5, backend="torch")
    monkeypatch.setattr(neighbours, "_TORCH_SCORE_ELEMS", 500 * 4)   # chunks of 4 queries, the last of 1
    chunked = knn_search(queries, bank, 5, backend="torch")
    assert torch.equal(chunked[1], whole[1])
    torch.testing.assert_close(chunked[0], whole[0], atol=1e-6, rtol=0)   # BLAS blocks by matrix size
    assert torch.equal(whole[1][:, 0], (queries @ bank.T).argmax(1))


def test_a_divergence_is_reported_before_the_errors_it_causes() -> None:
    """Logs are checked a step late, so the next step (or an epoch hook) already runs on a diverged
    model: the epoch hook must see checked weights (IWDANN's re-estimate would hand NaNs to lstsq),
    and an error raised in the next step must surface as the divergence that caused it."""
    import contextlib

    from harness.adapt import adapt
    from harness.config import AdaptConfig

    method, ctx = start("iwdann")
    ctx.steps = 10                  # 40 target rows / 8 a batch: epochs of 5 steps; checkpoints at 3, 7, 10
    update = method.update

    def nan_weights_at_fifth(src, tgt, step):
        logs = update(src, tgt, step)
        if step == 4:               # the epoch's last step, with no checkpoint right after it
            with torch.no_grad():
                for p in method.model.parameters():
                    p.fill_(float("nan"))
            return {**logs, "loss": float("nan")}
        return logs

    hook, hook_saw_finite = method.on_epoch_start, []

    def checked_hook(epoch):        # on CUDA a NaN here could be a device-side assert, not an exception
        hook_saw_finite.append(all(torch.isfinite(p).all() for p in method.model.parameters()))
        hook(epoch)

    method.update, method.on_epoch_start = nan_weights_at_fifth, checked_hook
    with pytest.raises(FloatingPointError, match=r"iwdann: training diverged at step 5 \(loss = nan\)"):
        adapt(method, ctx, ctx.target, domain(24, True, 3, shift=0.5), AdaptConfig(checkpoints=3),
              contextlib.nullcontext, quiet=True)
    assert hook_saw_finite == [True]   # epoch 0 only: epoch 1's hook never ran on the diverged weights

    method, ctx = start("dann")
    update = method.update

    def nan_then_error(src, tgt, step):
        if step == 2:
            raise RuntimeError("an error the diverged weights caused")
        logs = update(src, tgt, step)
        return {**logs, "domain": float("nan")} if step == 1 else logs

    method.update = nan_then_error
    with pytest.raises(FloatingPointError, match=r"dann: training diverged at step 2 \(domain = nan\)") as e:
        adapt(method, ctx, ctx.target, domain(24, True, 3, shift=0.5), AdaptConfig(checkpoints=1),
              contextlib.nullcontext, quiet=True)
    assert isinstance(e.value.__context__, RuntimeError)


def test_weights_that_overflow_after_a_finite_loss_are_never_scored(monkeypatch) -> None:
    """A step's loss is computed before its update, so an update that overflows (say, a bf16 gradient)
    logs a finite loss: the weights themselves are checked before each checkpoint and epoch hook."""
    import contextlib

    import harness.adapt as adapt_module
    from harness.config import AdaptConfig

    method, ctx = start("dann")   # 5 steps: checkpoints after steps 2 and 5
    update, scored = method.update, []

    def inf_weights_after_second(src, tgt, step):
        logs = update(src, tgt, step)   # finite: computed before the weights go bad
        if step == 1:
            with torch.no_grad():
                next(iter(method.disc.parameters())).fill_(float("inf"))
        return logs

    real = adapt_module.checkpoint
    monkeypatch.setattr(adapt_module, "checkpoint", lambda m, *a: scored.append(a[2]) or real(m, *a))
    method.update = inf_weights_after_second
    with pytest.raises(FloatingPointError, match=r"dann: training diverged by step 2 \(weights not finite\)"):
        adapt_module.adapt(method, ctx, ctx.target, domain(24, True, 3, shift=0.5),
                           AdaptConfig(checkpoints=2), contextlib.nullcontext, quiet=True)
    assert scored == [0]


def test_finite_weights_whose_outputs_overflow_are_never_scored() -> None:
    """Finite weights can still overflow in the forward pass: the checkpoint checks the outputs it scores,
    so the run stops as diverged instead of handing NaNs to the metrics."""
    import contextlib

    from harness.adapt import adapt
    from harness.config import AdaptConfig

    method, ctx = start("dann")   # 5 steps: checkpoints after steps 2 and 5
    update = method.update

    def huge_head_after_second(src, tgt, step):
        logs = update(src, tgt, step)
        if step == 1:
            with torch.no_grad():
                for p in method.model.head.parameters():
                    p.fill_(3e38)   # finite, but any sum of two such terms is not
        return logs

    method.update = huge_head_after_second
    with pytest.raises(FloatingPointError, match=r"dann: training diverged by step 2 \(outputs not finite\)"):
        adapt(method, ctx, ctx.target, domain(24, True, 3, shift=0.5), AdaptConfig(checkpoints=2),
              contextlib.nullcontext, quiet=True)


def _wide_rows(n: int, k: int, seed: int) -> torch.Tensor:
    """Rows of random scores, plus rows whose k best entries all sit where a two-pass top-k could miss
    them: at the end of the row (the ragged tail and the blocks before it), in one run of neighbours,
    one per block far apart; a row of many equal scores; and an all-negative row."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(6, n, generator=g)
    rows[1, -k:] += 100.0                            # the k best at the very end
    rows[2, 1000:1000 + k] += 100.0                  # the k best side by side
    rows[3, torch.arange(k) * (n // k)] += 100.0     # the k best spread out, one per block or fewer
    rows[4] = torch.randint(0, 40, (n,), generator=g).float()   # heavy ties, including at the k-th
    rows[5] = rows[5].abs().neg()                    # all negative: a zero-filled block would win
    return rows


@pytest.mark.parametrize("n,k", [(100_003, 7), (1 << 15, 12), (131_071, 40), (40_000, 1), (50_000, 64),
                                 (40_000, 100)])
def test_two_pass_row_topk_gives_torch_topks_values(n: int, k: int) -> None:
    """`row_topk` (block maxima, then the k best blocks; plain `torch.topk` when k blocks would be a
    large share of the row) returns `torch.topk`'s values exactly, and its indices where scores do
    not tie; where they tie, each index still holds its value, once."""
    from harness.neighbours import row_topk

    rows = _wide_rows(n, k, n + k)
    got_v, got_i = row_topk(rows, k)
    ref_v, ref_i = torch.topk(rows, k, dim=1)
    assert torch.equal(got_v, ref_v)
    assert torch.equal(got_i[[0, 1, 2, 3, 5]], ref_i[[0, 1, 2, 3, 5]])   # no ties among the k best
    assert torch.equal(rows.gather(1, got_i), got_v)
    assert all(len(set(r.tolist())) == k for r in got_i)


def test_contrastive_knn_bank_tracks_batch_and_excludes_self() -> None:
    method, _ = run_method("contrastive_knn", steps=2)
    assert method.bank_feat.shape == (40, method.model.dim) and method.bank_prob.shape == (40, 2)
    torch.testing.assert_close(method.bank_feat.norm(dim=1), torch.ones(40))
    torch.testing.assert_close(method.bank_prob.sum(1), torch.ones(40))
    rows = torch.arange(40)
    neigh = method.target_neighbours(method.bank_feat, rows)   # each bank row queried against the bank
    assert neigh.shape == (40, method.hp["k"])
    assert not (neigh == rows[:, None]).any()                  # nobody is its own neighbour


@pytest.mark.parametrize("name", registered(trained=True))
def test_update_under_bf16_autocast(name: str) -> None:
    """The harness runs update() (and we run bank refreshes) under bf16 autocast on capable CPUs."""
    method, ctx = start(name)
    ctx.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    method.on_epoch_start(0)
    for step in range(2):
        src, tgt = batches(method, ctx)
        with ctx.autocast():
            out = method.update(src, tgt, step)
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out


def test_a_non_finite_loss_stops_the_loop_at_its_step() -> None:
    """The harness's loop checks every step's logged losses, not only the last step's: a model that
    went to NaN mid-run must not go on to be scored (or selected) at a checkpoint."""
    import contextlib

    from harness.adapt import adapt
    from harness.config import AdaptConfig

    method, ctx = start("dann")
    update = method.update

    def nan_at_third_step(src, tgt, step):   # the weights stay finite: only the logged loss is NaN
        logs = update(src, tgt, step)
        return {**logs, "loss": float("nan")} if step == 2 else logs

    method.update = nan_at_third_step
    with pytest.raises(FloatingPointError, match=r"dann: training diverged at step 3 \(loss = nan\)"):
        adapt(method, ctx, ctx.target, domain(24, True, 3, shift=0.5), AdaptConfig(checkpoints=2),
              contextlib.nullcontext, quiet=True)


def test_a_non_finite_last_step_is_caught_before_its_checkpoint_is_scored(monkeypatch) -> None:
    """The loop reads each step's logs one step late (so a GPU never idles on the host): the step
    before a checkpoint, and the very last step, must still be checked before the weights are scored."""
    import contextlib

    import harness.adapt as adapt_module
    from harness.config import AdaptConfig

    method, ctx = start("dann")   # STEPS = 5 steps: checkpoints after steps 2 and 5
    update, scored = method.update, []

    def nan_at(last: int):
        def wrapped(src, tgt, step):
            logs = update(src, tgt, step)
            return {**logs, "domain": float("inf")} if step == last else logs
        return wrapped

    real = adapt_module.checkpoint
    monkeypatch.setattr(adapt_module, "checkpoint", lambda m, *a: scored.append(a[2]) or real(m, *a))
    for last in (4, 1):   # the final step; the step just before the first checkpoint
        scored.clear()
        method.update = nan_at(last)
        message = rf"dann: training diverged at step {last + 1} \(domain = inf\)"
        with pytest.raises(FloatingPointError, match=message):
            adapt_module.adapt(method, ctx, ctx.target, domain(24, True, 3, shift=0.5),
                               AdaptConfig(checkpoints=2), contextlib.nullcontext, quiet=True)
        assert all(step <= last for step in scored), scored   # no checkpoint after the bad step was scored
