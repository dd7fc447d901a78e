"""Substructure task (DeepLense Test I): the physics helpers against hand computations, the cards, the
renderer's determinism and classes, the resampling to one angular grid, and the multi-class metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from harness.data.cards import load_card
from harness.data.preprocess import minmax, resample
from harness.data.substructure import (
    CLASSES,
    SubstructureRenderer,
    point_mass_theta_e_unit,
    power_law_masses,
    vortex_half_length,
)
from harness.errors import BadInput
from harness.metrics import multiclass_report


def test_point_mass_einstein_radius_matches_lenstronomy_distances() -> None:
    """theta_E = sqrt(4GM/c^2 D_ls / (D_l D_s)), with lenstronomy's own distances as the independent check."""
    from astropy.cosmology import FlatLambdaCDM
    from lenstronomy.Cosmo.lens_cosmo import LensCosmo

    lc = LensCosmo(0.5, 1.0, cosmo=FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05))
    g_over_c2 = 4.785e-20      # G M_sun / c^2 in Mpc (1.4766 km)
    hand = math.sqrt(4 * g_over_c2 * 1e12 * lc.dds / (lc.dd * lc.ds)) * 180 / math.pi * 3600
    got = point_mass_theta_e_unit(0.5, 1.0) * math.sqrt(1e12)
    assert got == pytest.approx(hand, rel=1e-3)
    assert 1.5 < got < 1.8     # the 1e12 M_sun main halo: an Einstein ring well inside both stamps


def test_vortex_length_scales_inversely_with_axion_mass() -> None:
    assert vortex_half_length(-22.0) == pytest.approx(0.03)
    assert vortex_half_length(-23.0) == pytest.approx(0.3)
    assert vortex_half_length(-24.0) == pytest.approx(3.0)


def test_power_law_masses_follow_their_cdf() -> None:
    rng = np.random.default_rng(0)
    m = power_law_masses(rng, 40000, 1e6, 1e10, -1.9)
    assert m.min() >= 1e6 and m.max() <= 1e10
    a = -0.9
    cdf = lambda x: (x**a - 1e6**a) / (1e10**a - 1e6**a)
    for x in (1e7, 1e8, 1e9):
        assert np.mean(m < x) == pytest.approx(cdf(x), abs=0.01)
    flat = power_law_masses(rng, 40000, 1e6, 1e10, -1.0)   # log-uniform: a quarter per decade
    assert np.mean(flat < 1e7) == pytest.approx(0.25, abs=0.01)
    shallow = power_law_masses(rng, 40000, 1e6, 1e10, -0.9)   # the cards' slope: ~1/3 above 1e9
    assert np.mean(shallow > 1e9) == pytest.approx((1e10**0.1 - 1e9**0.1) / (1e10**0.1 - 1e6**0.1), abs=0.01)


def test_cards_load_as_substructure_and_bad_keys_are_named(tmp_path: Path) -> None:
    a, b = load_card("substructure-a"), load_card("substructure-b")
    assert (a.task, b.task) == ("substructure", "substructure")
    assert a.classes == list(CLASSES) == ["no", "sphere", "vort"]
    text = load_card("substructure-a").text
    bad = text.replace("class_fractions: [0.3333333333, 0.3333333334, ", "class_fractions: [0.9, 0.3334, ")
    assert bad != text
    p = tmp_path / "bad.yaml"
    p.write_text(bad)
    with pytest.raises(BadInput, match="population.class_fractions"):
        load_card(p)
    p.write_text(load_card("substructure-a").text.replace("noise: gaussian-poisson", "noise: hubble"))
    with pytest.raises(BadInput, match="instrument.noise"):
        load_card(p)
    p.write_text(load_card("substructure-a").text.replace("task: substructure", "task: weak-lensing"))
    with pytest.raises(BadInput, match="key 'task'"):
        load_card(p)


@pytest.mark.parametrize("card", ["substructure-a", "substructure-b", "substructure-c"])
def test_renderer_is_deterministic_and_draws_each_class(card: str) -> None:
    r = SubstructureRenderer(load_card(card).data)
    im, t = r.render(3, 7)
    im2, t2 = r.render(3, 7)
    assert im.shape == (1, r.npix, r.npix) and im.dtype == np.float32 and np.isfinite(im).all()
    assert np.array_equal(im, im2) and t == t2
    rows = [r.render(0, i)[1] for i in range(30)]
    by = {k: [x for x in rows if x["truth_class"] == k] for k in range(3)}
    assert all(by.values()), "every class drawn in 30 stamps"
    assert all(x["truth_n_sub"] == 0 for x in by[0])
    assert all(x["truth_n_sub"] == 100 and x["truth_sub_mass"] == pytest.approx(3e10) for x in by[2])
    assert all(-24 <= x["truth_log10_axion_ev"] <= -22 for x in by[2])


