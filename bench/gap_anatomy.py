"""Where does the easy -> hard gap come from? Hard-test AUROC per method, binned by simulation truth.

A single hard-test AUROC hides *which* images a method loses on. This script takes the finished
hard-test predictions of every method in a results store and re-scores them on subsets of the
test images, chosen by what the simulator knows about each image:

- theta_E / seeing: the Einstein radius over that stamp's r-band PSF FWHM (the mean over bands
  when there is no r). Arcs with theta_E below the seeing merge with the deflector's light.
- arc S/N: a matched-filter S/N of the lensed arc (see `arc_snr` for the proxy and what it leaves out).
- non-lens type: clean, blue companion, tidal/spiral, ring, neighbour-rich (see `negative_type`).

For the lens-property groupings, each bin's lenses are ranked against ALL hard-test non-lenses;
for the non-lens types, ALL hard-test lenses are ranked against each type. Each table also has the
overall AUROC ("all ..." row). A bin with fewer than MIN_N lenses or non-lenses gets nan (its n is
still shown). AUROCs are per run, then averaged over seeds. If even the oracle is near chance in a
bin, that part of the gap is information the images do not hold, which no adaptation can recover;
where the oracle is high and `source_only` is low, adaptation has something to act on.

Truth columns are used here only to *analyse* finished predictions; they are never model inputs.
Only `hard_test` predictions are read, and only from the latest 'ok' run per (method, seed) that
was evaluated on this very set: the run's config names the set's card fingerprint (meta.json) and
its hard-test images are the set's test split, so stores holding several cards or set sizes do not mix.

    python -m bench.gap_anatomy --store runs/harness.db --hard datasets/hard-...-n3000-s1 \
        [--out anatomy.csv] [--methods source_only,oracle,...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sqlite3
import sys
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from harness.data.cards import load_card
from harness.errors import BadInput

MIN_N = 10                                   # fewer lenses (or non-lenses) than this in a bin -> nan
RATIO_EDGES = (0.5, 1.0, 1.5, 2.0)           # theta_E / seeing
SNR_EDGES = (10.0, 30.0, 100.0, 300.0)       # arc S/N (log-spaced: detection limit ~5-10)
NEGATIVE_TYPES = ("clean", "blue companion", "tidal/spiral", "ring", "neighbour-rich")
ROLE_ORDER = {"baseline": 0, "control": 1, "method": 2, "oracle": 3}
GROUPINGS = {"theta_E/seeing": "theta_E / seeing (r-band PSF FWHM of the stamp): each bin's lenses "
                               "vs all non-lenses",
             "arc S/N": "arc S/N (matched-filter proxy, sky + read noise): each bin's lenses vs all "
                        "non-lenses",
             "non-lens type": "non-lens type: all lenses vs each type of non-lens"}
NEEDED = ("truth_is_lens", "truth_theta_E", "truth_n_lensed_pix", "truth_source_mag",
          "truth_magnification", "truth_hard_negative", "truth_n_neighbours")


@dataclass
class HardSet:
    """What the anatomy needs of a generated hard set: truth catalog, fingerprint, test split, card."""

    root: Path
    catalog: pd.DataFrame
    fingerprint: str
    test: np.ndarray
    card: dict


def load_hard_set(root: Path) -> HardSet:
    """Read catalog.csv, meta.json, splits/test.npy and card.yaml of a simulated set (no images)."""
    root = Path(root)
    for f in ("catalog.csv", "meta.json", "card.yaml", "splits/test.npy"):
        if not (root / f).is_file():
            raise BadInput(f"--hard {root}: {f} missing (pass a simulated hard set: a test split, "
                           "a truth catalog and its card)")
    try:
        cat = pd.read_csv(root / "catalog.csv")
        meta = json.loads((root / "meta.json").read_text())
        test = np.load(root / "splits" / "test.npy").astype(np.int64)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise BadInput(f"--hard {root}: unreadable ({e})") from None
    missing = [c for c in NEEDED if c not in cat.columns]
    if not any(c.startswith("truth_psf_fwhm_") for c in cat.columns):
        missing.append("truth_psf_fwhm_<band>")
    if missing:
        raise BadInput(f"--hard {root / 'catalog.csv'}: no truth column(s) {', '.join(missing)} "
                       "(the anatomy needs a simulated set)")
    if not isinstance(meta.get("fingerprint"), str):
        raise BadInput(f"--hard {root / 'meta.json'}: no card fingerprint")
    if test.size == 0 or test.min() < 0 or test.max() >= len(cat):
        raise BadInput(f"--hard {root / 'splits/test.npy'}: indices outside catalog.csv")
    card = load_card(root / "card.yaml").data
    return HardSet(root, cat, meta["fingerprint"], np.sort(test), card)


# ---- per-image truth annotations ------------------------------------------------------------

def seeing(cat: pd.DataFrame) -> pd.Series:
    """The stamp's PSF FWHM (arcsec): r band when simulated, else the mean over the bands."""
    if "truth_psf_fwhm_r" in cat.columns:
        return cat["truth_psf_fwhm_r"].astype(float)
    return cat.filter(like="truth_psf_fwhm_").astype(float).mean(axis=1)


