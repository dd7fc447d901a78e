"""`bench.gap_anatomy`: truth bins of the hard-test images, run selection, and per-bin AUROC by hand."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import gap_anatomy as ga
from harness.data.cards import CARDS_DIR, load_card
from harness.store import Metric, RunRecord, Store

FP = "f00dcafe12345678"
FWHM_R = 0.8
# test lenses: (theta_E / r-band seeing, how many)
RATIOS = [(0.4, 5), (0.75, 20), (1.25, 25), (1.75, 10)]
# test non-lenses: (truth_hard_negative, neighbours, how many)
NEGATIVES = [("", 0, 22), ("", 1, 18), ("blue_companion", 3, 12), ("blue_companion", 0, 18),
             ("tidal", 0, 20), ("spiral", 1, 10), ("ring", 0, 5), ("", 2, 20), ("", 4, 15)]
N_EXTRA = 100  # images outside the test split: they must never count


def _image(lens: bool, theta: float = 0.0, mag: float = np.nan, mu: float = np.nan, kind: object = np.nan,
           neighbours: int = 0) -> dict:
    """One catalog row of simulation truth."""
    return {"truth_is_lens": int(lens), "truth_theta_E": theta, "truth_n_lensed_pix": 150 if lens else 0,
            "truth_source_mag": mag, "truth_magnification": mu, "truth_hard_negative": kind,
            "truth_n_neighbours": neighbours}


def _catalog() -> tuple[pd.DataFrame, np.ndarray]:
    """A catalog whose test images are shuffled among non-test ones; returns it and the test indices."""
    rows = []
    for k, (ratio, n) in enumerate(RATIOS):
        # bright arcs (S/N > 300) in the first two ratio bins, faint ones (S/N < 10) in the others
        mag, mu = (22.5, 8.0) if k < 2 else (27.5, 1.5)
        rows += [_image(True, ratio * FWHM_R, mag, mu, neighbours=1)] * n
    for kind, nb, n in NEGATIVES:
        rows += [_image(False, kind=kind or np.nan, neighbours=nb)] * n
    # outside the test split: lenses and rings, which would change the counts
    rows += [_image(True, 3.0 * FWHM_R, 23.0, 5.0)] * (N_EXTRA // 2)
    rows += [_image(False, kind="ring")] * (N_EXTRA // 2)
    cat = pd.DataFrame(rows)
    n_test = len(cat) - N_EXTRA
    perm = np.random.default_rng(3).permutation(len(cat))   # catalog row i holds design row perm[i]
    cat = cat.iloc[perm].reset_index(drop=True)
    cat.insert(0, "id", [f"hard-1-{i:06d}" for i in range(len(cat))])
    # g and i seeing differ from r: binning by anything but the r band moves lenses across bins
    cat["truth_psf_fwhm_g"], cat["truth_psf_fwhm_r"], cat["truth_psf_fwhm_i"] = 0.4, FWHM_R, 0.5
    test = np.flatnonzero(perm < n_test)
    return cat, test


def _hard_set(root: Path) -> tuple[Path, pd.DataFrame, np.ndarray]:
    cat, test = _catalog()
    (root / "splits").mkdir(parents=True)
    cat.to_csv(root / "catalog.csv", index=False)
    np.save(root / "splits" / "test.npy", test.astype(np.int64))
    (root / "meta.json").write_text(json.dumps({"fingerprint": FP, "n": len(cat), "seed": 1}))
    shutil.copy(CARDS_DIR / "hard.yaml", root / "card.yaml")
    return root, cat, test


def _scores(cat: pd.DataFrame, test: np.ndarray, seed: int) -> np.ndarray:
    """Scores for the test images whose separation depends on the lens bin and the non-lens type."""
    rng = np.random.default_rng(seed)
    t = cat.iloc[test]
    shift = np.where(t.truth_is_lens == 1, t.truth_theta_E / FWHM_R, 0.0)
    shift = shift + np.where(t.truth_hard_negative.fillna("") == "blue_companion", 0.8, 0.0)
    return (rng.normal(size=len(test)) + shift).astype(np.float32)


def _record(store: Store, cat: pd.DataFrame, idx: np.ndarray, scores: np.ndarray, method: str, seed: int,
            when: str, fp: str = FP, status: str = "ok", role: str = "method") -> str:
    run = RunRecord(task="lens-finding", method=method, seed=seed, preset="smoke", fingerprint="x",
                    config={"data": {"hard_fingerprint": fp}}, code_version="v", device="cpu",
                    run_key=f"{method}-{seed}-{when}", role=role, status=status, time=when)
    rid = store.record(run, [Metric("hard_test", "auroc", 0.5)])
    labels = cat.truth_is_lens.to_numpy()
    hard = pd.DataFrame({"split": "hard_test", "index": idx, "id": cat.id.to_numpy()[idx],
                         "label": labels[idx], "score": scores.astype(np.float32)})
    # easy-validation rows reuse test indices, as lenses scored 0: they must never count
    easy = pd.DataFrame({"split": "easy_val", "index": idx[:30], "id": "easy", "label": 1,
                         "score": np.zeros(30, np.float32)})
    d = store.run_dir(rid)
    d.mkdir()
    pd.concat([hard, easy]).to_parquet(d / "predictions.parquet")
    return rid


@pytest.fixture
def world(tmp_path: Path) -> dict:
    root, cat, test = _hard_set(tmp_path / "hard-set")
    (tmp_path / "runs").mkdir()
    store = Store(tmp_path / "runs" / "s.db")
    good = {("source_only", 0): _scores(cat, test, 10), ("source_only", 1): _scores(cat, test, 11),
            ("oracle", 0): _scores(cat, test, 12)}
    rev = test[::-1].copy()                             # rows in another order: matched by index
    _record(store, cat, rev, good[("source_only", 0)][::-1], "source_only", 0, "2026-01-02T00:00:00",
            role="baseline")
    _record(store, cat, test, good[("source_only", 1)], "source_only", 1, "2026-01-02T00:00:00",
            role="baseline")
    _record(store, cat, test, good[("oracle", 0)], "oracle", 0, "2026-01-02T00:00:00", role="oracle")
    bad = -good[("source_only", 0)]
    _record(store, cat, test, bad, "source_only", 0, "2026-01-01T00:00:00")               # older
    _record(store, cat, test, bad, "source_only", 0, "2026-01-03T00:00:00", fp="other")  # other card
    _record(store, cat, test, bad, "source_only", 1, "2026-01-03T00:00:00", status="failed")
    _record(store, cat, test[:100], bad[:100], "oracle", 1, "2026-01-03T00:00:00")        # other set
    return {"store": store.path, "hard": root, "cat": cat, "test": test, "scores": good}


def _mann_whitney(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC by counting pairs: P(lens score > non-lens score) + half the ties."""
    d = pos.astype(float)[:, None] - neg.astype(float)[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def _row(long: pd.DataFrame, grouping: str, b: str, method: str) -> pd.Series:
    r = long[(long.grouping == grouping) & (long.bin == b) & (long.method == method)]
    assert len(r) == 1, (grouping, b, method)
    return r.iloc[0]


def test_bins_count_test_images_by_r_band_ratio_snr_and_type(world: dict) -> None:
    long, notes = ga.anatomy(world["store"], world["hard"])
    t = ga.tables(long)
    ratio = t["theta_E/seeing"]
    assert ratio["lenses"].to_dict() == {"< 0.5": 5, "[0.5, 1)": 20, "[1, 1.5)": 25, "[1.5, 2)": 10,
                                         ">= 2": 0, "all lenses": 60}
    assert set(ratio["non_lenses"]) == {140}
    assert t["arc S/N"]["lenses"].to_dict() == {"< 10": 35, "[10, 30)": 0, "[30, 100)": 0, "[100, 300)": 0,
                                                ">= 300": 25, "all lenses": 60}
    types = t["non-lens type"]
    assert types["non_lenses"].to_dict() == {"clean": 40, "blue companion": 30, "tidal/spiral": 30, "ring": 5,
                                             "neighbour-rich": 35, "all non-lenses": 140}
    assert set(types["lenses"]) == {60}
    assert list(ratio.columns) == ["lenses", "non_lenses", "source_only", "oracle"]
    # too few lenses / non-lenses: nan, with the n still shown
    assert ratio[["source_only", "oracle"]].loc[["< 0.5", ">= 2"]].isna().all().all()
    assert types[["source_only", "oracle"]].loc["ring"].isna().all()
    assert not ratio[["source_only", "oracle"]].loc[["[0.5, 1)", "[1, 1.5)", "[1.5, 2)"]].isna().any().any()
    assert len(notes) == 1 and "oracle seed 1" in notes[0] and "not this set's" in notes[0]


def test_auroc_per_bin_matches_a_pair_count_over_the_selected_runs(world: dict) -> None:
    long, _ = ga.anatomy(world["store"], world["hard"])
    cat, test, sc = world["cat"], world["test"], world["scores"]
    t = cat.iloc[test]
    lens = (t.truth_is_lens == 1).to_numpy()
    in_bin = lens & np.isclose(t.truth_theta_E.to_numpy() / FWHM_R, 1.25)
    blue = (t.truth_hard_negative == "blue_companion").to_numpy()
    want_bin = np.mean([_mann_whitney(sc[("source_only", s)][in_bin], sc[("source_only", s)][~lens])
                        for s in (0, 1)])
    want_blue = np.mean([_mann_whitney(sc[("source_only", s)][lens], sc[("source_only", s)][blue])
                         for s in (0, 1)])
    r = _row(long, "theta_E/seeing", "[1, 1.5)", "source_only")
    assert r.seeds == 2 and r.lenses == 25 and r.non_lenses == 140
    assert r.auroc == pytest.approx(want_bin, abs=1e-12)
    assert _row(long, "non-lens type", "blue companion", "source_only").auroc == pytest.approx(want_blue,
                                                                                                 abs=1e-12)
    o = _row(long, "non-lens type", "all non-lenses", "oracle")
    assert o.seeds == 1 and math.isnan(o.auroc_sd)
    want_all = _mann_whitney(sc[("oracle", 0)][lens], sc[("oracle", 0)][~lens])
    assert o.auroc == pytest.approx(want_all, abs=1e-12)


def test_arc_snr_is_the_ccd_equation_with_the_simulators_noise() -> None:
    from harness.data.scene import Renderer

    card = load_card("hard").data
    noise = ga.noise_electrons(card)
    sigma = np.array([math.sqrt(v) / e for e, v in noise.values()])
    np.testing.assert_allclose(sigma, Renderer(card).sigma_flux, rtol=1e-12)
    cat = pd.DataFrame({"truth_is_lens": [1, 0], "truth_source_mag": [24.0, np.nan],
                        "truth_magnification": [5.0, np.nan], "truth_n_lensed_pix": [200, 0],
                        "truth_psf_fwhm_g": [0.8, 0.8], "truth_psf_fwhm_r": [0.7, 0.7],
                        "truth_psf_fwhm_i": [0.6, 0.6]})
    src, zp = card["population"]["source"], card["instrument"]["zeropoint"]
    want = 0.0
    for b, mag in (("g", 24.0 + src["g_r"]), ("r", 24.0), ("i", 24.0 - src["r_i"])):
        e, var = noise[b]
        s = 10 ** (-0.4 * (mag - zp)) * 5.0 * e
        want += s**2 / (s + 200 * var)   # 200 px exceed the PSF's noise area (< 100 px at 0.8")
    got = ga.arc_snr(cat, card)
    assert got[0] == pytest.approx(math.sqrt(want), rel=1e-12) and math.isnan(got[1])


def test_cli_prints_tables_writes_csv_and_refuses_bad_input(world: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "anatomy.csv"
    args = ["--store", str(world["store"]), "--hard", str(world["hard"])]
    assert ga.main([*args, "--out", str(out), "--methods", "oracle,source_only"]) == 0
    printed = capsys.readouterr().out
    assert "non-lens type" in printed and "neighbour-rich" in printed and "[1, 1.5)" in printed
    csv = pd.read_csv(out)
    assert list(dict.fromkeys(csv.method)) == ["oracle", "source_only"]
    assert len(csv) == 2 * (6 + 6 + 6)
    assert ga.main([*args, "--methods", "nope"]) == 2
    assert ga.main(["--store", str(tmp_path / "none.db"), "--hard", str(world["hard"])]) == 2
    (world["hard"] / "meta.json").write_text(json.dumps({"fingerprint": "unused"}))
    assert ga.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "nope" in err and "fingerprint unused" in err