@pytest.mark.parametrize("card, scale, zero_point", [("substructure-b", 0.101, 25.72),   # Euclid VIS
                                                     ("substructure-c", 0.08, 25.96)])   # HST WFC3/F160W
def test_survey_cards_carry_lenstronomy_noise(card: str, scale: float, zero_point: float) -> None:
    """Each survey card gets its own camera (its zero point: 1 count/s), and with the source far too
    faint to see, a stamp is that camera's sky and read noise alone."""
    data = load_card(card).data
    faint = {**data, "population": {**data["population"],
                                    "source": {**data["population"]["source"], "magnitude": [40.0, 40.0]}}}
    r = SubstructureRenderer(faint)
    assert r.ps == scale and r.band.pixel_scale == scale
    assert r.band.magnitude2cps(zero_point) == pytest.approx(1.0)
    im = np.concatenate([r.render(0, i)[0].ravel() for i in range(4)])
    assert im.std() == pytest.approx(r.band.background_noise, rel=0.05)
    assert abs(im.mean()) < 3 * r.band.background_noise / math.sqrt(im.size)


def test_substructure_changes_the_image_where_the_masses_are() -> None:
    """Same seed and index, class forced: a vortex deflects light, so the stamp differs from no-sub."""
    data = load_card("substructure-a").data
    imgs = []
    for k in range(3):
        only = [float(k == j) for j in range(3)]
        d = {**data, "population": {**data["population"], "class_fractions": only}}
        imgs.append(SubstructureRenderer(d).render(0, 1)[0])
    assert not np.allclose(imgs[0], imgs[2])
    assert not np.allclose(imgs[0], imgs[1])


def test_resample_keeps_angular_size() -> None:
    """A Gaussian of sigma 0.3" on 0.05" pixels keeps sigma 0.3" on the 0.101" grid of 64 pixels."""
    c = (np.arange(150) - 74.5) * 0.05
    xx, yy = np.meshgrid(c, c)
    img = np.exp(-(xx**2 + yy**2) / (2 * 0.3**2)).astype(np.float32)[None, None]
    out = resample(img, 0.05, 6.464, 64)[0, 0]
    assert out.shape == (64, 64)
    g = (np.arange(64) - 31.5) * (6.464 / 64)
    gx, _ = np.meshgrid(g, g)
    sigma = math.sqrt((out * gx**2).sum() / out.sum())
    assert sigma == pytest.approx(0.3, rel=0.05)
    same = np.random.default_rng(0).normal(size=(2, 1, 64, 64)).astype(np.float32)
    assert np.array_equal(resample(same, 0.101, 6.464, 64), same)   # already on the grid: untouched


def test_minmax_scales_each_stamp_to_unit_range() -> None:
    x = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32) * [[[[1]]], [[[5]]], [[[0]]]]
    y = minmax(x)
    assert np.allclose(y[:2].min(axis=(1, 2, 3)), 0) and np.allclose(y[:2].max(axis=(1, 2, 3)), 1)
    assert np.all(y[2] == 0)   # a constant stamp


def test_multiclass_report_matches_sklearn() -> None:
    """Hand-made 3-class example: macro = sklearn's one-vs-rest macro; micro = sklearn's micro average."""
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 2])
    p = np.array([[.7, .2, .1], [.4, .4, .2], [.2, .5, .3], [.3, .3, .4], [.1, .2, .7],
                  [.2, .5, .3], [.5, .1, .4], [.1, .8, .1], [.3, .3, .4], [.2, .2, .6]])
    r = multiclass_report(y, p, list(CLASSES), seed=0, n_boot=200)
    assert r["auroc"][0] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    for k, c in enumerate(CLASSES):
        assert r[f"auroc_{c}"][0] == pytest.approx(roc_auc_score(y == k, p[:, k]))
        assert r[f"auroc_{c}"][1] <= r[f"auroc_{c}"][0] <= r[f"auroc_{c}"][2]
    onehot = np.eye(3)[y]
    assert r["auroc_micro_keras"][0] == pytest.approx(roc_auc_score(onehot, p, average="micro"))
    assert r["auroc"][1] < r["auroc"][0] < r["auroc"][2]
