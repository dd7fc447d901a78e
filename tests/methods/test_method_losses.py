"""Each shipped method's published loss against a value worked out by hand on a tiny example.

The expected numbers are derived in the comments with plain arithmetic (ln 2 = 0.693147,
ln 3 = 1.098612, softplus(x) = ln(1 + e^x); BCE with logits is softplus(-d) for label 1 and softplus(d)
for label 0; CE is logsumexp(z) - z_y), never by calling the code under test. Where a loss passes
through a method's own step, the method is fed a stub discriminator or a stub model whose outputs
are fixed or follow by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from method_fixtures import STEPS, B, batches, build_optimizer, make_ctx, start
from torch import Tensor, nn

from harness.api import Batch
from harness.errors import BadInput
from harness.registry import get_method

LN2, LN3 = math.log(2.0), math.log(3.0)


def labelled(rows: list[list[float]], labels: list[int] | None) -> Batch:
    """A batch whose images are the given 2-vectors, shaped (N, 1, 1, 2), with no catalog features."""
    x = torch.tensor(rows, dtype=torch.float32)
    y = None if labels is None else torch.tensor(labels)
    return Batch(x.view(len(rows), 1, 1, 2), torch.zeros(len(rows), 0), torch.arange(len(rows)), y)


class FixedDiscriminator(nn.Module):
    """Returns the given domain logits whatever it is shown, and remembers what it was shown."""

    def __init__(self, d: list[float]) -> None:
        super().__init__()
        self.d, self.seen = torch.tensor(d), None

    def forward(self, x: Tensor) -> Tensor:
        self.seen = x.detach()
        return self.d + 0.0 * x.sum()


# ---------------------------------------------------------------------------------- DANN, CDAN, IWDAN
def test_dann_domain_loss_is_the_sum_of_the_two_domain_means() -> None:
    method, _ = start("dann")
    method.disc = FixedDiscriminator([0.0, LN3, 0.0, 0.0, LN3])   # 2 source rows, then 3 target rows
    src = labelled([[0, 0], [0, 0]], [0, 1])
    # source (label 1): softplus(-0) = ln 2 = 0.693147, softplus(-ln 3) = ln(4/3) = 0.287682; mean 0.490415
    # target (label 0): ln 2, ln 2, softplus(ln 3) = ln 4 = 1.386294; mean 4 ln 2 / 3 = 0.924196
    # sum 1.414611 (the mean over the joint batch would be (ln 2 + ln 4/3 + 4 ln 2) / 5 = 0.750684)
    loss, acc = method.domain_loss(torch.zeros(5, 3), torch.zeros(5, 2), src)
    assert loss.item() == pytest.approx(1.414611, abs=1e-5)
    assert acc.item() == pytest.approx(3 / 5)   # right: source d = ln 3 > 0 and target d = 0, 0 (not > 0)
    assert method.disc.seen.shape == (5, 3)     # DANN's discriminator sees the embedding itself


def test_cdan_exact_multilinear_map_and_entropy_weighted_domain_means() -> None:
    from methods.cdan import entropy_weights, multilinear_map

    z = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]])
    p = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    # row b is [p_b0 · z_b, p_b1 · z_b]
    expected = torch.tensor([[0.25, 0.5, 0.75, 0.75, 1.5, 2.25], [-1.0, 0.0, 2.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(multilinear_map(z, p), expected)
    # H(0.5, 0.5) = ln 2 -> 1 + 1/2 = 1.5; H(0.8, 0.2) = 0.8·0.223144 + 0.2·1.609438 = 0.500402
    # -> 1 + e^-0.500402 = 1.606287
    torch.testing.assert_close(entropy_weights(torch.tensor([[0.5, 0.5], [0.8, 0.2]])),
                               torch.tensor([1.5, 1.606287]))

    method, _ = start("cdan")
    assert method.rdot is None and method.disc.net[0].in_features == 128 * 2   # d·K = 256 <= 4096: exact
    method.disc = FixedDiscriminator([0.0, LN3, 0.0, LN3])
    # softmax of [0, 0] is (0.5, 0.5) (weight 1.5); of [ln 4, 0] it is (0.8, 0.2) (weight 1.606287)
    logits = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0], [math.log(4.0), 0.0], [0.0, 0.0]])
    z = torch.arange(12.0).view(4, 3)
    loss, _ = method.domain_loss(z, logits, labelled([[0, 0], [0, 0]], [0, 1]))
    # source (label 1): (1.5 · ln 2 + 1.606287 · ln(4/3)) / (1.5 + 1.606287)
    #                 = (1.039721 + 0.462100) / 3.106287 = 0.483478
    # target (label 0): (1.606287 · ln 2 + 1.5 · ln 4) / 3.106287
    #                 = (1.113393 + 2.079442) / 3.106287 = 1.027862
    assert loss.item() == pytest.approx(0.483478 + 1.027862, abs=1e-5)
    torch.testing.assert_close(method.disc.seen[0], torch.tensor([0.0, 0.5, 1.0, 0.0, 0.5, 1.0]))


def test_cdan_randomised_map_only_above_the_exact_size() -> None:
    method, _ = start("cdan", exact_max_dim=100)
    assert method.rdot is not None and method.rdot.out_dim == 1024
    assert method.disc.net[0].in_features == 1024


def test_iwdann_weights_the_source_domain_and_class_terms() -> None:
    method, _ = start("iwdann")
    torch.testing.assert_close(method.iw, torch.tensor([1.5, 0.5]))   # prior estimate 0.75/0.5, 0.25/0.5
    method.iw.copy_(torch.tensor([2.0, 0.5]))
    method.disc = FixedDiscriminator([0.0, LN3, 0.0])                # source rows of class 0 and 1, target
    src = labelled([[0, 0], [0, 0]], [0, 1])
    loss, _ = method.domain_loss(torch.zeros(3, 3), torch.zeros(3, 2), src)
    # source: (2 · ln 2 + 0.5 · ln(4/3)) / 2 = (1.386294 + 0.143841) / 2 = 0.765068; target: ln 2 = 0.693147
    assert loss.item() == pytest.approx(1.458215, abs=1e-5)
    # class loss: CE([0, 0], y) = ln 2 for both rows; (2 · ln 2 + 0.5 · ln 2) / 2 = 1.25 ln 2 = 0.866434
    cls = method.class_loss(torch.zeros(2, 2), src)
    assert cls.item() == pytest.approx(0.866434, abs=1e-5)


def test_iwdann_weight_solve_clip_and_average() -> None:
    from methods.iwdann import solve_importance_weights

    joint = torch.tensor([[0.4, 0.1], [0.1, 0.4]])   # C[i, j] = P(pred i, y j); source prior (0.5, 0.5)
    prior = torch.tensor([0.5, 0.5])
    # C^-1 = [[0.4, -0.1], [-0.1, 0.4]] / 0.15
    # mu = (0.62, 0.38): w = (0.248 - 0.038, -0.062 + 0.152) / 0.15
    # = (1.4, 0.6), and 0.5 · 1.4 + 0.5 · 0.6 = 1 already
    torch.testing.assert_close(solve_importance_weights(joint, torch.tensor([0.62, 0.38]), prior),
                               torch.tensor([1.4, 0.6]))
    # mu = (0.95, 0.05): w = (0.375, -0.075) / 0.15 = (2.5, -0.5) -> clipped (2.5, 0)
    #   -> divided by 0.5 · 2.5: (2, 0)
    torch.testing.assert_close(solve_importance_weights(joint, torch.tensor([0.95, 0.05]), prior),
                               torch.tensor([2.0, 0.0]))
    method, _ = start("iwdann")
    method.estimate_weights = lambda: torch.tensor([2.0, 0.0])
    method.on_epoch_start(0)                        # the first pass keeps the harness's estimate
    torch.testing.assert_close(method.iw, torch.tensor([1.5, 0.5]))
    method.on_epoch_start(1)                        # then the average with the re-estimate: 0.5·old + 0.5·new
    torch.testing.assert_close(method.iw, torch.tensor([1.75, 0.25]))
    fixed, _ = start("iwdann", reestimate=False)
    fixed.on_epoch_start(1)
    torch.testing.assert_close(fixed.iw, torch.tensor([1.5, 0.5]))


def test_iwdann_estimates_from_the_model_without_a_harness_prior() -> None:
    cls = get_method("iwdann")
    ctx = make_ctx(cls)
    ctx.target_prior = None
    method = cls()
    method.setup(ctx)
    w = method.class_weights()
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert float(method.source_prior @ w) == pytest.approx(1.0, abs=1e-5)   # sum_y p_s(y) w[y] = 1


# ------------------------------------------------------------------------------------------- MCC
def test_mcc_loss_at_the_paper_temperature() -> None:
    method, _ = start("mcc")
    # logits / 2.5: rows [0, 0] and [ln 3, 0] -> Y = (0.5, 0.5), (0.75, 0.25)
    # weights 1 + e^-H: 1.5 and 1 + e^-0.562335 = 1.569877; scaled to sum 2: 0.977238, 1.022762
    # C = sum_n w_n y_n y_n^T = [[0.819613, 0.436077], [0.436077, 0.308232]]; row sums 1.255690, 0.744309
    # off-diagonal of the row-normalised C: 0.436077/1.255690 + 0.436077/0.744309 = 0.347283 + 0.585880
    # loss = 0.933163 / K = 0.466581
    loss = method.mcc(torch.tensor([[0.0, 0.0], [2.5 * LN3, 0.0]]))
    assert loss.item() == pytest.approx(0.466581, abs=1e-5)


# ------------------------------------------------------------------------------------------- AaD
def test_aad_attraction_and_dispersion_by_hand() -> None:
    from methods.contrastive_knn import aad_terms

    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], requires_grad=True)
    neigh = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])   # K = 1 bank score per sample
    attract, disperse = aad_terms(p, neigh)
    # attraction: -(0.9), -(0.8), -(0.3 + 0.2) -> mean -2.2/3 = -0.733333
    assert attract.item() == pytest.approx(-0.733333, abs=1e-6)
    # p0·p1 = 0.26, p0·p2 = 0.58, p1·p2 = 0.44; row sums 0.84, 0.70, 1.02 -> mean 2.56/3 = 0.853333
    assert disperse.item() == pytest.approx(0.853333, abs=1e-6)
    # gradient through both factors: each pair appears twice, so d/dp0 = 2 (p1 + p2) / 3 = (0.533333, 0.8)
    (g,) = torch.autograd.grad(disperse, p)
    torch.testing.assert_close(g[0], torch.tensor([0.533333, 0.8]))
    # K = 2: the attraction sums over the neighbours: -(0.9 + 0.1) for a sample with both one-hot neighbours
    two, _ = aad_terms(p[:1], torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    assert two.item() == pytest.approx(-1.0)


def test_aad_banks_are_written_per_step_never_refreshed_and_the_source_is_unused() -> None:
    method, ctx = start("contrastive_knn")
    assert method.hp["k"] == 5 and method.hp["alpha"] == 1.0 and method.hp["beta"] == 5.0   # VisDA setting
    method.on_epoch_start(0)
    feat0, prob0 = method.bank_feat.clone(), method.bank_prob.clone()
    src, tgt = batches(method, ctx)
    src.images = torch.full_like(src.images, float("nan"))   # source-free: a NaN source cannot reach the loss
    logs = method.update(src, tgt, 1)
    assert math.isfinite(logs["loss"]) and "cls" not in logs and "nce" not in logs
    assert logs["disperse_weight"] == pytest.approx(3.0 ** -5, rel=1e-6)   # (1 + 10 · 1/5)^-5
    hit = torch.zeros(len(ctx.target), dtype=torch.bool)
    hit[tgt.index] = True
    assert torch.equal(method.bank_feat[~hit], feat0[~hit])
    assert torch.equal(method.bank_prob[~hit], prob0[~hit])
    assert not torch.equal(method.bank_feat[hit], feat0[hit])
    after = method.bank_feat.clone()
    method.on_epoch_start(1)                                  # a new pass does not refill the bank
    assert torch.equal(method.bank_feat, after)


# -------------------------------------------------------------------------------------- AdaMatch
class MeanCentre(nn.Module):
    """A batch-statistics model to follow by hand: logits = scale · (x - batch mean of x), with a
    running mean updated in training (momentum 0.1) as batch norm's."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.register_buffer("running_mean", torch.zeros(2))

    def forward(self, images: Tensor, catalog: Tensor) -> Tensor:
        x = images.flatten(1)
        mean = x.mean(0)
        if self.training:
            self.running_mean.mul_(0.9).add_(0.1 * mean.detach())
        return self.scale * (x - mean)