def noise_electrons(card: dict) -> dict[str, tuple[float, float]]:
    """Per band: (electrons per output flux unit, sky + read-noise variance per pixel in e-^2).

    The same numbers the simulator draws its noise from (harness.data.scene.Renderer).
    """
    ins = card["instrument"]
    zp, ps = float(ins["zeropoint"]), float(ins["pixel_scale"])
    out = {}
    for b in ins["bands"]:
        s = ins["band"][b]
        e_per_flux = s["exptime"] * 10 ** (0.4 * (s["zeropoint_inst"] - zp))
        sky_e = 10 ** (-0.4 * (s["sky_mag"] - s["zeropoint_inst"])) * s["exptime"] * ps**2
        out[b] = (float(e_per_flux), float(sky_e + s["read_noise"] ** 2 * s["n_exposures"]))
    return out


def arc_snr(cat: pd.DataFrame, card: dict) -> pd.Series:
    """Matched-filter S/N of each lens's arcs, from the truth catalog and the card (nan for non-lenses).

    The catalog holds no per-image arc S/N, so this is a proxy built from what it does hold:
    - signal S_b (electrons) = source flux in band b (truth_source_mag, with the card's *mean* source
      colours: the per-image colour scatter is not recorded) x truth_magnification x e-/flux unit;
    - footprint N_eff (pixels) = max(truth_n_lensed_pix, the PSF's noise-equivalent area
      4 pi (FWHM_b / 2.355)^2 / pixel^2), i.e. the arc pixels above 1 sigma, at least one PSF;
    - S/N_b = S_b / sqrt(S_b + N_eff sigma_b^2) (the CCD equation: the matched filter of a flat
      template), sigma_b^2 = sky + read-noise variance per pixel from the card;
    - bands add in quadrature: S/N = sqrt(sum_b S/N_b^2).
    Left out: the deflector's own photon noise under the arcs (it matters only for arcs well inside
    the deflector's effective radius; their blending with the deflector is what theta_E / seeing
    measures) and the exact arc shape (a peaked arc has a higher matched-filter S/N than a flat one).
    """
    ins, src = card["instrument"], card["population"]["source"]
    ps, zp = float(ins["pixel_scale"]), float(ins["zeropoint"])
    colour = {"g": float(src["g_r"]), "r": 0.0, "i": -float(src["r_i"])}  # as scene.Renderer._flux
    mag = cat["truth_source_mag"].astype(float)
    mu = cat["truth_magnification"].astype(float)
    npix = cat["truth_n_lensed_pix"].astype(float)
    fwhm_all = seeing(cat)
    snr2 = pd.Series(0.0, index=cat.index)
    for b, (e_per_flux, var_e) in noise_electrons(card).items():
        signal = 10 ** (-0.4 * (mag + colour.get(b, 0.0) - zp)) * mu * e_per_flux
        col = f"truth_psf_fwhm_{b}"
        fwhm = cat[col].astype(float) if col in cat.columns else fwhm_all
        n_eff = np.maximum(npix, 4 * math.pi * (fwhm / 2.3548 / ps) ** 2)
        snr2 = snr2 + signal**2 / (signal + n_eff * var_e)
    out = np.sqrt(snr2)
    return out.where(cat["truth_is_lens"].astype(int) == 1)


def negative_type(cat: pd.DataFrame, card: dict) -> pd.Series:
    """Each non-lens's type ('' for lenses); a simulated hard negative wins over the neighbour count.

    clean: no hard negative and at most the card's mean number of neighbour galaxies per stamp;
    neighbour-rich: no hard negative and more neighbours than that mean (for a Poisson rate below 1,
    more than one). Stars are not counted.
    """
    rate = float(card["nuisances"]["neighbours"]["rate"])
    limit = max(rate, 1.0)
    hard = cat["truth_hard_negative"].fillna("").astype(str)
    kind = hard.map({"blue_companion": "blue companion", "tidal": "tidal/spiral", "spiral": "tidal/spiral",
                     "ring": "ring", "": ""})
    unknown = sorted(set(hard[kind.isna()]))
    if unknown:
        raise BadInput(f"catalog.csv: unknown truth_hard_negative value(s) {unknown}")
    plain = kind == ""
    rich = cat["truth_n_neighbours"].astype(float) > limit
    kind = kind.mask(plain & rich, "neighbour-rich").mask(plain & ~rich, "clean")
    return kind.where(cat["truth_is_lens"].astype(int) == 0, "")


