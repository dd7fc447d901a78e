"""Unit checks for the adaptation methods on a tiny hand-built context (CPU, a few seconds)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from harness.api import AdaptationMethod, AdaptContext, DomainData
from harness.models.finder import LensFinder
from harness.neighbours import faiss_available, knn_search
from harness.registry import get_method

METHODS = ["dann", "cdan", "mcc", "pseudo_label", "pseudo_label_semi", "contrastive_knn"]
B, STEPS = 8, 5


class Tripwire:
    """Stands in for ctx.labelled: any use fails the test."""

    def __getattr__(self, name: str):
        raise AssertionError(f"method touched ctx.labelled.{name} without uses_target_labels")

    def __len__(self) -> int:
        raise AssertionError("method touched len(ctx.labelled) without uses_target_labels")


def domain(n: int, labels: bool, seed: int, shift: float = 0.0) -> DomainData:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    images = torch.randn(n, 3, 16, 16, generator=g) + shift + y[:, None, None, None].float()
    return DomainData(images, torch.randn(n, 4, generator=g), y if labels else None, f"d{seed}")


def weak(x: torch.Tensor, strength: str = "weak") -> torch.Tensor:
    x = torch.flip(x, dims=[3])
    return x + 0.1 * torch.randn_like(x) if strength == "strong" else x


def make_ctx(cls: type[AdaptationMethod], **overrides) -> AdaptContext:
    torch.manual_seed(0)
    labelled = domain(24, True, 3, shift=0.5) if cls.uses_target_labels else Tripwire()
    return AdaptContext(
        model=LensFinder("small", 3, n_features=4), source=domain(64, True, 1),
        target=domain(40, False, 2, shift=0.5), labelled=labelled, device=torch.device("cpu"),
        steps=STEPS, batch_size=B, num_classes=2, seed=0, hparams={**cls.hparams, **overrides},
        augment=weak, generator=torch.Generator().manual_seed(0), log=lambda s: None)


def run_method(name: str, steps: int = STEPS, **overrides) -> tuple[AdaptationMethod, list[dict]]:
    cls = get_method(name)
    ctx = make_ctx(cls, **overrides)
    method = cls()
    method.setup(ctx)
    method.train()
    method.on_epoch_start(0)
    logs = []
    for step in range(steps):
        src, tgt = ctx.source.sample(B, ctx.generator), ctx.target.sample(B, ctx.generator)
        assert tgt.labels is None
        with ctx.autocast():
            logs.append(method.update(src, tgt, step))
    return method, logs


@pytest.mark.parametrize("name", METHODS)
def test_update_runs_finite_and_trains(name: str) -> None:
    cls = get_method(name)
    ctx = make_ctx(cls)
    method = cls()
    method.setup(ctx)
    before = {k: v.detach().clone() for k, v in method.model.named_parameters()}
    method.on_epoch_start(0)
    for step in range(STEPS):
        out = method.update(ctx.source.sample(B, ctx.generator), ctx.target.sample(B, ctx.generator), step)
        assert out and all(isinstance(v, float) for v in out.values()), out
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
    changed = [k for k, v in method.model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, f"{name} did not change any model parameter"
    logits = method.predict(ctx.target.batch(torch.arange(4)))
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", METHODS)
def test_target_labels_only_where_declared(name: str) -> None:
    cls = get_method(name)
    expected = name == "pseudo_label_semi"
    assert cls.uses_target_labels is expected and not cls.oracle
    run_method(name, steps=2)  # the Tripwire in ctx.labelled fails any access by the others


def test_gradient_reversal_flips_feature_gradient() -> None:
    from methods.dann import grl_lambda

    method = get_method("dann")()
    method.setup(make_ctx(get_method("dann")))
    z = torch.randn(6, method.model.dim, requires_grad=True)
    logits = torch.randn(6, 2)
    y = torch.tensor([1.0, 1, 1, 0, 0, 0])
    plain = F.binary_cross_entropy_with_logits(method.disc(z), y)
    (g_plain,) = torch.autograd.grad(plain, z)
    for lam in (1.0, 0.3):
        method.grl.update_weight(lam)
        rev, _ = method.domain_loss(z, logits, 3)
        assert torch.allclose(rev, plain)
        (g_rev,) = torch.autograd.grad(rev, z)
        torch.testing.assert_close(g_rev, -lam * g_plain)
    # the discriminator itself is trained on the un-reversed loss
    rev, _ = method.domain_loss(z.detach(), logits, 3)
    g_disc = torch.autograd.grad(rev, list(method.disc.parameters()))
    g_disc_plain = torch.autograd.grad(F.binary_cross_entropy_with_logits(method.disc(z.detach()), y),
                                       list(method.disc.parameters()))
    for a, b in zip(g_disc, g_disc_plain):
        torch.testing.assert_close(a, b)
    assert grl_lambda(0.0) == 0.0 and grl_lambda(0.5) == pytest.approx(0.98661, abs=1e-4)
    assert 0.9999 < grl_lambda(1.0) < 1.0


def test_pseudo_labels_below_threshold_contribute_nothing() -> None:
    from methods.pseudo_label import unlabelled_loss, warmup

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
@pytest.mark.parametrize("q,n,k", [(50, 2000, 10), (3, 100, 100), (64, 5000, 1)])
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


def test_contrastive_knn_bank_tracks_batch_and_excludes_self() -> None:
    method, _ = run_method("contrastive_knn", steps=2)
    assert method.bank_feat.shape == (40, method.model.dim) and method.bank_prob.shape == (40, 2)
    torch.testing.assert_close(method.bank_feat.norm(dim=1), torch.ones(40))
    torch.testing.assert_close(method.bank_prob.sum(1), torch.ones(40))
    assert method.src_feat.shape[0] == min(64, method.hp["source_bank"])
    rows = torch.arange(40)
    neigh = method.target_neighbours(method.bank_feat, rows)   # each bank row queried against the bank
    assert neigh.shape == (40, method.hp["k"])
    assert not (neigh == rows[:, None]).any()                  # nobody is its own neighbour


@pytest.mark.parametrize("name", METHODS)
def test_update_under_bf16_autocast(name: str) -> None:
    """The harness runs update() (and we run bank refreshes) under bf16 autocast on capable CPUs."""
    cls = get_method(name)
    ctx = make_ctx(cls)
    ctx.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    method = cls()
    method.setup(ctx)
    method.on_epoch_start(0)
    for step in range(2):
        with ctx.autocast():
            out = method.update(ctx.source.sample(B, ctx.generator), ctx.target.sample(B, ctx.generator), step)
        assert all(torch.isfinite(torch.tensor(v)) for v in out.values()), out