def adamatch(name: str, u: list[list[float]]):
    """The method on the MeanCentre model, weak = identity, strong = x + 1, 4 steps, u fixed."""
    cls = get_method(name)
    ctx = make_ctx(cls)
    ctx.model, ctx.steps = MeanCentre(), 4
    ctx.augment = lambda x, strength="weak": x + 1.0 if strength == "strong" else x
    method = cls()
    method.setup(ctx)
    method.opt = build_optimizer(method)
    method.train()
    method.mix_weights = lambda like: torch.tensor(u)
    return method


def test_adamatch_pieces_by_hand() -> None:
    from methods._adamatch import align, interpolate_logits, relative_threshold, unlabelled_loss, warmup

    # [1, 2] + ([3, 0] - [1, 2]) · [0.25, 0.5] = [1.5, 1.0]
    torch.testing.assert_close(interpolate_logits(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]]),
                                                  torch.tensor([[0.25, 0.5]])), torch.tensor([[1.5, 1.0]]))
    # max softmax of [ln 4, 0] is 0.8, of [0, 0] 0.5: 0.9 · 0.65 = 0.585
    threshold = relative_threshold(torch.tensor([[math.log(4.0), 0.0], [0.0, 0.0]]), 0.9)
    assert threshold.item() == pytest.approx(0.585)
    # (0.6, 0.4) · (0.5/0.75, 0.5/0.25) = (0.4, 0.8) -> (1/3, 2/3)
    torch.testing.assert_close(align(torch.tensor([[0.6, 0.4]]), torch.tensor([0.5, 0.5]),
                                     torch.tensor([0.75, 0.25])), torch.tensor([[1 / 3, 2 / 3]]))
    # row 0 passes 0.6 with label 1: CE([0, ln 3], 1) = ln(4/3) = 0.287682; row 1 is masked; mean over 2
    loss, mask = unlabelled_loss(torch.tensor([[0.0, LN3], [0.0, 0.0]]),
                                 torch.tensor([[1 / 3, 2 / 3], [0.55, 0.45]]), 0.6)
    assert loss.item() == pytest.approx(0.143841, abs=1e-6) and mask.tolist() == [1.0, 0.0]
    assert warmup(0.0) == 0.0 and warmup(0.25) == pytest.approx(0.5) and warmup(0.75) == pytest.approx(1.0)