def edge_bins(values: pd.Series, edges: Sequence[float], fmt: str = "{:g}") -> pd.Series:
    """Label each value with its bin: '< e0', '[e0, e1)', ..., '>= ek'; nan stays nan."""
    labels = [f"< {fmt.format(edges[0])}"]
    labels += [f"[{fmt.format(a)}, {fmt.format(b)})" for a, b in itertools.pairwise(edges)]
    labels.append(f">= {fmt.format(edges[-1])}")
    v = values.to_numpy(dtype=float)
    pos = np.searchsorted(np.asarray(edges, dtype=float), v, side="right")
    out = pd.Series(pd.Categorical.from_codes(np.where(np.isnan(v), -1, pos), categories=labels),
                    index=values.index)
    return out


def annotate(s: HardSet) -> pd.DataFrame:
    """One row per test image (indexed by image index): label, ratio bin, S/N bin, non-lens type."""
    cat = s.catalog.iloc[s.test]
    lens = cat["truth_is_lens"].astype(int) == 1
    ratio = (cat["truth_theta_E"].astype(float) / seeing(cat)).where(lens)
    out = pd.DataFrame({"id": cat["id"].astype(str), "label": lens.astype(int),
                        "theta_E/seeing": edge_bins(ratio, RATIO_EDGES),
                        "arc S/N": edge_bins(arc_snr(cat, s.card), SNR_EDGES),
                        "non-lens type": negative_type(cat, s.card)})
    return out.set_axis(s.test)  # catalog rows are images 0..N-1, so this is each image's index


# ---- runs ----------------------------------------------------------------------------------

def _hard_fingerprint(config: str) -> str | None:
    try:
        return json.loads(config).get("data", {}).get("hard_fingerprint")
    except (ValueError, AttributeError):
        return None


def _test_predictions(store_dir: Path, run_id: str, s: HardSet, ann: pd.DataFrame) -> pd.Series | str:
    """The run's hard-test scores indexed by image index, or why they do not belong to this set."""
    f = store_dir / run_id / "predictions.parquet"
    if not f.is_file():
        return "no predictions.parquet"
    p = pd.read_parquet(f, columns=["split", "index", "id", "label", "score"])
    p = p[p["split"] == "hard_test"]
    idx = p["index"].to_numpy(dtype=np.int64)
    if len(p) != len(s.test) or not np.array_equal(np.sort(idx), s.test):
        return f"its {len(p)} hard-test images are not this set's {len(s.test)} test images"
    p = p.set_index("index").loc[ann.index]
    if not (p["id"].astype(str).to_numpy() == ann["id"].to_numpy()).all():
        return "its hard-test image ids differ from catalog.csv"
    if not (p["label"].to_numpy() == ann["label"].to_numpy()).all():
        return "its hard-test labels differ from the catalog's truth_is_lens"
    return p["score"].astype(float)


def select_runs(store: Path, s: HardSet, ann: pd.DataFrame, methods: Sequence[str] | None = None
                ) -> tuple[pd.DataFrame, dict[tuple[str, int], pd.Series], list[str]]:
    """Latest 'ok' run per (method, seed) evaluated on this set: (runs, scores, notes on skipped runs)."""
    store = Path(store)
    if not store.is_file():
        raise BadInput(f"--store {store}: no such results store")
    try:
        with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as con:
            runs = pd.read_sql_query("SELECT * FROM runs WHERE status = 'ok' ORDER BY time DESC, id DESC",
                                     con)
    except (sqlite3.Error, pd.errors.DatabaseError) as e:
        raise BadInput(f"--store {store}: not a readable results store ({e})") from None
    if "role" not in runs.columns:
        runs["role"] = "method"
    runs = runs[[_hard_fingerprint(c) == s.fingerprint for c in runs["config"]]]
    if runs.empty:
        raise BadInput(f"--store {store}: no ok run used the hard set's card (fingerprint {s.fingerprint})")
    if methods:
        unknown = [m for m in methods if m not in set(runs["method"])]
        if unknown:
            raise BadInput(f"--methods: no ok run of {', '.join(unknown)} on this hard set "
                           f"(have: {', '.join(sorted(set(runs['method'])))})")
        runs = runs[runs["method"].isin(methods)]
    chosen, scores, notes = [], {}, []
    for r in runs.itertuples(index=False):                       # newest first
        key = (str(r.method), int(r.seed))
        if key in scores:
            continue
        got = _test_predictions(store.parent, str(r.id), s, ann)
        if isinstance(got, str):
            notes.append(f"skipped run {r.id} ({key[0]} seed {key[1]}): {got}")
            continue
        scores[key] = got
        chosen.append({"id": r.id, "method": key[0], "seed": key[1], "role": r.role})
    if not chosen:
        raise BadInput(f"--store {store}: no ok run was evaluated on the test images of {s.root}")
    sel = pd.DataFrame(chosen)
    have = set(sel["method"])
    order = [m for m in methods if m in have] if methods else sorted(have, key=lambda m: (
        ROLE_ORDER.get(sel.loc[sel["method"] == m, "role"].iloc[0], 2), m))
    sel["method"] = pd.Categorical(sel["method"], categories=order, ordered=True)
    return sel.sort_values(["method", "seed"]).reset_index(drop=True), scores, notes