def test_adamatch_step_by_hand() -> None:
    method = adamatch("pseudo_label", [[0, 1], [1, 0], [0.5, 0.5], [0, 0]])
    src = labelled([[1, 0], [3, 0]], [0, 1])
    tgt = labelled([[0, 2], [2, 0]], None)
    logs = method.update(src, tgt, 1)
    # source-only pass: [1,0], [3,0], [2,1], [4,1] (weak, then strong = x + 1), mean [2.5, 0.5]
    #   logits [-1.5,-0.5], [0.5,-0.5], [-0.5,0.5], [1.5,0.5]
    # joint pass adds the target [0,2], [2,0] and [1,3], [3,1]: mean [2, 1]
    #   source logits [-1,-1], [1,-1], [0,0], [2,0]; target weak [-2,1], [0,-1]; strong [-1,2], [1,0]
    # interpolated with u: weak [-1,-0.5], [0.5,-1]; strong [-0.25,0.25], [2,0]
    # source CE: weak 0.974077 (y 0), 1.701413 (y 1); strong 0.974077, 2.126928
    #   0.5 · (1.337745 + 1.550503) = 1.444124
    assert logs["cls"] == pytest.approx(1.444124, abs=1e-5)
    # weak source confidences sigmoid(0.5) = 0.622459, sigmoid(1.5) = 0.817574: 0.9 · 0.720017 = 0.648015
    assert logs["threshold"] == pytest.approx(0.648015, abs=1e-5)
    # p_src = mean softmax of the interpolated weak source = (0.597558, 0.402442) (first batch: no EMA yet)
    # target weak softmax (0.047426, 0.952574), (0.731059, 0.268941): p_tgt = (0.389242, 0.610758)
    torch.testing.assert_close(method.p_src, torch.tensor([0.597558, 0.402442]))
    torch.testing.assert_close(method.p_tgt, torch.tensor([0.389242, 0.610758]))
    # aligned: (0.103939, 0.896061), (0.863633, 0.136367): both pass 0.648015, pseudo-labels 1, 0
    # strong target CE: CE([-1,2], 1) = ln(1 + e^-3) = 0.048587, CE([1,0], 0) = ln(1 + e^-1) = 0.313262
    assert logs["mask_rate"] == 1.0 and logs["unlabelled"] == pytest.approx(0.180925, abs=1e-5)
    # mu(1/4) = 0.5 - cos(pi/2)/2 = 0.5; loss = 1.444124 + 0.5 · 0.180925
    assert logs["mu"] == pytest.approx(0.5) and logs["loss"] == pytest.approx(1.534586, abs=1e-5)
    # batch-norm-like running statistics saw only the joint pass: 0.1 · [2, 1]
    torch.testing.assert_close(method.model.running_mean, torch.tensor([0.2, 0.1]))
    # the next batch is averaged in: 0.999 · p_src + 0.001 · (new batch mean)
    before = method.p_src.clone()
    method.update(src, tgt, 2)
    assert not torch.equal(method.p_src, before)
    assert (method.p_src - before).abs().max().item() < 2e-3


def test_adamatch_semi_supervised_step_by_hand() -> None:
    method = adamatch("pseudo_label_semi", [[0, 1], [1, 0], [0.5, 0.5], [0.5, 0.5], [0, 0], [1, 1]])
    lab = labelled([[1, 1]], [0])
    method.labelled_batch = lambda n: lab
    logs = method.update(labelled([[1, 0], [3, 0]], [0, 1]), labelled([[0, 2], [2, 0]], None), 1)
    # labelled-only pass: source [1,0], [3,0], split [1,1] and their strong views: mean [13/6, 5/6]
    # joint pass (+ target weak [0,2], [2,0], strong [1,3], [3,1]): mean [1.9, 1.1]
    # interpolated: weak [-0.9,-0.833333], [0.833333,-1.1], [-1.033333,0.033333];
    #               strong [-0.033333,0.033333], [2.1,-0.1], [-0.166667,1.166667]
    # source CE 0.5 · ((0.727036 + 2.068446)/2 + (0.727036 + 2.305083)/2) = 1.456900
    # split CE 0.5 · (1.362431 + 1.567296) = 1.464864
    assert logs["cls"] == pytest.approx(1.456900, abs=1e-5)
    assert logs["labelled"] == pytest.approx(1.464864, abs=1e-5)
    # threshold from the SOURCE rows only: 0.9 · (0.516660 + 0.873618)/2 = 0.625625
    assert logs["threshold"] == pytest.approx(0.625625, abs=1e-5)
    # aligned target (0.154292, 0.845708), (0.908767, 0.091233): both pass; CE 0.059033, 0.263282
    assert logs["unlabelled"] == pytest.approx(0.161158, abs=1e-5)
    assert logs["loss"] == pytest.approx(1.456900 + 1.464864 + 0.5 * 0.161158, abs=1e-5)