# ---- the anatomy -----------------------------------------------------------------------------

def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    if pos.size < MIN_N or neg.size < MIN_N:
        return float("nan")
    return float(roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg]))


def _subsets(ann: pd.DataFrame) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(grouping, bin, lens mask, non-lens mask) over the test images, in table order."""
    lens, non = ann["label"].to_numpy() == 1, ann["label"].to_numpy() == 0
    out = []
    for g in ("theta_E/seeing", "arc S/N"):
        col = ann[g]
        for b in col.cat.categories:
            out.append((g, str(b), lens & (col == b).to_numpy(), non))
        out.append((g, "all lenses", lens, non))
    kind = ann["non-lens type"].to_numpy()
    for t in NEGATIVE_TYPES:
        out.append(("non-lens type", t, lens, non & (kind == t)))
    out.append(("non-lens type", "all non-lenses", lens, non))
    return out


def anatomy(store: Path, hard: Path, methods: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Tidy table: grouping, bin, lenses, non_lenses, method, seeds, auroc (mean), auroc_sd; and notes."""
    s = load_hard_set(hard)
    ann = annotate(s)
    sel, scores, notes = select_runs(store, s, ann, methods)
    rows = []
    for g, b, pos, neg in _subsets(ann):
        for m in sel["method"].cat.categories:
            seeds = sel.loc[sel["method"] == m, "seed"].tolist()
            per = np.array([_auroc(scores[(m, sd)].to_numpy()[pos], scores[(m, sd)].to_numpy()[neg])
                            for sd in seeds])
            rows.append({"grouping": g, "bin": b, "lenses": int(pos.sum()), "non_lenses": int(neg.sum()),
                         "method": m, "seeds": len(seeds), "auroc": float(per.mean()),
                         "auroc_sd": float(per.std(ddof=1)) if len(per) > 1 else float("nan")})
    return pd.DataFrame(rows), notes


def tables(long: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One wide table per grouping: bin rows, n columns, then one AUROC column per method."""
    out = {}
    for g, d in long.groupby("grouping", sort=False):
        wide = d.pivot(index="bin", columns="method", values="auroc")
        n = d.drop_duplicates("bin").set_index("bin")[["lenses", "non_lenses"]]
        bins = list(dict.fromkeys(d["bin"]))
        methods = list(dict.fromkeys(d["method"]))
        out[g] = pd.concat([n, wide[methods]], axis=1).loc[bins].rename_axis(None, axis=1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True, help="results store (.db)")
    ap.add_argument("--hard", type=Path, required=True, help="the hard image-set folder the runs used")
    ap.add_argument("--out", type=Path, help="write the tidy table (every grouping, bin, method) as CSV")
    ap.add_argument("--methods", help="comma-separated methods to show, in this order (default: all)")
    a = ap.parse_args(argv)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    try:
        if a.out is not None and not a.out.parent.is_dir():
            raise BadInput(f"--out {a.out}: folder {a.out.parent} does not exist")
        long, notes = anatomy(a.store, a.hard, methods)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    seeds = long.drop_duplicates("method").set_index("method")["seeds"]
    print(f"hard-test AUROC, mean over seeds ({', '.join(f'{m}: {n}' for m, n in seeds.items())}); "
          f"nan where a bin has < {MIN_N} lenses or non-lenses")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200,
                           "display.max_columns", None):
        for g, t in tables(long).items():
            print(f"\n{GROUPINGS[g]}\n{t.to_string()}")
    if a.out is not None:
        long.to_csv(a.out, index=False)
        print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