def test_adamatch_alignment_options() -> None:
    with pytest.raises(BadInput):
        start("pseudo_label", align_to="uniform")
    cls = get_method("pseudo_label")
    ctx = make_ctx(cls, align_to="estimated")
    ctx.target_prior = None
    with pytest.raises(BadInput):
        cls().setup(ctx)


# ---------------------------------------------------------------------------- controls and references
def test_source_finetune_sees_only_the_source_batch() -> None:
    method, ctx = start("source_finetune")
    src, tgt = batches(method, ctx)
    tgt.images = torch.full_like(tgt.images, float("nan"))
    with torch.no_grad():
        expected = F.cross_entropy(method.model(src.images, src.catalog), src.labels).item()
    assert method.update(src, tgt, 0)["loss"] == pytest.approx(expected, rel=1e-5)


def test_oracle_trains_on_pool_and_split_in_proportion() -> None:
    method, ctx = start("oracle")
    assert type(method).budget == "source" and method.hp["optimizer"] == "adamw"
    assert isinstance(method.opt, torch.optim.AdamW)
    rows = []
    method.model.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    src, tgt = batches(method, ctx)
    method.update(src, tgt, 0)
    assert rows == [B + round(B * 24 / 40)]   # 8 pool rows + 24/40 of that from the 24-row labelled split


# ------------------------------------------------------------------------------------------ recipes
def test_recipes_are_the_references() -> None:
    def hp(name: str) -> dict:
        return get_method(name).hparams

    for name in ("dann", "cdan", "iwdann"):
        assert {k: hp(name)[k] for k in ("optimizer", "lr", "momentum", "weight_decay", "schedule",
                                         "backbone_mult")} == {
            "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "schedule": "ganin",
            "backbone_mult": 0.1}
    assert hp("mcc")["lr"] == 0.005 and hp("mcc")["temperature"] == 2.5
    aad = hp("contrastive_knn")
    assert (aad["lr"], aad["nesterov"], aad["weight_decay"], aad["backbone_mult"]) == (1e-3, True, 1e-3, 0.1)
    assert aad["nce_weight"] == 0.0 and aad["source_weight"] == 0.0
    ada = hp("pseudo_label")
    assert (ada["lr"], ada["nesterov"], ada["schedule"], ada["lr_decay"], ada["backbone_mult"], ada["uratio"],
            ada["tau"], ada["dist_momentum"], ada["align_to"]) == (
        0.03, False, "cos_decay", 0.25, 1.0, 3, 0.9, 0.999, "source")
    assert get_method("source_finetune").role == "control" and STEPS > 0
